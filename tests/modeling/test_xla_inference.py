"""jit_compile_inference: the backbone and the dense head run through XLA at inference, give
what TensorFlow's executor gives, training is untouched, and export turns it off."""

import gc
import weakref

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.export import tiny
from tests.modeling import overfit_data
from tfdet.export import serving
from tfdet.modeling import xla
from tfdet.modeling.detectors import builders
from tfdet.modeling.detectors import outputs as out


def _rcnn():
  return tiny.tiny_model(heads="mask", num_classes=3, implementation="custom")


def _retinanet():
  model = builders.build_retinanet(width_divisor=8, fpn_channels=32, num_convs=1,
                                   stage_blocks=(1, 1, 1, 1), num_classes=3)
  return model


@pytest.mark.parametrize("make,names", [
    (_rcnn, (out.RPN_LOGITS, out.RPN_DELTAS)),
    (_retinanet, (out.RETINANET_LOGITS, out.RETINANET_DELTAS)),
])
def test_xla_inference_equals_graph(make, names):
  model = make()
  batch, _ = overfit_data.make_batch([0, 1])
  run = tf.function(lambda b: model(b, training=False))
  plain = run(batch)
  assert model.backbone not in xla._COMPILED
  model.jit_compile_inference = True
  compiled = tf.function(lambda b: model(b, training=False))(batch)
  assert model.backbone in xla._COMPILED
  heads = [model.head] if hasattr(model, "levels") else [model.proposal_source.head]
  assert all(h in xla._COMPILED for h in heads)
  for name in names:
    want = plain[name].numpy()
    assert np.abs(want).max() > 0
    np.testing.assert_allclose(compiled[name].numpy(), want, rtol=1e-4,
                               atol=1e-4 * np.abs(want).max())


def test_training_and_export_do_not_compile():
  model = _rcnn()
  model.jit_compile_inference = True
  assert model.proposal_source.jit_compile_inference
  batch, _ = overfit_data.make_batch([0])
  model(batch, training=True)
  assert model.backbone not in xla._COMPILED
  serving.DetectionModule(model)
  assert not model.jit_compile_inference and not model.proposal_source.jit_compile_inference


def test_inference_call_cache_does_not_keep_the_layer_alive():
  layer = keras.layers.Dense(2)
  xla.inference_call(layer, tf.ones([1, 3]), jit_compile=True)
  assert layer in xla._COMPILED
  alive = weakref.ref(layer)
  del layer
  gc.collect()
  assert alive() is None
