"""RetinaNet anchor targets, by hand: thresholds, the best-anchor rule, ties, the ignore band."""

import math

import numpy as np
import pytest
import tensorflow as tf

from tfdet.ops.retinanet_targets import retinanet_targets

# Ten anchors and six ground-truth boxes, "+1" (Detectron) geometry; IoUs by hand:
ANCHORS = np.array([
    [0, 0, 9, 9],  # A0: = G0, IoU 1
    [5, 0, 14, 9],  # A1: with G0 50 / 150 = 1/3 -> background
    [20, 20, 29, 29],  # A2: overlaps nothing -> background
    [0, 0, 19, 19],  # A3: with G0 100 / 400 = 0.25 -> background
    [40, 40, 49, 49],  # A4: with G1 100 / 144 = 0.694 -> foreground
    [100, 100, 109, 109],  # A5: G2's best, 100 / 256 = 0.39 < 0.4
    [4, 0, 13, 9],  # A6: with G0 60 / 140 = 0.43 -> ignored
    [200, 200, 209, 209],  # A7: with G3 100 / 240 = 0.417, tied with A8
    [214, 200, 223, 209],  # A8: with G3 100 / 240 = 0.417
    [300, 300, 309, 309],  # A9: = G4 (IoU 1); also G5's best (100 / 144)
], np.float32)
GT = np.array([
    [0, 0, 9, 9],  # G0 class 3
    [40, 40, 51, 51],  # G1 class 2
    [100, 100, 115, 115],  # G2 class 1
    [200, 200, 223, 209],  # G3 class 4
    [300, 300, 309, 309],  # G4 class 5
    [300, 300, 311, 311],  # G5 class 6: its best anchor A9 belongs to G4
    [0, 0, 50, 50],  # padding row (invalid)
], np.float32)
CLASSES = np.array([3, 2, 1, 4, 5, 6, 7], np.int32)
VALID = np.array([True] * 6 + [False])


def _targets(matching, convention="detectron", valid=VALID):
  return retinanet_targets(ANCHORS, GT[None], CLASSES[None], valid[None], convention=convention,
                           matching=matching)


def test_detectron_matching_by_hand():
  t = _targets("detectron")
  # A5 is G2's best anchor (step 2) but under 0.4: the background rule wins.
  # A9 is G5's best anchor, but takes the class of its own best gt, G4 (5).
  np.testing.assert_array_equal(t.labels[0], [3, 0, 0, 0, 2, 0, -1, 4, 4, 5])
  # Counted at step 4: A0, A4, A5, A7, A8, A9.
  assert float(t.num_foreground[0]) == 6.0


def test_modern_matching_keeps_low_quality_matches():
  t = _targets("modern")
  np.testing.assert_array_equal(t.labels[0], [3, 0, 0, 0, 2, 1, -1, 4, 4, 5])
  assert float(t.num_foreground[0]) == 6.0


def test_box_targets_by_hand():
  t = _targets("detectron")
  deltas = t.box_targets.numpy()[0]
  np.testing.assert_allclose(deltas[0], 0.0, atol=1e-6)  # A0 = G0
  # A4 (w 10, centre 45) onto G1 (w 12, centre 46): dx = 1 / 10, dw = log(12 / 10).
  np.testing.assert_allclose(deltas[4], [0.1, 0.1, math.log(1.2), math.log(1.2)], rtol=1e-5)
  # A7 (centre 205) onto G3 (w 24, h 10, centre (212, 205)): dx = 0.7, dw = log 2.4.
  np.testing.assert_allclose(deltas[7], [0.7, 0.0, math.log(2.4), 0.0], rtol=1e-5, atol=1e-6)
  for background in (1, 2, 3, 5, 6):
    np.testing.assert_array_equal(deltas[background], 0.0)


def test_modern_convention_targets():
  t = _targets("modern", convention="modern")
  # Modern widths (x2 - x1): A5 w 9 centre 104.5 onto G2 w 15 centre 107.5.
  np.testing.assert_allclose(t.box_targets.numpy()[0, 5],
                             [3 / 9, 3 / 9, math.log(15 / 9), math.log(15 / 9)], rtol=1e-5)
  # IoU of A4 and G1 is 81 / 121 = 0.67 in modern widths: foreground either way.
  assert int(t.labels[0, 4]) == 2


def test_images_without_ground_truth_are_all_background():
  t = _targets("detectron", valid=np.zeros(7, bool))
  np.testing.assert_array_equal(t.labels[0], 0)
  assert float(t.num_foreground[0]) == 0.0
  np.testing.assert_array_equal(t.box_targets, 0.0)


def test_batch_images_are_independent():
  gt = np.stack([GT, GT[::-1]])  # image 1: the same boxes in reverse order
  classes = np.stack([CLASSES, CLASSES[::-1]])
  valid = np.stack([VALID, VALID[::-1]])
  t = retinanet_targets(ANCHORS, gt, classes, valid, convention="detectron")
  np.testing.assert_array_equal(t.labels[0], t.labels[1])
  np.testing.assert_allclose(t.box_targets[0], t.box_targets[1], atol=1e-6)


def test_bad_matching_is_refused():
  with pytest.raises(ValueError, match="matching"):
    retinanet_targets(ANCHORS, GT[None], CLASSES[None], VALID[None], convention="detectron",
                      matching="torch")


def test_in_a_graph_with_static_shapes():
  fn = tf.function(lambda a, g: retinanet_targets(a, g, CLASSES[None], VALID[None],
                                                  convention="detectron"))
  t = fn(tf.constant(ANCHORS), tf.constant(GT[None]))
  assert t.labels.shape == (1, 10) and t.box_targets.shape == (1, 10, 4)
