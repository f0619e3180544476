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


def _iou_modern(a, b):
  """[N, 4] x [M, 4] IoU without the +1 (numpy, independent of tfdet)."""
  iw = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]),
               0, None)
  ih = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]),
               0, None)
  inter = iw * ih
  area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
  area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
  return inter / (area_a[:, None] + area_b[None, :] - inter)


@pytest.mark.parametrize("sampling", ["detectron", "modern"])
def test_rpn_sampling_quotas(sampling):
  # 64 x 64 anchors of width 31 (modern: x2 - x1) at stride 4, all inside the 288 x 288 image.
  xs = np.arange(0, 256, 4, dtype=np.float32)
  anchors = np.array([[x, y, x + 31, y + 31] for y in xs for x in xs], np.float32)
  # gt 0 and gt 1 are 48 x 48: the 5 x 5 anchors inside each (x, y in g .. g + 16) tie for
  # its best IoU 31^2 / 48^2 = 961 / 2304 = 0.417 (in [0.3, 0.7): foreground only as a gt's
  # best). gt 2 is an anchor: IoU 1, and its 4 neighbours 4 px away have IoU 27 * 31 /
  # (2 * 961 - 837) = 837 / 1085 = 0.771 >= 0.7 (diagonal ones 729 / 1193 = 0.611).
  # Foreground candidates: 25 + 25 + 5 = 55 > the quota 0.5 * 64 = 32.
  gt = np.array([[[20, 20, 68, 68], [120, 40, 168, 88], [200, 200, 231, 231], [0, 0, 0, 0]]],
                np.float32)
  valid = np.array([[True, True, True, False]])
  t = rpn_targets.rpn_targets(anchors, gt, valid, np.array([[288.0, 288.0]]),
                              convention="modern", batch_size_per_image=64,
                              sampling=sampling, seed=tf.constant([3, 4]))
  labels = t.labels.numpy()[0]
  iou = _iou_modern(anchors, gt[0, :3])  # [N, 3]
  max_iou = iou.max(1)
  is_best = (iou == iou.max(0, keepdims=True)).any(1)
  assert is_best.sum() == 51 and (max_iou >= 0.7).sum() == 5  # the 55 candidates, by hand
  # The quota binds: exactly 32 foreground anchors, all candidates. The candidates' IoU is
  # >= 0.417 >= 0.3, so Detectron's background draws (IoU < 0.3) cannot take any back.
  fg = labels == 1
  assert fg.sum() == 32
  assert (is_best | (max_iou >= 0.7))[fg].all()
  bg = labels == 0
  assert (max_iou[bg] < 0.3).all()
  assert ((labels == -1) | fg | bg).all()
  if sampling == "modern":
    assert bg.sum() == 64 - 32  # without replacement: exactly the rest of the batch
  else:
    # 32 draws with replacement among the ~3,900 anchors of IoU < 0.3: a repeat is rare
    # (32 * 31 / 2 / 3,900 = 0.13 expected repeats), and repeats only lower the count.
    assert 28 <= bg.sum() <= 32
  # Foreground targets encode each anchor onto its best gt; others are 0.
  matched = gt[0, iou.argmax(1)]
  expect = box_ops.encode(tf.constant(matched[fg]), tf.constant(anchors[fg]),
                          convention="modern").numpy()
  np.testing.assert_allclose(t.box_targets.numpy()[0][fg], expect, rtol=1e-5, atol=1e-6)
  assert (t.box_targets.numpy()[0][~fg] == 0).all()


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
    # Targets encode each fg RoI onto gt 0 in original coordinates: also proposal 3, whose
    # best match is the crowd box (Detectron regresses onto the best non-crowd gt).
    for row, roi in zip(np.nonzero(s.is_fg.numpy()[0])[0], fg_rows, strict=True):
      g = gt[0, 0]
      scale = 0.5 if mode == "detectron" else 1.0
      expect = box_ops.encode(tf.constant(g * scale), tf.constant(roi * scale),
                              weights=(10.0, 10.0, 5.0, 5.0), convention="detectron")
      np.testing.assert_allclose(s.box_targets.numpy()[0, row], expect.numpy(), atol=1e-5)


