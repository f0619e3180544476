"""The lazy op-library loader: loads, and explains missing or stale builds."""

import pytest
import tensorflow as tf

from tfdet.ops import custom_ops


def test_library_loads_and_reports_its_build():
  path = custom_ops.library_path()
  assert path is not None, "build the ops first: pip install -e ."
  version, with_cuda = custom_ops.read_build_tag(path)
  assert version == tf.__version__
  info = custom_ops.load().tfdet_build_info()
  assert info.tf_version.numpy().decode() == tf.__version__
  assert bool(info.with_cuda.numpy()) == with_cuda == custom_ops.built_with_cuda()


def test_missing_library_says_how_to_rebuild(monkeypatch):
  monkeypatch.setattr(custom_ops, "_module", None)
  monkeypatch.setattr(custom_ops, "library_path", lambda: None)
  with pytest.raises(custom_ops.CustomOpsError, match="was not found.*pip install -e"):
    custom_ops.load()
  assert not custom_ops.is_available()


def test_library_for_another_tf_version_is_refused(monkeypatch, tmp_path):
  stale = tmp_path / "_tfdet_ops.so"
  data = open(custom_ops.library_path(), "rb").read()
  data = data.replace(f"tf={tf.__version__};".encode(), b"tf=2.0.0;")
  stale.write_bytes(data)
  monkeypatch.setattr(custom_ops, "_module", None)
  monkeypatch.setattr(custom_ops, "library_path", lambda: str(stale))
  with pytest.raises(custom_ops.CustomOpsError,
                     match=r"built for TensorFlow 2\.0\.0.*installed.*Rebuild"):
    custom_ops.load()


def test_untagged_file_is_refused(monkeypatch, tmp_path):
  other = tmp_path / "_tfdet_ops.so"
  other.write_bytes(b"\x7fELF" + bytes(range(256)) * 4)
  monkeypatch.setattr(custom_ops, "_module", None)
  monkeypatch.setattr(custom_ops, "library_path", lambda: str(other))
  with pytest.raises(custom_ops.CustomOpsError, match="no tfdet build tag"):
    custom_ops.load()


def test_check_implementation():
  assert custom_ops.check_implementation("reference") == "reference"
  with pytest.raises(ValueError, match="implementation must be one of"):
    custom_ops.check_implementation("cuda")
