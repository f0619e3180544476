"""RPN anchor labels, Fast R-CNN RoI sampling and mask targets, checked by hand."""

import numpy as np
import pytest
import tensorflow as tf
from pycocotools import mask as mask_util

from tfdet.ops import boxes as box_ops
from tfdet.ops import mask_targets, roi_sampling, rpn_targets


def _anchor_grid():
  # 16x16 anchors at stride 8 over a 64x64 image, plus one crossing the border.
  xs = np.arange(0, 64, 8, dtype=np.float32)
  grid = np.array([[x, y, x + 15, y + 15] for y in xs for x in xs], np.float32)
  return np.concatenate([grid, [[-4.0, 0.0, 11.0, 15.0]]], 0).astype(np.float32)


def test_rpn_labels_by_hand():
  anchors = _anchor_grid()
  gt = np.zeros([1, 2, 4], np.float32)
  gt[0, 0] = [0, 0, 15, 15]  # exactly anchor 0: IoU 1
  gt[0, 1] = [33, 33, 44, 44]  # 12x12 box inside anchor (32, 32): best IoU 144/256
  valid = np.array([[True, True]])
  t = rpn_targets.rpn_targets(anchors, gt, valid, np.array([[64.0, 64.0]]),
                              convention="detectron", batch_size_per_image=256,
                              seed=tf.constant([0, 1]))
  labels = t.labels.numpy()[0]
  idx_32 = 4 * 8 + 4
  assert labels[0] == 1  # IoU 1 >= 0.7
  assert labels[idx_32] == 1  # best anchor of gt 1 although IoU 0.5625 < 0.7
  assert labels[-1] == -1  # crosses the border (x1 = -4 < 0)
  # Anchors that overlap a gt by IoU in [0.3, 0.7) are ignored: anchor (8, 0) has
  # IoU 8*16 / (2*256 - 128) = 1/3 with gt 0.
  assert labels[1] == -1
  # All 64 in-image anchors minus fg and ignored ones are background (< 256).
  iou = box_ops.pairwise_iou(tf.constant(anchors[:-1]), tf.constant(gt[0]),
                             convention="detectron").numpy().max(1)
  inside = (anchors[:-1, 2] < 64) & (anchors[:-1, 3] < 64)
  expect_bg = ((iou < 0.3) & inside).sum()
  assert (labels == 0).sum() == expect_bg
  np.testing.assert_allclose(t.box_targets.numpy()[0, 0], [0, 0, 0, 0], atol=1e-6)
  np.testing.assert_allclose(
      t.box_targets.numpy()[0, idx_32],
      box_ops.encode(tf.constant(gt[0, 1]), tf.constant(anchors[idx_32]),
                     convention="detectron").numpy(), rtol=1e-5)
  assert (t.box_targets.numpy()[0][labels != 1] == 0).all()


@pytest.mark.parametrize("sampling", ["detectron", "modern"])
def test_rpn_sampling_quotas(sampling):
  rng = np.random.default_rng(1)
  xs = np.arange(0, 256, 4, dtype=np.float32)
  anchors = np.array([[x, y, x + 31, y + 31] for y in xs for x in xs], np.float32)
  gt = np.array([[[20, 20, 140, 140], [100, 30, 220, 200], [0, 0, 0, 0]]], np.float32)
  valid = np.array([[True, True, False]])
  t = rpn_targets.rpn_targets(anchors, gt, valid, np.array([[288.0, 288.0]]),
                              convention="modern", batch_size_per_image=64,
                              sampling=sampling, seed=tf.constant(rng.integers(0, 100, 2)))
  labels = t.labels.numpy()[0]
  assert (labels == 1).sum() <= 32
  assert (labels >= 0).sum() <= 64
  if sampling == "modern":
    assert (labels >= 0).sum() == 64


def test_rpn_no_gt_gives_only_background():
  anchors = _anchor_grid()[:-1]
  t = rpn_targets.rpn_targets(anchors, np.zeros([1, 1, 4], np.float32), np.array([[False]]),
                              np.array([[64.0, 64.0]]), convention="detectron")
  inside = (anchors[:, 2] < 64) & (anchors[:, 3] < 64)
  np.testing.assert_array_equal(t.labels.numpy()[0], np.where(inside, 0, -1))


def test_roi_sampling_by_hand():
  gt = np.array([[[0, 0, 99, 99], [200, 200, 299, 299], [0, 0, 0, 0]]], np.float32)
  gt_classes = np.array([[3, 7, 0]])
  gt_valid = np.array([[True, True, False]])
  crowd = np.array([[False, True, False]])  # the second gt is a crowd region
  proposals = np.array([[[0, 0, 99, 89],  # IoU 0.9 with gt 0 -> fg class 3
                         [0, 0, 49, 99],  # IoU 0.5 -> fg
                         [150, 150, 170, 170],  # IoU 0 -> bg
                         [210, 210, 299, 299],  # matches the crowd box
                         [0, 0, 10, 10]]], np.float32)  # padding
  pvalid = np.array([[True, True, True, True, False]])
  for mode in ("detectron", "modern"):
    s = roi_sampling.sample_rois(proposals, pvalid, gt, gt_classes, gt_valid, crowd,
                                 np.array([2.0]), convention="detectron", mode=mode,
                                 batch_size_per_image=8, fg_fraction=0.5,
                                 seed=tf.constant([5, 5]))
    labels = s.labels.numpy()[0]
    valid = s.valid.numpy()[0]
    fg_rows = s.rois.numpy()[0][s.is_fg.numpy()[0]]
    if mode == "detectron":
      # fg: gt 0 itself, proposals 0, 1, and proposal 3 matched to the crowd box.
      assert sorted(labels[:4].tolist()) == [3, 3, 3, 7]
      assert valid.sum() == 5  # + 1 background (proposal 2)
    else:
      assert sorted(labels[:3].tolist()) == [3, 3, 3]
      assert valid.sum() == 5  # proposal 3 has IoU 0 with gt 0 -> background
    assert (labels[valid & ~s.is_fg.numpy()[0]] == 0).all()
    assert not valid[-1]
    # Targets encode each fg RoI onto gt 0 (or the crowd box) in original coordinates.
    for row, roi in zip(np.nonzero(s.is_fg.numpy()[0])[0], fg_rows, strict=True):
      g = gt[0, s.matched_gt.numpy()[0, row]]
      scale = 0.5 if mode == "detectron" else 1.0
      expect = box_ops.encode(tf.constant(g * scale), tf.constant(roi * scale),
                              weights=(10.0, 10.0, 5.0, 5.0), convention="detectron")
      np.testing.assert_allclose(s.box_targets.numpy()[0, row], expect.numpy(), atol=1e-5)


