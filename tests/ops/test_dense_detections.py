"""RetinaNet inference: per-level candidates, decoding, per-class NMS, the top detections.

Checked by hand and against a numpy port of Detectron's
``test_retinanet.im_detect_bbox`` (loops, per-class greedy NMS).
"""

import math

import numpy as np
import pytest
import tensorflow as tf

from tests import numpy_reference as ref
from tfdet.ops import dense_detections as dd

OFF = {"detectron": 1.0, "modern": 0.0}
CLIP = math.log(1000.0 / 16.0)  # BBOX_XFORM_CLIP


def _np_decode(anchors, deltas, off, clip=CLIP):
  """Detectron's bbox_transform (weights 1) in either convention."""
  w = anchors[:, 2] - anchors[:, 0] + off
  h = anchors[:, 3] - anchors[:, 1] + off
  cx = anchors[:, 0] + 0.5 * w
  cy = anchors[:, 1] + 0.5 * h
  dw = np.minimum(deltas[:, 2], clip)
  dh = np.minimum(deltas[:, 3], clip)
  pcx, pcy = deltas[:, 0] * w + cx, deltas[:, 1] * h + cy
  pw, ph = np.exp(dw) * w, np.exp(dh) * h
  return np.stack([pcx - 0.5 * pw, pcy - 0.5 * ph, pcx + 0.5 * pw - off, pcy + 0.5 * ph - off], 1)


def np_im_detect_bbox(level_scores, level_deltas, level_anchors, info, *, convention, th=0.05,
                      top_th=0.0, top_n=1000, nms=0.5, dets=100):
  """One image; level_scores[l]: [N_l, K] probabilities -> (boxes, scores, classes) by score."""
  off = OFF[convention]
  per_class = {}
  for level, (s, d, a) in enumerate(zip(level_scores, level_deltas, level_anchors, strict=True)):
    threshold = top_th if (level == len(level_scores) - 1 and top_th is not None) else th
    flat = s.ravel()
    cand = np.where(flat > threshold)[0]
    cand = cand[np.argsort(-flat[cand], kind="stable")][:top_n]
    anchor_ids, classes = cand // s.shape[1], cand % s.shape[1]
    boxes = _np_decode(a[anchor_ids], d[anchor_ids], off) / info[2]
    boxes[:, 0::2] = np.clip(boxes[:, 0::2], 0, info[4] - off)
    boxes[:, 1::2] = np.clip(boxes[:, 1::2], 0, info[3] - off)
    for box, score, cls in zip(boxes, flat[cand], classes, strict=True):
      per_class.setdefault(int(cls) + 1, []).append((box, score))
  rows = []
  for cls, items in per_class.items():
    b = np.array([x[0] for x in items])
    sc = np.array([x[1] for x in items])
    keep = ref.greedy_nms(b, sc, nms, off, suppress_at_equal=bool(off))
    rows += [(sc[k], cls, b[k]) for k in keep]
  rows.sort(key=lambda r: -r[0])
  rows = rows[:dets]
  return (np.array([r[2] for r in rows]).reshape(-1, 4), np.array([r[0] for r in rows]),
          np.array([r[1] for r in rows], np.int64))


def _random_case(rng, batch=2, sizes=((12, 16), (6, 8), (3, 4)), num_anchors=3, k=5):
  scores, deltas, anchors = [], [], []
  for level, (h, w) in enumerate(sizes):
    stride = 8 * 2 ** level
    n = h * w * num_anchors
    cells = np.array([[-s, -s, s - 1, s - 1] for s in (stride, 1.5 * stride, 2 * stride)])
    shifts = np.stack(np.meshgrid(np.arange(w) * stride, np.arange(h) * stride), -1).reshape(-1, 2)
    grid = (np.concatenate([shifts, shifts], 1)[:, None] + cells[None]).reshape(-1, 4)
    anchors.append(grid.astype(np.float32))
    scores.append(rng.beta(0.3, 3.0, (batch, n, k)).astype(np.float32))
    deltas.append(rng.normal(0, 0.3, (batch, n, 4)).astype(np.float32))
  info = np.array([[96, 128, 1.5, 64, 85], [90, 120, 0.75, 120, 160]], np.float32)[:batch]
  return scores, deltas, anchors, info


@pytest.mark.parametrize("convention", ["detectron", "modern"])
def test_matches_a_port_of_detectrons_test_path(convention):
  rng = np.random.default_rng(3)
  scores, deltas, anchors, info = _random_case(rng)
  top_th = 0.0 if convention == "detectron" else None
  got = dd.dense_detections(scores, deltas, anchors, info, convention=convention,
                            score_threshold=0.05, top_level_score_threshold=top_th,
                            pre_nms_top_n=40, nms_threshold=0.5, max_detections=30)
  for i in range(2):
    boxes, sc, cls = np_im_detect_bbox([s[i] for s in scores], [d[i] for d in deltas], anchors,
                                       info[i], convention=convention, top_th=top_th,
                                       top_n=40, dets=30)
    n = int(got.num[i])
    assert n == len(sc) > 10
    np.testing.assert_allclose(got.scores[i, :n], sc, rtol=1e-6)
    np.testing.assert_array_equal(got.classes[i, :n], cls)
    np.testing.assert_allclose(got.boxes[i, :n], boxes, rtol=1e-5, atol=1e-3)