def test_roi_matched_to_a_crowd_box_regresses_onto_the_best_non_crowd_box():
  # gt A [0, 0, 99, 99] (class 3), B [100, 0, 199, 99] (class 5), crowd C [50, 0, 149, 99]
  # (class 7). Proposal [60, 0, 159, 99] has (+1) IoU 9000 / 11000 = 0.82 with C, 6000 / 14000
  # = 0.43 with B and 4000 / 16000 = 0.25 with A. Detectron: foreground of C's class, its
  # regression target onto B (roidb._compute_targets); modern: C cannot match, 0.43 < 0.5 ->
  # background.
  gt = np.array([[[0, 0, 99, 99], [100, 0, 199, 99], [50, 0, 149, 99]]], np.float32)
  proposal = np.array([[[60, 0, 159, 99]]], np.float32)
  args = (proposal, np.ones([1, 1], bool), gt, np.array([[3, 5, 7]]), np.ones([1, 3], bool),
          np.array([[False, False, True]]), np.array([1.0]))
  s = roi_sampling.sample_rois(*args, convention="detectron", mode="detectron",
                               batch_size_per_image=4, fg_fraction=1.0, seed=tf.constant([1, 1]))
  row = int(np.nonzero((s.rois.numpy()[0] == proposal[0, 0]).all(1) & s.valid.numpy()[0])[0][0])
  assert s.is_fg.numpy()[0, row] and s.labels.numpy()[0, row] == 7
  expect = box_ops.encode(tf.constant(gt[0, 1]), tf.constant(proposal[0, 0]),
                          weights=(10.0, 10.0, 5.0, 5.0), convention="detectron")
  np.testing.assert_allclose(s.box_targets.numpy()[0, row], expect.numpy(), atol=1e-5)
  m = roi_sampling.sample_rois(*args, convention="detectron", mode="modern",
                               batch_size_per_image=4, fg_fraction=1.0, seed=tf.constant([1, 1]))
  row = int(np.nonzero((m.rois.numpy()[0] == proposal[0, 0]).all(1) & m.valid.numpy()[0])[0][0])
  assert not m.is_fg.numpy()[0, row] and m.labels.numpy()[0, row] == 0


def test_roi_sampling_foreground_quota_binds():
  # R = 12 RoIs, fg_fraction 0.25: at most round(0.25 * 12) = 3 foreground. Candidates of
  # overlap >= 0.5 ((+1) IoU with gt 0 = [0, 0, 99, 99] or gt 1 = [200, 200, 299, 299]):
  # the 2 gt boxes (1.0) and 4 proposals: 100 x 90 / 100^2 = 0.9, 50 x 100 / 100^2 = 0.5,
  # 100 x 80 / 100^2 = 0.8 and 90 x 100 / 100^2 = 0.9 -- 6 > 3.
  gt = np.array([[[0, 0, 99, 99], [200, 200, 299, 299]]], np.float32)
  gt_classes = np.array([[3, 5]])
  fg_proposals = [[0, 0, 99, 89], [0, 0, 49, 99], [200, 200, 299, 279], [210, 200, 299, 299]]
  # 10 background proposals along y = 120..140, between the gt boxes: IoU 0 with both.
  bg_proposals = [[x, 120, x + 20, 140] for x in range(0, 200, 20)]
  proposals = np.array([fg_proposals + bg_proposals], np.float32)
  pvalid = np.ones([1, 14], bool)
  candidates = np.concatenate([gt[0], proposals[0]])  # gt first, as sample_rois orders them
  is_fg_candidate = np.arange(16) < 6
  class_of = np.array([3, 5, 3, 3, 5, 5] + [0] * 10)
  for mode in ("detectron", "modern"):
    for seed in ([0, 1], [7, 3], [11, 2]):
      s = roi_sampling.sample_rois(proposals, pvalid, gt, gt_classes, np.ones([1, 2], bool),
                                   np.zeros([1, 2], bool), np.array([1.0]),
                                   convention="detectron", mode=mode, batch_size_per_image=12,
                                   fg_fraction=0.25, seed=tf.constant(seed))
      is_fg = s.is_fg.numpy()[0]
      np.testing.assert_array_equal(is_fg, np.arange(12) < 3)  # exactly 3, first
      assert s.valid.numpy()[0].all()  # 3 fg + 9 of the 10 background candidates
      rows = [int(np.nonzero((candidates == roi).all(1))[0][0]) for roi in s.rois.numpy()[0]]
      assert len(set(rows)) == 12  # without replacement
      assert is_fg_candidate[rows[:3]].all() and not is_fg_candidate[rows[3:]].any()
      np.testing.assert_array_equal(s.labels.numpy()[0], class_of[rows] * is_fg)


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


