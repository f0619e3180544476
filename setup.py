"""Builds tfdet and its custom-op library.

The custom ops (``custom_ops/``) are compiled into one shared library,
``tfdet/ops/_tfdet_ops*.so``, against the TensorFlow that is importable at
build time (it must be the pinned version; see README "Dependencies").

* C++ sources (``custom_ops/**/*.cc`` except ``*.cu.cc`` and the standalone
  harness) are always compiled, with the flags ``tf.sysconfig`` reports.
* CUDA sources (``custom_ops/**/*.cu.cc``) are compiled with ``nvcc`` when it
  is found, and linked into the same library; the op registrations then also
  register GPU kernels (``-DGOOGLE_CUDA=1``).

Environment variables:

* ``TFDET_BUILD_CUDA``: ``1`` forces the CUDA kernels (fails without nvcc),
  ``0`` turns them off, unset means "if nvcc is found".
* ``TFDET_CUDA_ARCHS``: semicolon list of SM versions, e.g. ``80;90``.
  Default: ``75;80;86;89;90`` plus PTX of the last one.
* ``TFDET_NVCC``: path of nvcc (default: ``$CUDA_HOME/bin/nvcc`` or PATH).
* ``TFDET_BUILD_JOBS``: parallel compile jobs (default: number of CPUs).

A compiler error stops the install with the compiler's message.

The gin configs ship inside the package: ``gin_configs/`` (which stays at the
top of the source tree, where the docs and configs refer to it) is mapped to
the package ``tfdet.gin_configs`` (one package per folder, ``*.gin`` as
package data), so a wheel installs them as ``tfdet/gin_configs/**.gin``;
`tfdet.gin_files` finds them there or, in a source checkout, at the top of
the tree. ``MANIFEST.in`` puts them and the op sources into the sdist.
"""

import concurrent.futures
import os
import pathlib
import shutil
import subprocess
import sys

import setuptools
from setuptools.command.build_ext import build_ext

ROOT = pathlib.Path(__file__).resolve().parent
OPS_DIR = ROOT / "custom_ops"
GIN_DIR = "gin_configs"
GIN_PACKAGE = "tfdet.gin_configs"
DEFAULT_ARCHS = "75;80;86;89;90"


def package_config(root=ROOT):
  """The packages, package_dir and package_data given to setuptools.setup.

  The Python packages are tfdet and data_prep with their subpackages. Every
  folder of ``gin_configs/`` that holds ``.gin`` files becomes a package
  under ``tfdet.gin_configs`` whose data are its ``.gin`` files (listing
  each folder as a package, rather than ``**/*.gin`` on the top one, keeps
  setuptools from warning about data folders that look like packages).

  Returns:
    dict with "packages", "package_dir" and "package_data".
  """
  root = pathlib.Path(root)
  packages = setuptools.find_namespace_packages(
      where=str(root), include=["tfdet", "tfdet.*", "data_prep", "data_prep.*"])
  package_data = {}
  for folder in sorted({p.parent for p in (root / GIN_DIR).rglob("*.gin")}):
    rel = folder.relative_to(root / GIN_DIR).parts
    package_data[".".join((GIN_PACKAGE, *rel))] = ["*.gin"]
  if GIN_PACKAGE not in package_data:
    package_data[GIN_PACKAGE] = []
  packages += [p for p in sorted(package_data) if p not in packages]
  return {"packages": packages, "package_dir": {GIN_PACKAGE: GIN_DIR},
          "package_data": package_data}


def _sources():
  cc, cu = [], []
  for path in sorted(OPS_DIR.rglob("*.cc")):
    rel = path.relative_to(ROOT)
    if "harness" in rel.parts:
      continue
    (cu if path.name.endswith(".cu.cc") else cc).append(rel)
  return cc, cu


def _find_nvcc():
  explicit = os.environ.get("TFDET_NVCC")
  if explicit:
    return explicit
  cuda_home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
  if cuda_home and (pathlib.Path(cuda_home) / "bin" / "nvcc").exists():
    return str(pathlib.Path(cuda_home) / "bin" / "nvcc")
  return shutil.which("nvcc")


def _cuda_home(nvcc):
  """The toolkit folder holding lib64/libcudart_static.a for this nvcc.

  nvcc on PATH may be a wrapper script (e.g. /usr/local/bin/nvcc), so the
  candidates are $CUDA_HOME / $CUDA_PATH, nvcc's resolved grandparent, and
  /usr/local/cuda.
  """
  candidates = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"),
                str(pathlib.Path(nvcc).resolve().parent.parent), "/usr/local/cuda"]
  for home in candidates:
    if home and (pathlib.Path(home) / "lib64" / "libcudart_static.a").exists():
      return pathlib.Path(home)
  raise RuntimeError(
      f"found nvcc at {nvcc} but no CUDA toolkit with lib64/libcudart_static.a in "
      f"{[c for c in candidates if c]}; set CUDA_HOME, or TFDET_BUILD_CUDA=0.")


