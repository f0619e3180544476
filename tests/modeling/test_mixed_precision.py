"""Mixed precision (`train.run.mixed_precision`): R-CNN and RetinaNet train and infer under
mixed_bfloat16 and mixed_float16 on the CPU (RoIAlign runs such features in float32 where
it has no kernel for them), their layers compute in the low precision, their outputs for
decoding and losses are float32, and their box inputs are not rounded to the low precision."""

import numpy as np
import pytest
import tensorflow as tf

from tests.export import tiny
from tests.modeling import overfit_data
from tfdet.modeling.detectors import builders, rcnn_losses, retinanet_losses
from tfdet.modeling.detectors import outputs as out
from tfdet.training import optimizer as opt_lib


@pytest.fixture
def policy(request):
  opt_lib.set_mixed_precision(request.param)
  yield request.param
  opt_lib.set_mixed_precision(None)


@pytest.mark.parametrize("policy", ["bfloat16", "float16"], indirect=True)
@pytest.mark.parametrize("family", ["rcnn", "retinanet"])
def test_trains_and_infers_in_low_precision(policy, family):
  if family == "rcnn":
    model = tiny.tiny_model(heads="mask", num_classes=3, implementation="custom")
  else:
    model = builders.build_retinanet(width_divisor=8, fpn_channels=32, num_convs=1,
                                     stage_blocks=(1, 1, 1, 1), num_classes=3)
  batch, _ = overfit_data.make_batch([0, 1])
  # Keras would cast every float input of the model (boxes, image sizes) to the policy's
  # dtype: bfloat16 keeps 8 bits of mantissa. The backbone casts the images itself.
  assert model.autocast is False
  assert model.backbone.compute_dtype == policy
  with tf.GradientTape() as tape:
    outputs = model(batch, training=True)
    if family == "rcnn":
      assert outputs[out.CLASS_LOGITS].dtype == tf.float32
      assert outputs[out.MASK_LOGITS].dtype == tf.float32
      losses = rcnn_losses.rcnn_losses(model, outputs, batch)
    else:
      losses = retinanet_losses.retinanet_losses(model, outputs, batch)
    total = losses[rcnn_losses.TOTAL_LOSS if family == "rcnn" else retinanet_losses.TOTAL_LOSS]
  assert np.isfinite(float(total)) and float(total) > 0
  grads = tape.gradient(total, model.trainable_variables)
  assert all(g is not None and np.isfinite(tf.cast(g, tf.float32).numpy()).all() for g in grads)
  detections = model(batch, training=False)
  assert detections[out.DETECTION_BOXES].dtype == tf.float32
