"""Losses against hand-computed values and Detectron's normalizations."""

import math

import numpy as np
import tensorflow as tf

from tfdet.modeling import losses


def test_smooth_l1_by_hand():
  x = tf.constant([0.05, -0.05, 0.5, -2.0])
  np.testing.assert_allclose(losses.smooth_l1(x, 0.1).numpy(),
                             [0.5 * 0.0025 / 0.1, 0.5 * 0.0025 / 0.1, 0.45, 1.95], rtol=1e-6)
  np.testing.assert_allclose(losses.smooth_l1(x, 0.0).numpy(), [0.05, 0.05, 0.5, 2.0])


def test_rpn_losses_fpn_and_c4_normalization():
  # 2 images, 4 anchors. Image 0: labels (1, 0, -1, 0); image 1: (0, -1, -1, -1).
  logits = tf.constant([[0.0, 0.0, 5.0, 0.0], [0.0, 3.0, 3.0, 3.0]])
  labels = tf.constant([[1, 0, -1, 0], [0, -1, -1, -1]])
  deltas = tf.zeros([2, 4, 4])
  targets = tf.constant([[[1.0, 0.0, 0.0, 0.0], [9.0] * 4, [9.0] * 4, [9.0] * 4],
                         [[9.0] * 4] * 4])
  per = math.log(2.0)  # BCE at logit 0
  cls, box = losses.rpn_losses(logits, deltas, labels, targets, batch_size_per_image=8,
                               multilevel=True)
  np.testing.assert_allclose(cls.numpy(), 4 * per / (8 * 2), rtol=1e-6)
  # Image 0: one fg anchor, |diff| 1 >= 1/9 -> 1 - 0.5/9, over 3 sampled; image 1: 0.
  np.testing.assert_allclose(box.numpy(), (1 - 0.5 / 9) / 3 / 2, rtol=1e-6)
  cls, _ = losses.rpn_losses(logits, deltas, labels, targets, multilevel=False)
  np.testing.assert_allclose(cls.numpy(), 4 * per / 4, rtol=1e-6)