def _want_cuda():
  flag = os.environ.get("TFDET_BUILD_CUDA", "").strip()
  nvcc = _find_nvcc()
  if flag == "0":
    return None
  if flag == "1" and not nvcc:
    raise RuntimeError(
        "TFDET_BUILD_CUDA=1 but nvcc was not found (set TFDET_NVCC or "
        "CUDA_HOME, or TFDET_BUILD_CUDA=0 to build the CPU kernels only).")
  return nvcc


def _run(cmd, what):
  proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
  if proc.returncode != 0:
    raise RuntimeError(
        f"tfdet custom ops: compiling {what} failed (exit {proc.returncode}).\n"
        f"command: {' '.join(map(str, cmd))}\n{proc.stdout}{proc.stderr}")


class TfOpsExtension(setuptools.Extension):
  """Marks the op library; built by BuildTfOps, not by distutils."""

  def __init__(self, name):
    super().__init__(name, sources=[])


class BuildTfOps(build_ext):
  """Compiles custom_ops/ into one TensorFlow op library."""

  def build_extension(self, ext):
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    out = pathlib.Path(self.get_ext_fullpath(ext.name)).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    obj_dir = pathlib.Path(self.build_temp).resolve() / "tfdet_ops"
    obj_dir.mkdir(parents=True, exist_ok=True)

    cc_srcs, cu_srcs = _sources()
    nvcc = _want_cuda() if cu_srcs else None
    tf_cflags = tf.sysconfig.get_compile_flags()
    tf_lflags = tf.sysconfig.get_link_flags()
    tf_version = tf.__version__
    defines = [f'-DTFDET_TF_VERSION="{tf_version}"',
               f"-DTFDET_WITH_CUDA={1 if nvcc else 0}"]
    cxx = os.environ.get("CXX", "g++")
    cxx_flags = ["-std=c++17", "-O3", "-fPIC", "-Wall", "-Wno-sign-compare",
                 "-D_GLIBCXX_USE_CXX11_ABI=1", "-I", str(OPS_DIR)]
    cxx_flags += [f for f in tf_cflags if not f.startswith("--std")]
    if nvcc:
      # TF's headers ship the CUDA headers of the CUDA TF was built with;
      # the op wrappers only need cuda_runtime types from them.
      tf_inc = tf.sysconfig.get_include()
      cxx_flags += ["-DGOOGLE_CUDA=1", "-DEIGEN_USE_GPU",
                    "-I", f"{tf_inc}/third_party/gpus/cuda/include"]

    jobs = []
    for src in cc_srcs:
      obj = obj_dir / (str(src).replace("/", "__") + ".o")
      jobs.append(([cxx, *cxx_flags, *defines, "-c", str(src), "-o",
                    str(obj)], str(src), obj))
    if nvcc:
      archs = os.environ.get("TFDET_CUDA_ARCHS", DEFAULT_ARCHS)
      archs = [a.strip() for a in archs.split(";") if a.strip()]
      gencode = []
      for a in archs:
        gencode += ["-gencode", f"arch=compute_{a},code=sm_{a}"]
      gencode += ["-gencode", f"arch=compute_{archs[-1]},code=compute_{archs[-1]}"]
      # The CUDA kernels are plain launchers (device pointers + stream) and
      # include no TensorFlow header, so they build with the toolkit's own
      # CUDA runtime and CUB, whatever CUDA TF itself was built with.
      nv_flags = ["-std=c++17", "-O3", "-Xcompiler", "-fPIC",
                  "-D_GLIBCXX_USE_CXX11_ABI=1", "-I", str(OPS_DIR),
                  "--expt-relaxed-constexpr", "-x", "cu", *gencode]
      for src in cu_srcs:
        obj = obj_dir / (str(src).replace("/", "__") + ".o")
        jobs.append(([nvcc, *nv_flags, *defines, "-c", str(src), "-o",
                      str(obj)], str(src), obj))

    n_jobs = int(os.environ.get("TFDET_BUILD_JOBS", os.cpu_count() or 1))
    with concurrent.futures.ThreadPoolExecutor(max(1, n_jobs)) as pool:
      futures = [pool.submit(_run, cmd, what) for cmd, what, _ in jobs]
      for fut in futures:
        fut.result()  # re-raises the first compiler error

    link = [cxx, "-shared", "-o", str(out), *[str(o) for _, _, o in jobs],
            *tf_lflags, "-Wl,-rpath,$ORIGIN"]
    if nvcc:
      link += [f"-L{_cuda_home(nvcc) / 'lib64'}", "-lcudart_static", "-ldl", "-lrt",
               "-lpthread"]
    _run(link, str(out.name))
    print(f"tfdet: built {out.name} for TensorFlow {tf_version} "
          f"({'CPU+CUDA' if nvcc else 'CPU only'})", file=sys.stderr)


if __name__ == "__main__":
  setuptools.setup(
      ext_modules=[TfOpsExtension("tfdet.ops._tfdet_ops")],
      cmdclass={"build_ext": BuildTfOps},
      **package_config(),
  )
