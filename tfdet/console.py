"""What the command-line entry points print: their own progress and errors, TensorFlow's logs
only when asked for.

TensorFlow logs from C++ (CUDA-driver probes on a CPU machine, CPU-feature
notes, tf.data defaults) and from Python (strategy set-up, checkpoint
sharding callbacks) between the entry points' own lines. The entry points
hide both unless ``--tf_logs`` is given:

* C++: ``TF_CPP_MIN_LOG_LEVEL`` must be set before TensorFlow is imported,
  so each entry point calls `hide_tf_cpp_logs` at the top of its module,
  before its other imports (a value already in the environment is kept).
  Some lines (the CUDA stub's probe on a CPU machine) are written at load
  time whatever that variable says, so `hide_tf_cpp_logs` also imports
  TensorFlow and loads tfdet's op library with the process's stderr (file
  descriptor 2) pointed at /dev/null for the duration; a Python error raised
  there is still raised (``--tf_logs`` shows everything);
* Python: `configure` drops the info lines that TensorFlow's and Keras' own
  modules log (through absl or the ``tensorflow`` logger) after the flags
  are parsed; their warnings and errors still show.
"""

import contextlib
import logging
import os
import sys

from absl import flags
from absl import logging as absl_logging

FLAG = "tf_logs"
_TRUE = {f"--{FLAG}", f"--{FLAG}=true", f"--{FLAG}=True", f"--{FLAG}=1"}


def wants_tf_logs(argv=None):
  """Whether the command line asks for TensorFlow's logs (``--tf_logs``)."""
  return any(arg in _TRUE for arg in (sys.argv if argv is None else argv))


@contextlib.contextmanager
def native_stderr_silenced():
  """Points file descriptor 2 at /dev/null (what C and C++ code write there is dropped)."""
  sys.stderr.flush()
  saved = os.dup(2)
  devnull = os.open(os.devnull, os.O_WRONLY)
  try:
    os.dup2(devnull, 2)
    yield
  finally:
    os.dup2(saved, 2)
    os.close(saved)
    os.close(devnull)


def hide_tf_cpp_logs(argv=None):
  """Hides TensorFlow's C++ logs unless ``--tf_logs``; call before TensorFlow is imported.

  Sets TF_CPP_MIN_LOG_LEVEL (kept if already set), then imports TensorFlow
  and loads the op library (when built) with native stderr silenced.
  """
  if wants_tf_logs(argv):
    return
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  with native_stderr_silenced():
    import tensorflow  # noqa: F401  (its load-time lines go to /dev/null)

    from tfdet.ops import custom_ops
    if custom_ops.is_available():
      custom_ops.load()


def define_flags():
  flags.DEFINE_bool(FLAG, False, "Show TensorFlow's own log lines (C++ and Python); by default "
                    "only tfdet's progress lines, warnings and errors are printed.")


_LIBRARY_DIRS = tuple(f"{os.sep}{name}{os.sep}" for name in ("tensorflow", "keras", "tf_keras"))


class _LibraryInfoFilter(logging.Filter):
  """Drops info (and debug) records logged by TensorFlow's and Keras' own modules."""

  def filter(self, record):
    return record.levelno >= logging.WARNING or not any(
        d in record.pathname for d in _LIBRARY_DIRS)


def configure(show_tf_logs):
  """Hides TensorFlow's and Keras' Python info lines unless `show_tf_logs`."""
  if show_tf_logs:
    return
  logging.getLogger("tensorflow").setLevel(logging.WARNING)
  handler = absl_logging.get_absl_handler()
  if not any(isinstance(f, _LibraryInfoFilter) for f in handler.filters):
    handler.addFilter(_LibraryInfoFilter())