def _pycocotools_in_box(poly, box, m):
  w = max(box[2] - box[0], 1.0)
  h = max(box[3] - box[1], 1.0)
  p = np.array(poly, np.float64)
  p[0::2] = (p[0::2] - box[0]) * m / w
  p[1::2] = (p[1::2] - box[1]) * m / h
  return mask_util.decode(mask_util.frPyObjects([p.tolist()], m, m))[:, :, 0]


def test_rasterizer_matches_pycocotools_closely():
  rng = np.random.default_rng(2)
  polys, ids, boxes, refs = [], [], [], []
  v = 16
  for _ in range(40):
    k = int(rng.integers(3, v + 1))
    ang = np.sort(rng.uniform(0, 2 * np.pi, k))
    rad = rng.uniform(10, 40, k)
    c = rng.uniform(40, 60, 2)
    pts = np.stack([c[0] + rad * np.cos(ang), c[1] + rad * np.sin(ang)], 1)
    box = np.array([pts[:, 0].min() - 3, pts[:, 1].min() - 2, pts[:, 0].max() + 1,
                    pts[:, 1].max() + 4], np.float32)
    padded = np.zeros([v, 2], np.float32)
    padded[:k] = pts
    polys.append(padded)
    ids.append(np.where(np.arange(v) < k, 0, -1))
    boxes.append(box)
    refs.append(_pycocotools_in_box(pts.ravel().tolist(), box, 28))
  got = mask_targets.rasterize_polygons_in_boxes(
      tf.constant(np.stack(polys)), tf.constant(np.stack(ids), tf.int32),
      tf.constant(np.stack(boxes)), 28).numpy()
  agreement = (got == np.stack(refs)).mean()
  assert agreement > 0.99, agreement


def test_mask_targets_two_part_instance_by_hand():
  # Instance 0: two squares [0,10]^2 and [20,30]x[0,10]; the RoI is [0,0,40,10]
  # so at M = 4 columns map to x in [0,10), [10,20), [20,30), [30,40).
  v = 10
  polys = np.zeros([1, 2, v, 2], np.float32)
  ids = -np.ones([1, 2, v], np.int32)
  polys[0, 0, :8] = [[0, 0], [10, 0], [10, 10], [0, 10], [20, 0], [30, 0], [30, 10], [20, 10]]
  ids[0, 0, :8] = [0, 0, 0, 0, 1, 1, 1, 1]
  polys[0, 1, :3] = [[100, 100], [120, 100], [110, 120]]  # far-away instance 1
  ids[0, 1, :3] = 0
  rois = np.array([[[0, 0, 40, 10], [0, 0, 5, 5]]], np.float32)
  targets, matched = mask_targets.mask_targets(
      rois, np.array([[True, False]]), polys, ids, np.array([[True, True]]),
      np.array([[False, False]]), np.array([1.0]), resolution=4, convention="detectron",
      mode="modern")
  np.testing.assert_array_equal(targets.numpy()[0, 0], np.tile([[1, 0, 1, 0]], (4, 1)))
  assert targets.numpy()[0, 1].sum() == 0  # not foreground
  assert matched.numpy()[0, 0] == 0


def test_overlapping_parts_are_united_not_xored():
  # Two overlapping squares of one instance: their union, with no hole where they overlap.
  polys = tf.constant([[[0.0, 0.0], [6.0, 0.0], [6.0, 4.0], [0.0, 4.0],
                        [2.0, 0.0], [8.0, 0.0], [8.0, 4.0], [2.0, 4.0]]])
  ids = tf.constant([[0, 0, 0, 0, 1, 1, 1, 1]])
  got = mask_targets.rasterize_polygons_in_boxes(polys, ids, tf.constant([[0.0, 0.0, 8.0, 4.0]]),
                                                 4).numpy()[0]
  np.testing.assert_array_equal(got, np.ones([4, 4]))


def test_polygon_edges_close_each_polygon():
  polys = tf.constant([[[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [5.0, 5.0], [6.0, 5.0],
                        [6.0, 6.0], [0.0, 0.0]]])
  ids = tf.constant([[0, 0, 0, 1, 1, 1, -1]])
  start, end, valid, first = mask_targets.polygon_edges(polys, ids)
  np.testing.assert_array_equal(first.numpy()[0, :6], [0, 0, 0, 3, 3, 3])
  np.testing.assert_array_equal(end.numpy()[0, 2], [0.0, 0.0])  # closes polygon 0
  np.testing.assert_array_equal(end.numpy()[0, 5], [5.0, 5.0])  # closes polygon 1
  np.testing.assert_array_equal(valid.numpy()[0], [1, 1, 1, 1, 1, 1, 0])
