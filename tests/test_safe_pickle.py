"""safe_pickle: Detectron-style data pickles load; pickles that would run code are refused."""

import collections
import os
import pickle
import struct
import sys

import numpy as np
import pytest

from tfdet import safe_pickle


def _detectron_proposals():
  rng = np.random.default_rng(0)
  boxes = [np.float32(rng.uniform(0, 20, (n, 4))) for n in (4, 0, 3)]
  return {"boxes": boxes, "scores": [np.float32(rng.uniform(0, 1, len(b))) for b in boxes],
          "ids": [397133, 37777, 252219], "cfg": "MODEL:\n  TYPE: generalized_rcnn\n"}


def _assert_same(a, b):
  assert type(a) is type(b), (type(a), type(b))
  if isinstance(a, dict):
    assert list(a) == list(b)
    for k in a:
      _assert_same(a[k], b[k])
  elif isinstance(a, (list, tuple)):
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
      _assert_same(x, y)
  elif isinstance(a, np.ndarray):
    assert a.dtype == b.dtype and a.shape == b.shape
    np.testing.assert_array_equal(a, b)
  else:
    assert a == b


@pytest.mark.parametrize("protocol", [0, 1, 2, 3, 4, 5])
def test_data_pickles_round_trip_in_every_protocol(protocol):
  data = _detectron_proposals()
  data["blobs"] = collections.OrderedDict(
      conv1_w=np.arange(24, dtype=np.float32).reshape(2, 3, 2, 2),
      fc_b=np.zeros(3, np.float64), step=np.int64(7), lr=np.float32(0.02),
      fortran=np.asfortranarray(np.arange(6, dtype=np.int32).reshape(2, 3)),
      names=np.array(["a", "bc"]), flags=np.array([True, False]))
  data["misc"] = (1, 2.5, None, True, b"raw", -(2**70))
  _assert_same(safe_pickle.loads(pickle.dumps(data, protocol=protocol)), data)


def _binstring(s):
  """Python 2's str opcode: SHORT_BINSTRING / BINSTRING."""
  if len(s) < 256:
    return b"U" + bytes([len(s)]) + s
  return b"T" + struct.pack("<i", len(s)) + s


def _py2_ndarray(values):
  """The bytes Python 2's cPickle (protocol 2) writes for a little-endian float32 ndarray."""
  a = np.asarray(values, "<f4")
  return (b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85" + _binstring(b"b")
          + b"\x87R(K\x01" + b"K" + bytes([a.size]) + b"\x85"
          + b"cnumpy\ndtype\n" + _binstring(b"f4") + b"K\x00K\x01\x87R"
          + b"(K\x03" + _binstring(b"<") + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"
          + b"\x89" + _binstring(a.tobytes()) + b"tb")


def test_python2_pickle_with_byte_strings_loads():
  # {'boxes': [array([1.5, -2., 255.])], 'ids': [7]} as Python 2 wrote it; the
  # array's buffer is a Python 2 str (bytes >= 0x80 included), read as latin-1.
  values = [1.5, -2.0, 255.0]
  data = (b"\x80\x02}(" + _binstring(b"boxes") + b"](" + _py2_ndarray(values) + b"e"
          + _binstring(b"ids") + b"](K\x07eu.")
  out = safe_pickle.loads(data)
  assert list(out) == ["boxes", "ids"] and out["ids"] == [7]
  assert out["boxes"][0].dtype == np.float32
  np.testing.assert_array_equal(out["boxes"][0], values)


class _RunsCommand:
  def __init__(self, command):
    self.command = command

  def __reduce__(self):
    return os.system, (self.command,)


def test_pickle_that_runs_a_command_is_refused_and_nothing_runs(tmp_path):
  marker = tmp_path / "ran"
  payload = pickle.dumps({"boxes": [_RunsCommand(f"touch {marker}")]})
  with pytest.raises(safe_pickle.UnsafePickleError, match=r"proposals\.pkl: refused posix\.system"):
    safe_pickle.loads(payload, source="proposals.pkl")
  assert not marker.exists()
  # The payload is live: the stock unpickler runs it.
  pickle.loads(payload)
  assert marker.exists()


def test_pickle_that_imports_a_module_is_refused_and_nothing_is_imported(tmp_path, monkeypatch):
  marker = tmp_path / "imported"
  (tmp_path / "tfdet_test_side_effect.py").write_text(
      f"open({str(marker)!r}, 'w').close()\nvalue = 1\n")
  monkeypatch.syspath_prepend(str(tmp_path))
  payload = b"\x80\x02}X\x05\x00\x00\x00blobsctfdet_test_side_effect\nvalue\ns."
  path = tmp_path / "weights.pkl"
  path.write_bytes(payload)
  with pytest.raises(safe_pickle.UnsafePickleError, match=r"refused tfdet_test_side_effect\.value"):
    safe_pickle.load(str(path))
  assert not marker.exists() and "tfdet_test_side_effect" not in sys.modules
  try:  # the payload is live: the stock unpickler imports the module
    assert pickle.loads(payload) == {"blobs": 1}
    assert marker.exists()
  finally:
    sys.modules.pop("tfdet_test_side_effect", None)


@pytest.mark.parametrize("module,name", [("builtins", "eval"), ("__builtin__", "getattr"),
                                         ("numpy", "load"), ("numpy.core.multiarray", "empty"),
                                         ("copy_reg", "_reconstructor")])
def test_other_globals_are_refused(module, name):
  payload = b"c" + module.encode() + b"\n" + name.encode() + b"\n."
  with pytest.raises(safe_pickle.UnsafePickleError, match=rf"refused {module}\.{name}:"):
    safe_pickle.loads(payload)


def test_bytes_and_codecs_only_in_the_forms_pickle_writes():
  assert safe_pickle.loads(pickle.dumps(b"", protocol=2)) == b""  # __builtin__.bytes()
  with pytest.raises(safe_pickle.UnsafePickleError, match="bytes called with arguments"):
    safe_pickle.loads(b"c__builtin__\nbytes\n(I10\ntR.")
  ok = pickle.dumps(b"\x00\xff bytes", protocol=2)  # _codecs.encode('\x00\xff bytes', 'latin1')
  assert b"_codecs" in ok and safe_pickle.loads(ok) == b"\x00\xff bytes"
  bad = ok.replace(b"latin1", b"zlib_c")
  with pytest.raises(safe_pickle.UnsafePickleError, match="codec 'zlib_c'"):
    safe_pickle.loads(bad)


def test_truncated_and_empty_pickles_are_refused_with_the_file_named(tmp_path):
  data = pickle.dumps(_detectron_proposals(), protocol=2)
  for cut in (len(data) // 2, len(data) - 1, 1):
    path = tmp_path / f"cut{cut}.pkl"
    path.write_bytes(data[:cut])
    with pytest.raises(safe_pickle.CorruptPickleError,
                       match=rf"cut{cut}\.pkl: not a readable pickle \(truncated or corrupt"):
      safe_pickle.load(str(path))
  (tmp_path / "empty.pkl").write_bytes(b"")
  with pytest.raises(safe_pickle.CorruptPickleError, match=r"empty\.pkl: .*\(empty"):
    safe_pickle.load(str(tmp_path / "empty.pkl"))
