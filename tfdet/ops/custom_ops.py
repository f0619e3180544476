"""Lazy loader of tfdet's compiled op library (``_tfdet_ops*.so``).

The library holds the RoIAlign and proposal-generation kernels (CPU, and
CUDA when they were compiled). It is loaded on first use, not at import, so
that every pure-TF part of tfdet works without it, and so that a model can be
configured to use the pure-TF reference implementations instead
(``implementation="reference"`` on the op wrappers and layers).

Errors name what is wrong and how to rebuild:

* no library file: the package was not built (``pip install -e .``);
* built for another TensorFlow version: its binary interface is tied to the
  exact TF version, so it must be rebuilt against the installed one.
"""

import glob
import os
import re
import threading

import tensorflow as tf

_LIB_GLOB = "_tfdet_ops*.so"
_TAG_RE = re.compile(rb"tfdet-build-tag:tf=([^;\x00]+);cuda=([01]);")
_REBUILD_HINT = (
    "Rebuild it against the installed TensorFlow with `pip install -e .` (or "
    "`pip install .`) from the tfdet source tree, or set "
    "implementation='reference' to use the pure-TF ops.")

_lock = threading.Lock()
_module = None
IMPLEMENTATIONS = ("custom", "reference")


class CustomOpsError(RuntimeError):
  """The custom-op library is missing, stale or failed to load."""


def library_path():
  """Returns the path of the op library, or None if none was built."""
  here = os.path.dirname(os.path.abspath(__file__))
  found = sorted(glob.glob(os.path.join(here, _LIB_GLOB)))
  return found[0] if found else None


def read_build_tag(path):
  """Reads (tf_version, with_cuda) from the library file without loading it."""
  with open(path, "rb") as f:
    match = _TAG_RE.search(f.read())
  if not match:
    return None, False
  return match.group(1).decode(), match.group(2) == b"1"


def load():
  """Loads the op library once and returns its generated op module."""
  global _module
  if _module is not None:
    return _module
  with _lock:
    if _module is not None:
      return _module
    path = library_path()
    if path is None:
      raise CustomOpsError(
          "tfdet's custom-op library (tfdet/ops/_tfdet_ops*.so) was not "
          "found. " + _REBUILD_HINT)
    built_for, _ = read_build_tag(path)
    if built_for is None:
      raise CustomOpsError(
          f"{path} carries no tfdet build tag; it is not a library built by "
          f"tfdet's setup.py. " + _REBUILD_HINT)
    if built_for != tf.__version__:
      raise CustomOpsError(
          f"{path} was built for TensorFlow {built_for}, but TensorFlow "
          f"{tf.__version__} is installed; custom-op binaries are tied to the "
          f"exact TensorFlow version. " + _REBUILD_HINT)
    try:
      _module = tf.load_op_library(path)
    except (tf.errors.NotFoundError, OSError) as e:
      raise CustomOpsError(
          f"Loading {path} failed: {e}. " + _REBUILD_HINT) from e
    return _module


def is_available():
  """True if the op library loads."""
  try:
    load()
  except CustomOpsError:
    return False
  return True


def built_with_cuda():
  """True if the library's CUDA kernels were compiled (False if no library)."""
  path = library_path()
  return bool(path) and read_build_tag(path)[1]


def check_implementation(implementation):
  """Validates an ``implementation`` argument ("custom" or "reference")."""
  if implementation not in IMPLEMENTATIONS:
    raise ValueError(
        f"implementation must be one of {IMPLEMENTATIONS}, got "
        f"{implementation!r}")
  return implementation