def _one_level(scores, anchors, image_info=(100, 100, 1.0, 100, 100)):
  """One level, one image: scores [N, K], zero deltas."""
  s = np.asarray(scores, np.float32)[None]
  return [s], [np.zeros(s.shape[:2] + (4,), np.float32)], [np.asarray(anchors, np.float32)], \
      np.array([image_info], np.float32)


def test_nms_threshold_rule_and_classes_by_hand():
  # A (10 x 10) inside B (20 x 10): "+1" IoU 100 / 200 = 0.5, so Detectron's >= drops B;
  # C is A's box in another class (kept).
  anchors = [[0, 0, 9, 9], [0, 0, 19, 9], [0, 0, 9, 9]]
  scores = [[0.9, 0.0], [0.8, 0.0], [0.0, 0.7]]
  got = dd.dense_detections(*_one_level(scores, anchors), convention="detectron",
                            top_level_score_threshold=None, max_detections=5)
  assert int(got.num[0]) == 2
  np.testing.assert_allclose(got.scores[0, :2], [0.9, 0.7])
  np.testing.assert_array_equal(got.classes[0], [1, 2, 0, 0, 0])
  np.testing.assert_allclose(got.boxes[0, :2], [[0, 0, 9, 9], [0, 0, 9, 9]], atol=1e-4)
  np.testing.assert_array_equal(got.boxes[0, 2:], 0.0)
  # Modern IoU 81 / 171 = 0.47 keeps B.
  modern = dd.dense_detections(*_one_level(scores, anchors), convention="modern",
                               top_level_score_threshold=None, max_detections=5)
  np.testing.assert_allclose(modern.scores[0, :int(modern.num[0])], [0.9, 0.8, 0.7])


def test_thresholds_top_level_rule_and_per_level_top_n():
  level_a = [[0.5, 0.06], [0.04, 0.3]]  # level 0: 0.04 is not a candidate
  level_b = [[0.01, 0.02]]  # the top level: candidates above 0.0 (Detectron's P7 rule)
  anchors_a = [[0, 0, 9, 9], [50, 50, 59, 59]]
  anchors_b = [[20, 20, 29, 29]]
  info = np.array([[100, 100, 1.0, 100, 100]], np.float32)
  inputs = ([np.float32([level_a]), np.float32([level_b])],
            [np.zeros([1, 2, 4], np.float32), np.zeros([1, 1, 4], np.float32)],
            [np.float32(anchors_a), np.float32(anchors_b)], info)
  got = dd.dense_detections(*inputs, convention="detectron", max_detections=10)
  np.testing.assert_allclose(got.scores[0, :int(got.num[0])], [0.5, 0.3, 0.06, 0.02, 0.01])
  without = dd.dense_detections(*inputs, convention="detectron", max_detections=10,
                                top_level_score_threshold=None)
  np.testing.assert_allclose(without.scores[0, :int(without.num[0])], [0.5, 0.3, 0.06])
  top1 = dd.dense_detections(*inputs, convention="detectron", max_detections=10,
                             pre_nms_top_n=1)  # one candidate per level
  np.testing.assert_allclose(top1.scores[0, :int(top1.num[0])], [0.5, 0.02])


def test_boxes_are_decoded_scaled_and_clipped():
  # Anchor [10, 10, 29, 29] (w 20), dx = 0.5, dw = log 2 -> centre 30, w 40 -> [10, 10, 49, 29]
  # in the resized image; scale 2 -> [5, 5, 24.5, 14.5]; clipped to a 12 x 20 original.
  s = [np.float32([[[0.9]]])]
  d = [np.float32([[[0.5, 0.0, math.log(2.0), 0.0]]])]
  a = [np.float32([[10, 10, 29, 29]])]
  info = np.float32([[40, 60, 2.0, 12, 20]])
  got = dd.dense_detections(s, d, a, info, convention="detectron", max_detections=3)
  np.testing.assert_allclose(got.boxes[0, 0], [5, 5, 19, 11], rtol=1e-6)  # x <= W - 1
  modern = dd.dense_detections(s, d, a, info, convention="modern", max_detections=3)
  # Modern: w 19, centre 19.5 + 9.5 = 29, new w 38 -> [10, 10, 48, 29] / 2, x <= W.
  np.testing.assert_allclose(modern.boxes[0, 0], [5, 5, 20, 12], rtol=1e-6)


def test_no_candidates_and_static_shapes_in_a_graph():
  fn = tf.function(lambda s: dd.dense_detections(
      [s], [tf.zeros([1, 2, 4])], [tf.constant([[0, 0, 9, 9], [5, 5, 20, 20]], tf.float32)],
      tf.constant([[50, 50, 1.0, 50, 50]]), convention="detectron", max_detections=7,
      top_level_score_threshold=None))
  got = fn(tf.fill([1, 2, 3], 0.01))
  assert got.boxes.shape == (1, 7, 4) and got.scores.shape == (1, 7)
  assert int(got.num[0]) == 0
  np.testing.assert_array_equal(got.classes, 0)
