"""Hard NMS in both conventions (against a numpy greedy NMS) and FPN levels."""

import numpy as np
import pytest
import tensorflow as tf

from tests import numpy_reference as ref
from tfdet.ops import fpn_levels, nms


@pytest.mark.parametrize("convention,off", [("detectron", 1.0), ("modern", 0.0)])
def test_nms_matches_numpy_greedy(convention, off):
  rng = np.random.default_rng(3)
  b, n, k = 3, 60, 20
  xy = rng.uniform(0, 40, (b, n, 2))
  wh = rng.uniform(1, 20, (b, n, 2))
  boxes = np.concatenate([xy, xy + wh], -1).astype(np.float32)
  scores = rng.uniform(size=(b, n)).astype(np.float32)
  idx, num = nms.nms_padded(tf.constant(boxes), tf.constant(scores), max_output_size=k,
                            iou_threshold=0.5, convention=convention)
  for i in range(b):
    # Detectron drops at IoU >= threshold, torchvision at >.
    expect = ref.greedy_nms(boxes[i], scores[i], 0.5, off, max_output=k,
                            suppress_at_equal=bool(off))
    assert num[i] == len(expect)
    np.testing.assert_array_equal(idx[i, :num[i]], expect)
    np.testing.assert_array_equal(idx[i, num[i]:], 0)


def test_nms_plus_one_changes_the_answer():
  # 10-pixel boxes shifted by 4: modern IoU = 6*10/140 = 0.43, detectron 7*11/165 = 0.47.
  boxes = tf.constant([[[0.0, 0.0, 10.0, 10.0], [4.0, 0.0, 14.0, 10.0]]])
  scores = tf.constant([[0.9, 0.8]])
  _, n_det = nms.nms_padded(boxes, scores, max_output_size=2, iou_threshold=0.45,
                            convention="detectron")
  _, n_mod = nms.nms_padded(boxes, scores, max_output_size=2, iou_threshold=0.45,
                            convention="modern")
  assert n_det.numpy()[0] == 1 and n_mod.numpy()[0] == 2


def test_nms_ignores_non_finite_scores_and_boxes():
  boxes = tf.constant([[[0.0, 0.0, 10.0, 10.0], [np.nan, 0.0, 10.0, 10.0],
                        [20.0, 20.0, 30.0, 30.0]]])
  scores = tf.constant([[np.nan, 0.5, 0.4]])
  idx, num = nms.nms_padded(boxes, scores, max_output_size=3, iou_threshold=0.5,
                            convention="detectron")
  assert num.numpy()[0] == 2
  np.testing.assert_array_equal(idx.numpy()[0, :2], [1, 2])


def test_nms_rejects_bad_ranks():
  with pytest.raises(ValueError, match="boxes must be"):
    nms.nms_padded(tf.zeros([4, 4]), tf.zeros([4]), max_output_size=2, iou_threshold=0.5,
                   convention="modern")


def test_gather_padded_zeroes_padding():
  values = tf.reshape(tf.range(12, dtype=tf.float32), [2, 3, 2])
  out = nms.gather_padded(values, tf.constant([[2, 0], [1, 0]]), tf.constant([2, 1])).numpy()
  np.testing.assert_array_equal(out, [[[4, 5], [0, 1]], [[8, 9], [0, 0]]])


def test_fpn_levels_detectron_rule():
  # sqrt(area) with +1: 224 -> level 4, 112 -> 3, 448 -> 5, tiny -> 2, huge -> 5.
  b = tf.constant([[0.0, 0.0, 223.0, 223.0], [0.0, 0.0, 111.0, 111.0],
                   [0.0, 0.0, 447.0, 447.0], [0.0, 0.0, 3.0, 3.0], [0.0, 0.0, 2000.0, 2000.0],
                   [0.0, 0.0, 110.0, 110.0], [np.nan, 0.0, 1.0, 1.0]])
  got = fpn_levels.assign_levels(b, min_level=2, max_level=5, convention="detectron").numpy()
  np.testing.assert_array_equal(got, [4, 3, 5, 2, 5, 2, 2])
  # Without the +1 the 224-box (223 wide) falls to level 3.
  got = fpn_levels.assign_levels(b[:1], min_level=2, max_level=5, convention="modern").numpy()
  np.testing.assert_array_equal(got, [3])


def test_fpn_levels_bad_range():
  with pytest.raises(ValueError, match="min_level"):
    fpn_levels.assign_levels(tf.zeros([1, 4]), min_level=5, max_level=2, convention="modern")


def test_nms_threshold_equality_follows_the_convention():
  # A 10x10 box (detectron widths) and its upper half: IoU = 50 / 100 exactly.
  boxes = tf.constant([[[0.0, 0.0, 9.0, 9.0], [0.0, 0.0, 9.0, 4.0]]])  # IoU 50/100
  scores = tf.constant([[0.9, 0.8]])
  _, n = nms.nms_padded(boxes, scores, max_output_size=2, iou_threshold=0.5,
                        convention="detectron")
  assert n.numpy()[0] == 1  # Detectron drops at IoU >= threshold
  modern = tf.constant([[[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 5.0]]])  # IoU 50/100
  _, n = nms.nms_padded(modern, scores, max_output_size=2, iou_threshold=0.5,
                        convention="modern")
  assert n.numpy()[0] == 2  # torchvision keeps at IoU == threshold


def test_nms_edge_cases_empty_inf_and_origin_boxes():
  idx, n = nms.nms_padded(tf.zeros([2, 0, 4]), tf.zeros([2, 0]), max_output_size=3,
                          iou_threshold=0.5, convention="detectron")
  assert idx.shape == (2, 3) and n.numpy().tolist() == [0, 0]
  boxes = tf.constant([[[-5.0, -5.0, 0.0, 0.0], [10.0, 10.0, 20.0, 20.0],
                        [30.0, 30.0, 40.0, 40.0]]])
  scores = tf.constant([[0.9, -np.inf, 0.1]])
  idx, n = nms.nms_padded(boxes, scores, max_output_size=3, iou_threshold=0.5,
                          convention="modern", score_threshold=0.05)
  assert n.numpy()[0] == 2
  np.testing.assert_array_equal(idx.numpy()[0, :2], [0, 2])