def test_fast_rcnn_losses_pick_the_label_class():
  # 1 image, 3 RoIs (K + 1 = 3 classes): labels 2, 0, padding.
  logits = tf.constant([[[0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [9.0, 9.0, 9.0]]])
  deltas = np.zeros([1, 3, 12], np.float32)
  deltas[0, 0, 8:12] = [0.5, 0.0, 0.0, 2.0]  # class 2's deltas
  deltas[0, 0, 4:8] = [100.0] * 4  # another class's deltas are ignored
  targets = tf.zeros([1, 3, 4])
  labels = tf.constant([[2, 0, 0]])
  valid = tf.constant([[True, True, False]])
  cls, box = losses.fast_rcnn_losses(logits, deltas, labels, targets, valid)
  np.testing.assert_allclose(cls.numpy(), math.log(3.0), rtol=1e-6)
  np.testing.assert_allclose(box.numpy(), (0.125 + 1.5) / 2, rtol=1e-6)


def _bce_sum(z, ones, zeros):
  """Sigmoid cross-entropy of logit z summed over `ones` pixels of target 1 and `zeros` of 0:
  -log(sigmoid(z)) = softplus(-z) and -log(1 - sigmoid(z)) = softplus(z)."""
  return ones * math.log1p(math.exp(-z)) + zeros * math.log1p(math.exp(z))


# Mask targets of 3 RoIs at M = 2: RoI 0 has 3 foreground pixels, RoI 1 one, RoI 2 four.
MASK_TARGETS = np.array([[[[1, 0], [1, 1]], [[0, 0], [0, 1]], [[1, 1], [1, 1]]]], np.float32)


def test_mask_loss_uses_label_channel_and_fg_only():
  # Every channel has its own logit (background -2, class 1: 3, class 2: 1), so only
  # the label's channel gives the loss below: RoI 0 is class 2, RoI 1 class 1, and
  # RoI 2 (class 2, logits 9) is not foreground.
  logits = np.zeros([1, 3, 2, 2, 3], np.float32)
  logits[0, :2] = [-2.0, 3.0, 1.0]
  logits[0, 2] = 9.0
  labels = tf.constant([[2, 1, 2]])
  loss = losses.mask_loss(logits, MASK_TARGETS, labels, tf.constant([[True, True, False]]))
  # RoI 0 (z = 1): 3 ones, 1 zero; RoI 1 (z = 3): 1 one, 3 zeros; over 2 * 4 pixels.
  expected = (_bce_sum(1.0, 3, 1) + _bce_sum(3.0, 1, 3)) / 8
  np.testing.assert_allclose(loss.numpy(), expected, rtol=1e-6)
  # What a wrong gather would give instead (all differ from the expected value by > 0.1):
  for wrong in (_bce_sum(-2.0, 3, 1) + _bce_sum(-2.0, 1, 3),  # background channel
                _bce_sum(1.0, 3, 1) + _bce_sum(1.0, 1, 3),  # RoI 0's label for both
                _bce_sum(3.0, 3, 1) + _bce_sum(1.0, 1, 3)):  # labels swapped
    assert abs(wrong / 8 - expected) > 0.1
  # With RoI 2 foreground too: its 4 ones at z = 9 join the mean over 12 pixels.
  all_fg = losses.mask_loss(logits, MASK_TARGETS, labels, tf.constant([[True, True, True]]))
  np.testing.assert_allclose(all_fg.numpy(), (expected * 8 + _bce_sum(9.0, 4, 0)) / 12,
                             rtol=1e-6)
  none = losses.mask_loss(logits, MASK_TARGETS, labels, tf.constant([[False, False, False]]))
  assert none.numpy() == 0.0


def test_class_agnostic_mask_loss_reads_the_one_channel():
  # One channel per RoI (logits 0.5, -1.5, 9); the labels (2 and 1, past the one channel)
  # are ignored.
  logits = np.zeros([1, 3, 2, 2, 1], np.float32)
  logits[0, :, :, :, 0] = np.array([0.5, -1.5, 9.0])[:, None, None]
  loss = losses.mask_loss(logits, MASK_TARGETS, tf.constant([[2, 1, 2]]),
                          tf.constant([[True, True, False]]), class_agnostic=True)
  expected = (_bce_sum(0.5, 3, 1) + _bce_sum(-1.5, 1, 3)) / 8
  np.testing.assert_allclose(loss.numpy(), expected, rtol=1e-6)


def test_keypoint_loss_by_hand():
  # 1 image, 2 RoIs, 2 x 2 heatmaps, 2 keypoints. RoI 0 keypoint 0: logits (0, 0, 0, ln 3)
  # with the target at index 3 -> -log(3 / 6); keypoint 1 uniform, target 0 -> log 4.
  # RoI 1: keypoint 0 counted (uniform -> log 4), keypoint 1 not.
  logits = np.zeros([1, 2, 2, 2, 2], np.float32)  # [B, R, S, S, J]
  logits[0, 0, 1, 1, 0] = math.log(3.0)  # y = 1, x = 1: flat index 3
  logits[0, 1, 0, 1, 1] = 50.0  # not counted (weight 0)
  targets = np.array([[[3, 0], [2, 1]]], np.int32)
  weights = np.array([[[1, 1], [1, 0]]], np.float32)
  total = -math.log(0.5) + 2 * math.log(4.0)
  np.testing.assert_allclose(losses.keypoint_loss(logits, targets, weights).numpy(), total / 3,
                             rtol=1e-6)
  # KRCNN.NORMALIZE_BY_VISIBLE_KEYPOINTS False: over images * quota * keypoints = 1 * 4 * 2.
  np.testing.assert_allclose(
      losses.keypoint_loss(logits, targets, weights, normalize_by_visible=False,
                           rois_per_image=4).numpy(), total / 8, rtol=1e-6)
  # No counted keypoint: 0, not NaN.
  assert losses.keypoint_loss(logits, targets, np.zeros_like(weights)).numpy() == 0.0
