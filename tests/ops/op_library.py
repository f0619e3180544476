"""Marks for tests of the custom ops: only the cases that run the compiled
library (or a GPU) skip when it is absent; pure-TF reference cases always run."""

import pytest
import tensorflow as tf

from tfdet.ops import custom_ops

needs_library = pytest.mark.skipif(not custom_ops.is_available(),
                                   reason="tfdet op library not built")
needs_gpu = pytest.mark.skipif(not tf.config.list_physical_devices("GPU"), reason="no GPU")

# `implementation` values, the compiled one skipped without the library.
IMPLEMENTATIONS = [pytest.param("custom", marks=needs_library), "reference"]


def custom(*values):
  """A parametrize case that runs the compiled op: skipped without the library."""
  return pytest.param(*values, marks=needs_library)
