"""RetinaNet's focal loss, its normalizers, and the box loss, by hand."""

import math
from types import SimpleNamespace

import numpy as np
import pytest
import tensorflow as tf

from tfdet.modeling import losses
from tfdet.modeling.detectors import retinanet_losses
from tfdet.modeling.detectors.config import RetinaNetSettings, retinanet_modern_settings


def _sigmoid(x):
  return 1.0 / (1.0 + math.exp(-x))


def _positive(x, alpha=0.25, gamma=2.0):
  p = _sigmoid(x)
  return -alpha * (1.0 - p) ** gamma * math.log(p)


def _negative(x, alpha=0.25, gamma=2.0):
  p = _sigmoid(x)
  return -(1.0 - alpha) * p ** gamma * math.log(1.0 - p)


def test_focal_loss_by_hand():
  # Three anchors, K = 2 classes: labelled class 2, background, ignored.
  x = np.array([[[0.0, math.log(2.0)], [-math.log(2.0), 1.5], [4.0, -4.0]]], np.float32)
  labels = np.array([[2, 0, -1]], np.int32)
  want = (_negative(0.0) + _positive(math.log(2.0))  # anchor 0: class 1 negative, 2 positive
          + _negative(-math.log(2.0)) + _negative(1.5))  # anchor 1: both negative
  got = float(losses.sigmoid_focal_loss(x, labels, alpha=0.25, gamma=2.0))
  assert got == pytest.approx(want, rel=1e-5)
  # p = 1/2: each positive term is 0.25 * 0.25 * ln 2, each negative 0.75 * 0.25 * ln 2.
  half = float(losses.sigmoid_focal_loss(np.zeros([1, 1, 2], np.float32), [[1]]))
  assert half == pytest.approx((0.0625 + 0.1875) * math.log(2.0), rel=1e-6)


def test_focal_loss_is_stable_at_extreme_logits():
  x = np.array([[[-120.0, 120.0]]], np.float32)  # a confident wrong answer
  got = float(losses.sigmoid_focal_loss(x, [[1]], alpha=0.25, gamma=2.0))
  # Positive class 1 with p ~ e^-120: 0.25 * 120; negative class 2 with p ~ 1: 0.75 * 120.
  assert got == pytest.approx(0.25 * 120.0 + 0.75 * 120.0, rel=1e-5)
  grads = tf.GradientTape()
  with grads:
    logits = tf.constant(x)
    grads.watch(logits)
    loss = losses.sigmoid_focal_loss(logits, [[1]])
  assert np.all(np.isfinite(grads.gradient(loss, logits).numpy()))


def test_retinanet_losses_normalize_both_sums():
  x = np.zeros([1, 3, 2], np.float32)
  labels = np.array([[1, 0, 2]], np.int32)
  deltas = np.zeros([1, 3, 4], np.float32)
  targets = np.zeros([1, 3, 4], np.float32)
  targets[0, 0] = [0.05, -0.2, 0.0, 1.0]  # smooth-L1(beta 0.11): 0.05^2/0.22, 0.145, 0, 0.945
  targets[0, 1] = [9.0, 9.0, 9.0, 9.0]  # a background anchor's targets never count
  cls, box = losses.retinanet_losses(x, deltas, labels, targets, 4.0, beta=0.11)
  focal = 2 * 0.0625 * math.log(2) + 4 * 0.1875 * math.log(2)  # 2 positive, 4 negative terms
  assert float(cls) == pytest.approx(focal / 4.0, rel=1e-5)
  smooth = 0.05 ** 2 / 0.22 + (0.2 - 0.055) + 0.0 + (1.0 - 0.055)
  assert float(box) == pytest.approx(smooth / 4.0, rel=1e-5)
  # The normalizer is at least 1.
  cls0, _ = losses.retinanet_losses(x, deltas, labels, targets, 0.0)
  assert float(cls0) == pytest.approx(focal, rel=1e-5)


def test_detectron_normalizer_is_foreground_plus_one_per_image():
  model = SimpleNamespace(settings=RetinaNetSettings())
  got = retinanet_losses.loss_normalizer(model, tf.constant([3.0, 0.0]))
  assert float(got) == 5.0  # (3 + 1) + (0 + 1)


def test_modern_normalizer_is_a_moving_average_from_100():
  model = SimpleNamespace(settings=retinanet_modern_settings(),
                          loss_normalizer=tf.Variable(100.0))
  first = retinanet_losses.loss_normalizer(model, tf.constant([3.0, 7.0]))
  assert float(first) == pytest.approx(0.9 * 100.0 + 0.1 * 10.0)
  second = retinanet_losses.loss_normalizer(model, tf.constant([0.0, 0.0]))  # max(0, 1)
  assert float(second) == pytest.approx(0.9 * 91.0 + 0.1 * 1.0)
  assert float(model.loss_normalizer) == pytest.approx(82.0, rel=1e-6)
