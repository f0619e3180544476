"""Tests for tfdet.ops.soft_nms against hand-computed values and a numpy port."""

import math

import numpy as np
import pytest
import tensorflow as tf

from tests import numpy_reference as ref
from tfdet.ops.soft_nms import soft_nms_padded

OFF = {"detectron": 1.0, "modern": 0.0}


def _hand_boxes(convention):
  # Modern-convention geometry: IoU(A,B) = 1/2, IoU(A,C) = 1/3, IoU(B,C) = 1/2.
  boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 20], [0, 5, 10, 15]], np.float32)
  # Detectron boxes with the same "+1" geometry.
  return boxes - np.array([0, 0, OFF[convention], OFF[convention]], np.float32)


@pytest.mark.parametrize("convention", ["detectron", "modern"])
def test_linear_by_hand(convention):
  boxes = _hand_boxes(convention)[None]
  scores = np.array([[0.9, 0.8, 0.7]], np.float32)
  idx, s, n = soft_nms_padded(boxes, scores, max_output_size=4, method="linear",
                              iou_threshold=0.3, score_threshold=0.001, convention=convention)
  # A first; B -> 0.8 * 0.5 = 0.4, C -> 0.7 * 2/3; then C; B -> 0.4 * 0.5.
  np.testing.assert_array_equal(n.numpy(), [3])
  np.testing.assert_array_equal(idx.numpy(), [[0, 2, 1, 0]])
  np.testing.assert_allclose(s.numpy(), [[0.9, 0.7 * 2 / 3, 0.2, 0.0]], rtol=1e-6)


@pytest.mark.parametrize("convention", ["detectron", "modern"])
def test_gaussian_by_hand(convention):
  boxes = _hand_boxes(convention)[None]
  scores = np.array([[0.9, 0.8, 0.7]], np.float32)
  idx, s, n = soft_nms_padded(boxes, scores, max_output_size=3, method="gaussian", sigma=0.5,
                              convention=convention)
  b1 = 0.8 * math.exp(-0.25 / 0.5)  # 0.485
  c1 = 0.7 * math.exp(-(1 / 9) / 0.5)  # 0.561 > b1: C is picked second
  np.testing.assert_array_equal(n.numpy(), [3])
  np.testing.assert_array_equal(idx.numpy(), [[0, 2, 1]])
  np.testing.assert_allclose(s.numpy(), [[0.9, c1, b1 * math.exp(-0.5)]], rtol=1e-6)


def test_threshold_drop_and_isolated_low_box_kept():
  boxes = np.concatenate([_hand_boxes("modern"), [[100, 100, 110, 110]]], 0)[None]
  scores = np.array([[0.9, 0.8, 0.7, 0.0005]], np.float32)
  idx, s, n = soft_nms_padded(boxes, scores, max_output_size=4, method="linear",
                              iou_threshold=0.3, score_threshold=0.25, convention="modern")
  # B falls to 0.2 < 0.25 and is dropped; D starts below the threshold but is
  # never rescored, so Detectron keeps it.
  np.testing.assert_array_equal(n.numpy(), [3])
  np.testing.assert_array_equal(idx.numpy(), [[0, 2, 3, 0]])
  np.testing.assert_allclose(s.numpy(), [[0.9, 0.7 * 2 / 3, 0.0005, 0.0]], rtol=1e-6)


def test_hard_method_is_greedy_nms():
  boxes = _hand_boxes("modern")[None]
  scores = np.array([[0.9, 0.8, 0.7]], np.float32)
  idx, s, n = soft_nms_padded(boxes, scores, max_output_size=3, method="hard",
                              iou_threshold=0.4, convention="modern")
  np.testing.assert_array_equal(n.numpy(), [2])
  np.testing.assert_array_equal(idx.numpy(), [[0, 2, 0]])
  np.testing.assert_allclose(s.numpy(), [[0.9, 0.7, 0.0]])


def _random_case(rng, b, n):
  xy = rng.uniform(0, 100, (b, n, 2))
  wh = rng.uniform(1, 60, (b, n, 2))
  boxes = np.concatenate([xy, xy + wh], -1).astype(np.float32)
  return boxes, rng.uniform(0, 1, (b, n)).astype(np.float32)


@pytest.mark.parametrize("convention", ["detectron", "modern"])
@pytest.mark.parametrize("method", ["linear", "gaussian", "hard"])
def test_matches_numpy_reference(convention, method):
  rng = np.random.default_rng(7)
  boxes, scores = _random_case(rng, 3, 40)
  scores[1, 5:] = np.nan  # image 1 has only 5 real boxes
  scores[2, ::3] = -np.inf
  k = 30
  fn = tf.function(lambda b, s: soft_nms_padded(
      b, s, max_output_size=k, method=method, sigma=0.5, iou_threshold=0.3,
      score_threshold=0.05, convention=convention))
  idx, s, n = (t.numpy() for t in fn(boxes, scores))
  for i in range(3):
    ri, rs = ref.soft_nms(boxes[i], scores[i], method=method, sigma=0.5, nt=0.3, thresh=0.05,
                          offset=OFF[convention])
    m = min(k, len(ri))
    assert n[i] == m
    np.testing.assert_array_equal(idx[i, :m], ri[:m])
    np.testing.assert_allclose(s[i, :m], rs[:m], rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(idx[i, m:], 0)
    np.testing.assert_array_equal(s[i, m:], 0.0)
    assert np.all(np.diff(s[i, :m]) <= 1e-7)  # non-increasing
  assert n[1] <= 5


def test_valid_mask_and_empty_inputs():
  boxes = _hand_boxes("modern")[None]
  scores = np.array([[0.9, 0.8, 0.7]], np.float32)
  idx, s, n = soft_nms_padded(boxes, scores, max_output_size=3, convention="modern",
                              valid=[[False, True, False]])
  np.testing.assert_array_equal(n.numpy(), [1])
  np.testing.assert_array_equal(idx.numpy(), [[1, 0, 0]])
  idx, s, n = soft_nms_padded(np.zeros([2, 0, 4], np.float32), np.zeros([2, 0], np.float32),
                              max_output_size=2, convention="detectron")
  np.testing.assert_array_equal(n.numpy(), [0, 0])
  np.testing.assert_array_equal(idx.numpy(), np.zeros([2, 2]))
  idx, s, n = soft_nms_padded(boxes, scores, max_output_size=0, convention="modern")
  assert idx.shape == (1, 0) and n.numpy().tolist() == [0]


def test_all_nan_scores_and_bad_method():
  boxes = _hand_boxes("modern")[None]
  idx, s, n = soft_nms_padded(boxes, np.full([1, 3], np.nan, np.float32), max_output_size=3,
                              convention="modern")
  np.testing.assert_array_equal(n.numpy(), [0])
  np.testing.assert_array_equal(s.numpy(), np.zeros([1, 3]))
  with pytest.raises(ValueError):
    soft_nms_padded(boxes, np.ones([1, 3], np.float32), max_output_size=3, method="foo",
                    convention="modern")
