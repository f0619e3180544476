"""The gin configs ship in the package: setup.py's package layout, build_py's output, the sdist
manifest, and `gin_files` finding the configs in an installed layout.

Nothing here compiles the op library: `setup.py build_py` copies the Python
files and package data only (what a wheel holds besides the .so), and
`egg_info` writes the sdist's file list (SOURCES.txt) without archiving.
"""

import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import pytest

from tfdet import gin_files

REPO = pathlib.Path(__file__).resolve().parent.parent
GIN_FILES = sorted(p.relative_to(REPO / "gin_configs").as_posix()
                   for p in (REPO / "gin_configs").rglob("*.gin"))


def _setup_module():
  spec = importlib.util.spec_from_file_location("tfdet_setup", REPO / "setup.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)  # setuptools.setup() runs only under __main__
  return module


def test_package_config_maps_every_gin_file_and_keeps_the_python_packages():
  config = _setup_module().package_config(REPO)
  assert config["package_dir"] == {"tfdet.gin_configs": "gin_configs"}
  packages = set(config["packages"])
  for rel in GIN_FILES:
    folder, name = os.path.split(rel)
    package = ".".join(["tfdet.gin_configs", *filter(None, folder.split("/"))])
    assert package in packages, rel
    assert any(pathlib.PurePath(name).match(p) for p in config["package_data"][package]), rel
  python_packages = {".".join(p.relative_to(REPO).parts)
                     for top in ("tfdet", "data_prep")
                     for p in [REPO / top, *(REPO / top).rglob("*")]
                     if (p / "__init__.py").exists()}
  assert python_packages and python_packages <= packages


@pytest.fixture(scope="module")
def built(tmp_path_factory):
  """`setup.py egg_info build_py` into a temporary folder (nothing written in the tree)."""
  tmp = tmp_path_factory.mktemp("build_py")
  proc = subprocess.run(
      [sys.executable, "setup.py", "-q", "egg_info", "--egg-base", str(tmp), "build_py",
       "--build-lib", str(tmp / "lib")],
      cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return tmp


def test_build_py_ships_the_gin_configs(built):
  shipped = sorted(p.relative_to(built / "lib" / "tfdet" / "gin_configs").as_posix()
                   for p in (built / "lib" / "tfdet" / "gin_configs").rglob("*.gin"))
  assert shipped == GIN_FILES and len(shipped) >= 10
  assert (built / "lib" / "tfdet" / "gin_files.py").exists()


def test_sdist_manifest_has_the_configs_and_op_sources(built):
  sources = set((built / "tfdet.egg-info" / "SOURCES.txt").read_text().split())
  cc, cu = _setup_module()._sources()
  assert {str(p) for p in cc + cu} <= sources  # what build_ext compiles
  assert {f"gin_configs/{rel}" for rel in GIN_FILES} <= sources


def test_gin_files_finds_the_installed_configs(built):
  # The built tree as an installed package: it comes first on the path, before the
  # editable install's finder, and has no gin_configs/ beside it.
  code = ("from tfdet import gin_files; import json; "
          "print(json.dumps([str(gin_files.CONFIG_DIR), gin_files.shipped_gin_files()]))")
  env = dict(os.environ, PYTHONPATH=str(built / "lib"))
  proc = subprocess.run([sys.executable, "-c", code], cwd=str(built), env=env,
                        capture_output=True, text=True, timeout=120, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  config_dir, files = json.loads(proc.stdout.strip().splitlines()[-1])
  assert pathlib.Path(config_dir) == built / "lib" / "tfdet" / "gin_configs"
  assert len(files) == len(GIN_FILES)
  assert all(f.startswith(config_dir) for f in files)


def test_source_checkout_uses_the_tree_configs():
  # This checkout imports tfdet from the tree (editable install), where tfdet/gin_configs
  # does not exist: the configs are the top-level gin_configs/.
  assert not (REPO / "tfdet" / "gin_configs").exists()
  assert gin_files.find_config_dir() == REPO / "gin_configs" == gin_files.CONFIG_DIR
  assert len(gin_files.shipped_gin_files()) == len(GIN_FILES)
