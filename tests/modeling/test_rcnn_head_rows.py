"""The mask and keypoint heads run on the valid rows only: what they give those rows, and
the gradients, equal what running on every row gives; the other rows get zeros."""

import numpy as np
import pytest
import tensorflow as tf

from tests.export import tiny
from tests.modeling import overfit_data
from tfdet.data import keys
from tfdet.modeling.detectors import outputs as out

VALID = np.array([[True, False, True, True, False, False],
                  [False, False, False, False, False, False]])  # image 2: no valid row


def _rois(size):
  rng = np.random.default_rng(0)
  xy = rng.uniform(0, size / 2, [2, 6, 2])
  return tf.constant(np.concatenate([xy, xy + rng.uniform(8, size / 2, [2, 6, 2])], -1),
                     tf.float32)


@pytest.mark.parametrize("heads,use_fpn", [("mask", True), ("mask", False), ("keypoint", True)])
def test_valid_rows_only_equals_all_rows_masked(heads, use_fpn):
  model = tiny.tiny_model(heads=heads, use_fpn=use_fpn, num_classes=3, implementation="custom")
  batch, _ = overfit_data.make_batch([0, 1])
  features = model.backbone(batch[keys.IMAGES], training=False)
  rois = _rois(overfit_data.SIZE)
  part = model.mask if heads == "mask" else model.keypoint
  res5 = model.box.run_head(features, rois)[2] if not use_fpn else None

  def logits(valid):
    if heads == "mask":
      return part.logits(features, rois, res5, training=True, valid=valid)
    return part.logits(features, rois, training=True, valid=valid)

  weights = tf.cast(VALID, tf.float32)
  with tf.GradientTape(persistent=True) as tape:
    every = logits(None)
    valid_only = logits(tf.constant(VALID))
    # Any loss that weighs the invalid rows 0 (as the mask and keypoint losses do).
    upstream = tf.random.stateless_normal(tf.shape(every), seed=[3, 4])
    loss_every = tf.reduce_sum(every * upstream * weights[:, :, None, None, None])
    loss_valid = tf.reduce_sum(valid_only * upstream * weights[:, :, None, None, None])
  assert valid_only.shape == every.shape
  np.testing.assert_allclose(valid_only.numpy()[VALID], every.numpy()[VALID], rtol=1e-5,
                             atol=1e-5)
  assert np.all(valid_only.numpy()[~VALID] == 0)
  head = part.head
  for a, b in zip(tape.gradient(loss_valid, head.trainable_variables),
                  tape.gradient(loss_every, head.trainable_variables), strict=True):
    # Sums over fewer rows, in another order: float32 rounding, relative to the largest.
    np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-5 * np.abs(b).max())
  # No valid row at all: zeros, and a zero gradient.
  with tf.GradientTape() as tape:
    none = logits(tf.zeros_like(VALID))
    loss = tf.reduce_sum(none)
  assert none.shape == every.shape and np.all(none.numpy() == 0)
  grads = tape.gradient(loss, head.trainable_variables)
  assert all(g is None or np.all(g.numpy() == 0) for g in grads)


def test_inference_masks_past_the_detections_are_zero():
  # Room for more detections than NMS leaves, so that padding rows follow them.
  model = tiny.tiny_model(heads="mask", num_classes=3, implementation="custom",
                          roi=dict(tiny.ROI, detections_per_image=1000))
  outputs = model(overfit_data.make_batch([0, 1])[0], training=False)
  n = outputs[out.NUM_DETECTIONS].numpy()
  masks = outputs[out.DETECTION_MASKS].numpy()
  assert masks.shape[:2] == tuple(outputs[out.DETECTION_BOXES].shape[:2])
  for b in range(len(n)):
    assert np.all(masks[b, n[b]:] == 0)
    assert np.all(masks[b, :n[b]].reshape(n[b], -1).max(axis=1) > 0)
  assert np.all((0 < n) & (n < masks.shape[1])), n