@pytest.mark.parametrize("mode", ["detectron", "modern"])
@pytest.mark.parametrize("scale", [1.0, 2.0])
def test_mask_targets_two_part_instance_by_hand(mode, scale):
  # In original pixels: instance 0 is two squares [0,10]^2 and [20,30]x[0,10]; the RoI is
  # [0,0,40,10], so at M = 4 columns map to x in [0,10), [10,20), [20,30), [30,40). The
  # batch holds them `scale` times larger (the resized image); detectron mode divides RoIs
  # and polygons by the scale, modern mode rasterizes in the resized image: the same target.
  v = 10
  polys = np.zeros([1, 3, v, 2], np.float32)
  ids = -np.ones([1, 3, v], np.int32)
  polys[0, 0, :8] = [[0, 0], [10, 0], [10, 10], [0, 10], [20, 0], [30, 0], [30, 10], [20, 10]]
  ids[0, 0, :8] = [0, 0, 0, 0, 1, 1, 1, 1]
  polys[0, 1, :3] = [[100, 100], [120, 100], [110, 120]]  # far-away instance 1
  ids[0, 1, :3] = 0
  # Instance 2 is a crowd region exactly on the RoI (IoU 1, more than instance 0's
  # 31 * 11 / (41 * 11) in the +1 rule): a crowd region is never a mask target.
  polys[0, 2, :4] = [[0, 0], [40, 0], [40, 10], [0, 10]]
  ids[0, 2, :4] = 0
  rois = np.array([[[0, 0, 40, 10], [0, 0, 5, 5]]], np.float32)
  targets, matched = mask_targets.mask_targets(
      rois * scale, np.array([[True, False]]), polys * scale, ids,
      np.array([[True, True, True]]), np.array([[False, False, True]]), np.array([scale]),
      resolution=4, convention="detectron", mode=mode)
  np.testing.assert_array_equal(targets.numpy()[0, 0], np.tile([[1, 0, 1, 0]], (4, 1)))
  assert targets.numpy()[0, 1].sum() == 0  # not foreground
  assert matched.numpy()[0, 0] == 0


def test_detectron_mask_targets_match_instances_in_original_pixels():
  # Which instance a RoI takes depends on the scale under the +1 IoU: RoI [0,0,19,4] in
  # original pixels; instance A's polygon box [0,0,19,2], B's [0,0,10.5,4], both inside it:
  #   original (x1):  IoU A = 20 * 3 / (20 * 5) = 0.6,   IoU B = 11.5 * 5 / 100 = 0.575 -> A
  #   resized (x2):   IoU A = 39 * 5 / (39 * 9) = 0.556, IoU B = 22 * 9 / (39 * 9) = 0.564 -> B
  # Detectron mode matches in original pixels (A), modern mode in the resized image (B).
  v = 4
  polys = np.zeros([1, 2, v, 2], np.float32)
  polys[0, 0] = [[0, 0], [19, 0], [19, 2], [0, 2]]  # A
  polys[0, 1] = [[0, 0], [10.5, 0], [10.5, 4], [0, 4]]  # B
  ids = np.zeros([1, 2, v], np.int32)
  rois = np.array([[[0, 0, 19, 4]]], np.float32)
  expected = {
      # A inside the RoI at M = 4: rows are y in [0, 1), [1, 2), ... of height 4 / 4 = 1
      # (w = max(x2 - x1, 1), no +1): centres 0.5, 1.5 are inside y <= 2 -> rows 0, 1.
      "detectron": (0, [[1, 1, 1, 1], [1, 1, 1, 1], [0, 0, 0, 0], [0, 0, 0, 0]]),
      # B: columns of width 38 / 4 = 9.5 (resized), centres 4.75, 14.25, 23.75, 33.25;
      # B's x <= 21 -> columns 0, 1.
      "modern": (1, [[1, 1, 0, 0]] * 4),
  }
  for mode, (instance, target) in expected.items():
    targets, matched = mask_targets.mask_targets(
        rois * 2.0, np.array([[True]]), polys * 2.0, ids, np.array([[True, True]]),
        np.array([[False, False]]), np.array([2.0]), resolution=4, convention="detectron",
        mode=mode)
    assert matched.numpy()[0, 0] == instance, mode
    np.testing.assert_array_equal(targets.numpy()[0, 0], target)


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
