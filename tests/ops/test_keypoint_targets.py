"""Keypoint R-CNN's RoIs and heatmap targets (Detectron's roi_data/keypoint_rcnn.py), by hand."""

import numpy as np
import pytest
import tensorflow as tf

from tfdet.ops import keypoint_targets as kt


def test_heatmap_targets_by_hand():
  # RoI [10, 20, 66, 76]: 56 x 56 pixels, so one heatmap cell per pixel (S = 56).
  roi = np.array([10.0, 20.0, 66.0, 76.0], np.float32)
  kps = np.array([
      [10.0, 20.0, 2],  # top-left corner: cell (0, 0)
      [15.9, 27.2, 2],  # floor(5.9), floor(7.2): cell (5, 7) -> 7 * 56 + 5
      [66.0, 76.0, 1],  # on the right and bottom edges: the last cell, 55 * 56 + 55
      [66.0, 50.0, 2],  # on the right edge only: column 55, row 30
      [9.99, 30.0, 2],  # left of the RoI: weight 0
      [30.0, 76.5, 2],  # below it: weight 0
      [30.0, 30.0, 0],  # not labelled: weight 0
  ], np.float32)
  targets, weights = kt.heatmap_targets(kps, roi, heatmap_size=56)
  np.testing.assert_array_equal(weights.numpy(), [1, 1, 1, 1, 0, 0, 0])
  np.testing.assert_array_equal(targets.numpy()[:4], [0, 7 * 56 + 5, 55 * 56 + 55, 30 * 56 + 55])


def test_heatmap_targets_scale_with_the_roi_without_plus_one():
  # A 40 x 20 RoI on a 4 x 4 grid: x cells are 10 px wide, y cells 5 px (no "+1" in the size).
  roi = np.array([[0.0, 0.0, 40.0, 20.0]], np.float32)
  kps = np.array([[[9.999, 4.999, 2], [10.0, 5.0, 2], [39.0, 19.0, 2]]], np.float32)
  targets, weights = kt.heatmap_targets(kps, roi, heatmap_size=4)
  np.testing.assert_array_equal(targets.numpy(), [[0, 1 * 4 + 1, 3 * 4 + 3]])
  np.testing.assert_array_equal(weights.numpy(), [[1, 1, 1]])


# One image, detectron mode, image scale 2: the original-image boxes and keypoints are the
# resized ones halved. Person gt 0 is [0, 0, 40, 40] (original) with keypoints
# k0 (10, 10) visible, k1 (40, 40) labelled but occluded (v = 1, still counted), k2 (30, 30)
# not labelled. Person gt 1 [60, 0, 100, 40] has no labelled keypoint. Gt 2 is a crowd region.
ORIGINAL_GT = np.array([[0, 0, 40, 40], [60, 0, 100, 40], [100, 100, 140, 140]], np.float32)
GT_KEYPOINTS = np.zeros([3, 3, 3], np.float32)
GT_KEYPOINTS[0] = [[10, 10, 2], [40, 40, 1], [30, 30, 0]]
# Proposals (original pixels), with their (+1) IoU with gt 0:
ORIGINAL_PROPOSALS = np.array([
    [0, 0, 40, 20],  # 41 * 21 / 41^2 = 0.512: a keypoint RoI (k0 inside)
    [20, 20, 40, 40],  # 21^2 / 41^2 = 0.262 < 0.5: not one
    [0, 12, 40, 39],  # 41 * 28 / 41^2 = 0.683, but only k2 (not labelled) inside: not one
    [100, 100, 140, 140],  # the crowd box itself: it has no keypoints
    [0, 0, 40, 40],  # padding (not valid)
], np.float32)


def _sample(rois_per_image, seed, mode="detectron"):
  scale = 2.0
  return kt.sample_keypoint_rois(
      ORIGINAL_PROPOSALS[None] * scale, np.array([[True, True, True, True, False]]),
      ORIGINAL_GT[None] * scale, np.ones([1, 3], bool), np.array([[False, False, True]]),
      GT_KEYPOINTS[None] * np.array([scale, scale, 1], np.float32), np.array([scale]),
      convention="detectron", mode=mode, rois_per_image=rois_per_image, heatmap_size=4,
      seed=tf.constant(seed))


@pytest.mark.parametrize("mode", ["detectron", "modern"])
def test_keypoint_rois_by_hand(mode):
  # Keypoint RoIs: gt 0 itself and proposal 0, gt rows first. Modern mode's IoU (no +1)
  # picks the same: proposal 0 has 0.5, proposal 2 0.675.
  s = _sample(4, [1, 2], mode)
  np.testing.assert_array_equal(s.valid.numpy()[0], [True, True, False, False])
  np.testing.assert_allclose(s.rois.numpy()[0, :2], [ORIGINAL_GT[0] * 2, ORIGINAL_PROPOSALS[0] * 2])
  assert (s.rois.numpy()[0, 2:] == 0).all()
  # gt 0 on a 4 x 4 grid of 10 x 10 cells: k0 -> cell (1, 1) = 5; k1 on both far edges -> 15.
  # Proposal 0, cells 10 x 5: k0 -> (1, 2) = 9; k1 is below it (weight 0).
  np.testing.assert_array_equal(s.targets.numpy()[0], [[5, 15, 0], [9, 0, 0], [0, 0, 0],
                                                       [0, 0, 0]])
  np.testing.assert_array_equal(s.weights.numpy()[0], [[1, 1, 0], [1, 0, 0], [0, 0, 0],
                                                       [0, 0, 0]])


def test_keypoint_rois_cap_samples_without_replacement():
  seen = set()
  for seed in range(8):
    s = _sample(1, [3, seed])
    assert s.valid.numpy()[0].tolist() == [True]
    roi = tuple((s.rois.numpy()[0, 0] / 2).tolist())
    assert roi in {tuple(ORIGINAL_GT[0].tolist()), tuple(ORIGINAL_PROPOSALS[0].tolist())}
    seen.add(roi)
  assert len(seen) == 2  # either candidate can be drawn


def test_an_image_without_visible_keypoints_has_no_rois():
  s = kt.sample_keypoint_rois(
      ORIGINAL_PROPOSALS[None], np.ones([1, 5], bool), ORIGINAL_GT[None],
      np.ones([1, 3], bool), np.zeros([1, 3], bool), np.zeros([1, 3, 3, 3], np.float32),
      np.array([1.0]), convention="detectron", rois_per_image=8, heatmap_size=4,
      seed=tf.constant([0, 0]))
  assert not s.valid.numpy().any()
  assert (s.weights.numpy() == 0).all() and (s.targets.numpy() == 0).all()
