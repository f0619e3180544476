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


def test_mask_loss_uses_label_channel_and_fg_only():
  logits = np.zeros([1, 2, 2, 2, 3], np.float32)
  logits[0, 0, :, :, 1] = 100.0  # confident class-1 mask, but the RoI is class 2
  targets = np.ones([1, 2, 2, 2], np.float32)
  loss = losses.mask_loss(logits, targets, tf.constant([[2, 1]]), tf.constant([[True, False]]))
  np.testing.assert_allclose(loss.numpy(), math.log(2.0), rtol=1e-6)
  none = losses.mask_loss(logits, targets, tf.constant([[2, 1]]), tf.constant([[False, False]]))
  assert none.numpy() == 0.0
