"""XLA compilation of a detector's dense part at inference (opt-in).

``jit_compile_inference`` on `GeneralizedRCNN` and `RetinaNet` (gin:
``builders.build_rcnn.jit_compile_inference`` / ``build_retinanet``) runs the
backbone with its FPN, and the RPN or RetinaNet head, through
``tf.function(jit_compile=True)`` when the model is called with
``training=False``. Training never uses it. Measured on a 2-core x86 CPU
(``python benchmarks/bench_xla_dense.py``, README): the R-50-FPN backbone +
FPN + RPN head forward takes 0.88x the time of TensorFlow's graph executor, but
the forward+backward of the same part takes 1.66x (XLA's CPU convolution
gradients are slow), hence inference only and off by default. XLA compiles
once per input shape (a few seconds each on a CPU). Export turns it off: a
SavedModel with XLA-compiled functions needs a server built with XLA.
"""

import weakref

import tensorflow as tf

_COMPILED = weakref.WeakKeyDictionary()


def inference_call(layer, inputs, *, jit_compile):
  """``layer(inputs, training=False)``, XLA-compiled when `jit_compile` (one compiled
  function per layer, kept while the layer lives)."""
  if not jit_compile:
    return layer(inputs, training=False)
  fn = _COMPILED.get(layer)
  if fn is None:
    ref = weakref.ref(layer)  # the cache must not keep its key alive
    fn = tf.function(lambda x: ref()(x, training=False), jit_compile=True)
    _COMPILED[layer] = fn
  return fn(inputs)
