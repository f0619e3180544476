"""The Bazel BUILD file names every source under custom_ops/."""

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _named_in_build():
  text = (ROOT / "BUILD").read_text()
  return set(re.findall(r'"(custom_ops/[^"]+)"', text))


def test_every_custom_op_source_is_in_build():
  sources = {
      str(p.relative_to(ROOT)) for p in (ROOT / "custom_ops").rglob("*")
      if p.is_file() and "build" not in p.relative_to(ROOT / "custom_ops").parts
      and "__pycache__" not in p.parts
  }
  assert sources, "no sources found under custom_ops/"
  missing = sorted(sources - _named_in_build())
  assert not missing, f"files under custom_ops/ not named in BUILD: {missing}"


def test_build_names_only_existing_files():
  stale = sorted(p for p in _named_in_build() if not (ROOT / p).exists()
                 and not p.endswith("libtfdet_kernels.so"))
  assert not stale, f"BUILD names files that do not exist: {stale}"


def test_build_pins_the_tf_version_of_requirements():
  build = (ROOT / "BUILD").read_text()
  reqs = (ROOT / "requirements.txt").read_text()
  version = re.search(r"^tensorflow==([\d.]+)$", reqs, re.M).group(1)
  assert f'TFDET_TF_VERSION=\\\\\\"{version}\\\\\\"' in build
