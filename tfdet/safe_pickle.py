"""Loading Detectron's pickles (proposal files, weight files) without running their code.

A pickle is a program: unpickling calls whatever functions the file names, so
an untrusted ``.pkl`` can run a shell command or import any module. Detectron's
published files need very little of that power: proposal files are dicts of
lists of numpy arrays (``boxes``, ``scores``, ``ids``, ``cfg``), weight files
dicts of numpy arrays (``blobs``) and a yaml string, written by Python 2 or 3.

`load` unpickles with an allow-list. Dicts, lists, tuples, strings, bytes,
numbers, booleans and None (and sets, from protocol 4 on) need no function
call and are always admitted. Everything else a pickle can name is refused, except what a numpy
array, numpy scalar or dtype needs to rebuild itself (``_reconstruct``,
``ndarray``, ``dtype``, ``scalar``, ``_frombuffer``, under ``numpy.core`` or
``numpy._core``), ``collections.OrderedDict`` (a dict), and the two ways
protocol-2 pickles of Python 3 carry bytes: ``_codecs.encode`` with the
latin-1 codec, and ``bytes()`` with no argument (empty bytes, as in the
buffer of an empty array). The refusal names the module and function the file asked
for, so that nothing is imported and nothing is called.
"""

import _codecs
import collections
import io
import pickle

import numpy as np

try:  # NumPy >= 2
  from numpy._core import multiarray as _multiarray
  from numpy._core import numeric as _numeric
except ImportError:  # pragma: no cover - NumPy 1.x
  from numpy.core import multiarray as _multiarray
  from numpy.core import numeric as _numeric


class UnsafePickleError(pickle.UnpicklingError):
  """A pickle names a function or class outside the allow-list."""


class CorruptPickleError(pickle.UnpicklingError):
  """A pickle is truncated, empty or not a pickle at all."""


def _latin1_encode(text, encoding="utf-8", errors="strict"):
  """`_codecs.encode` for the one codec protocol-2 pickles use for bytes."""
  if encoding.replace("_", "-").lower() not in ("latin1", "latin-1", "iso-8859-1"):
    raise UnsafePickleError(f"_codecs.encode with codec {encoding!r} (only latin-1 is admitted)")
  return _codecs.encode(text, "latin1", errors)


def _empty_bytes(*args):
  """`bytes` as protocol-2 pickles call it: with no argument, for b''."""
  if args:
    raise UnsafePickleError(f"bytes called with arguments {args!r:.80} (only bytes() is admitted)")
  return b""


def _numpy_globals():
  objects = {"_reconstruct": _multiarray._reconstruct, "scalar": _multiarray.scalar,
             "_frombuffer": _numeric._frombuffer}
  allowed = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
  for package in ("numpy.core", "numpy._core"):
    allowed[(f"{package}.multiarray", "_reconstruct")] = objects["_reconstruct"]
    allowed[(f"{package}.multiarray", "scalar")] = objects["scalar"]
    allowed[(f"{package}.numeric", "_frombuffer")] = objects["_frombuffer"]
  # NumPy >= 1.25 pickles dtypes as numpy.dtypes.Float32DType etc.
  for name in dir(np.dtypes):
    if name.endswith("DType"):
      allowed[("numpy.dtypes", name)] = getattr(np.dtypes, name)
  return allowed


# (module, name) as the pickle spells it -> the object it gets. The names are
# matched before Python 2's are mapped to Python 3's, so `bytes` is listed
# under both.
ALLOWED_GLOBALS = {
    **_numpy_globals(),
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("_codecs", "encode"): _latin1_encode,
    ("__builtin__", "bytes"): _empty_bytes,
    ("builtins", "bytes"): _empty_bytes,
}


class _RestrictedUnpickler(pickle.Unpickler):

  def find_class(self, module, name):
    try:
      return ALLOWED_GLOBALS[(module, name)]
    except KeyError:
      raise UnsafePickleError(
          f"refused {module}.{name}: a data pickle may hold only dicts, lists, tuples, "
          "strings, numbers and numpy arrays") from None

  def persistent_load(self, pid):
    raise UnsafePickleError(f"refused persistent id {pid!r}")


def loads(data, *, source="<bytes>"):
  """Unpickles ``data`` (bytes) with the allow-list; Python 2 strings decode as latin-1.

  Raises:
    UnsafePickleError: the pickle names anything outside `ALLOWED_GLOBALS`;
      the message starts with ``source``.
    CorruptPickleError: truncated, empty or malformed data.
  """
  unpickler = _RestrictedUnpickler(io.BytesIO(data), encoding="latin1")
  try:
    return unpickler.load()
  except UnsafePickleError as e:
    raise UnsafePickleError(f"{source}: {e}") from None
  except (EOFError, pickle.UnpicklingError, ValueError, TypeError, IndexError,
          KeyError, AttributeError, MemoryError, OverflowError) as e:
    # What a damaged stream raises depends on where it breaks (a missing STOP,
    # a cut-off array buffer, a memo reference to nothing, ...).
    what = "empty" if not data else "truncated or corrupt"
    raise CorruptPickleError(f"{source}: not a readable pickle ({what}: "
                             f"{type(e).__name__}: {e})") from None


def load(path):
  """`loads` of a file's bytes; errors name ``path``."""
  with open(path, "rb") as f:
    return loads(f.read(), source=path)
