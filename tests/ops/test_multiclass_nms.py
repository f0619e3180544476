"""Tests for tfdet.ops.multiclass_nms against a numpy port of Detectron's
box_results_with_nms_and_limit, and hand-built cases."""


import numpy as np
import pytest
import tensorflow as tf

from tests import numpy_reference as ref
from tfdet.ops.multiclass_nms import (
    BoxVotingOptions,
    SoftNMSOptions,
    multiclass_nms,
)

OFF = {"detectron": 1.0, "modern": 0.0}


def np_vote(top_b, top_s, all_b, all_s, thresh, method, off):
  out_b, out_s = top_b.astype(np.float64).copy(), top_s.astype(np.float64).copy()
  for k in range(len(top_b)):
    sel = np.array([ref.iou(top_b[k], q, off) >= thresh for q in all_b], bool)
    ws = all_s[sel].astype(np.float64)
    out_b[k] = (all_b[sel] * ws[:, None]).sum(0) / ws.sum()
    if method == "AVG":
      out_s[k] = ws.mean()
  return out_b, out_s


def np_detectron_postprocess(boxes, scores, *, score_thresh, nms, dets_per_im, off,
                             soft=None, vote=None):
  """One image: boxes [N, C, 4], scores [N, C] -> (boxes, scores, classes) by score."""
  rows = []
  for j in range(1, scores.shape[1]):
    inds = np.where(scores[:, j] > score_thresh)[0]
    bj, sj = boxes[inds, j], scores[inds, j]
    if soft is None:
      keep = ref.greedy_nms(bj, sj, nms, off)  # Detectron's CPU NMS: drops at IoU >= nms
      kb, ks = bj[keep], sj[keep]
    else:
      keep, ks = ref.soft_nms(bj, sj, method=soft, sigma=0.5, nt=nms, thresh=0.0001, offset=off)
      kb = bj[keep]
    if vote is not None and len(kb):
      kb, ks = np_vote(kb, ks, bj, sj, 0.8, vote, off)
    rows += [(ks[i], j, kb[i]) for i in range(len(ks))]
  if len(rows) > dets_per_im:
    image_thresh = np.sort([r[0] for r in rows])[-dets_per_im]
    rows = [r for r in rows if r[0] >= image_thresh]
  rows.sort(key=lambda r: -r[0])  # stable: class-major order among ties
  rows = rows[:dets_per_im]
  return (np.array([r[2] for r in rows]).reshape(-1, 4), np.array([r[0] for r in rows]),
          np.array([r[1] for r in rows], np.int64))


def _random_inputs(rng, b, n, c):
  xy = rng.uniform(0, 80, (b, n, 1, 2)) + rng.normal(0, 4, (b, n, c, 2))
  wh = rng.uniform(20, 50, (b, n, 1, 2)) + rng.normal(0, 4, (b, n, c, 2))
  boxes = np.concatenate([xy, xy + wh], -1).astype(np.float32)
  scores = rng.dirichlet(np.full(c, 0.3), (b, n)).astype(np.float32)
  return boxes, scores


def _check(out, boxes, scores, d, off, **kw):
  for i in range(boxes.shape[0]):
    rb, rs, rc = np_detectron_postprocess(boxes[i], scores[i], score_thresh=0.05, nms=0.5,
                                          dets_per_im=d, off=off, **kw)
    m = len(rs)
    assert out.num.numpy()[i] == m
    np.testing.assert_allclose(out.scores.numpy()[i, :m], rs, rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(out.classes.numpy()[i, :m], rc)
    np.testing.assert_allclose(out.boxes.numpy()[i, :m], rb, rtol=1e-5, atol=1e-3)
    np.testing.assert_array_equal(out.scores.numpy()[i, m:], 0.0)
    np.testing.assert_array_equal(out.classes.numpy()[i, m:], 0)
    np.testing.assert_array_equal(out.boxes.numpy()[i, m:], 0.0)


@pytest.mark.parametrize("convention", ["detectron", "modern"])
@pytest.mark.parametrize("d", [100, 12])
def test_hard_nms_matches_reference(convention, d):
  rng = np.random.default_rng(11)
  boxes, scores = _random_inputs(rng, 2, 40, 5)
  scores[1, :, 2] = np.nan  # class 2 of image 1 is never selected
  out = multiclass_nms(boxes, scores, max_detections=d, convention=convention)
  assert out.boxes.shape == (2, d, 4)
  assert out.classes.dtype == tf.int32
  assert not np.any(out.classes.numpy()[1] == 2)
  _check(out, boxes, scores, d, OFF[convention])
  if d == 12:
    assert np.all(out.num.numpy() == 12)


@pytest.mark.parametrize("convention,method", [("detectron", "linear"), ("modern", "gaussian")])
def test_soft_nms_matches_reference(convention, method):
  rng = np.random.default_rng(5)
  boxes, scores = _random_inputs(rng, 2, 30, 4)
  out = multiclass_nms(boxes, scores, max_detections=20, convention=convention,
                       soft_nms={"method": method})
  _check(out, boxes, scores, 20, OFF[convention], soft=method)


@pytest.mark.parametrize("convention,method", [("detectron", "AVG"), ("modern", "ID")])
def test_box_voting_matches_reference(convention, method):
  rng = np.random.default_rng(9)
  boxes, scores = _random_inputs(rng, 2, 30, 4)
  out = multiclass_nms(boxes, scores, max_detections=15, convention=convention,
                       box_voting=BoxVotingOptions(scoring_method=method))
  _check(out, boxes, scores, 15, OFF[convention], vote=method)


def test_soft_nms_with_box_voting_matches_reference():
  rng = np.random.default_rng(2)
  boxes, scores = _random_inputs(rng, 1, 25, 3)
  out = multiclass_nms(boxes, scores, max_detections=100, convention="detectron",
                       soft_nms=SoftNMSOptions(method="linear"), box_voting={})
  _check(out, boxes, scores, 100, 1.0, soft="linear", vote="ID")


def test_class_agnostic_boxes_and_valid_mask():
  rng = np.random.default_rng(4)
  boxes, scores = _random_inputs(rng, 2, 20, 4)
  agnostic = boxes[:, :, 0]
  valid = np.ones([2, 20], bool)
  valid[0, 10:] = False
  out = multiclass_nms(agnostic, scores, max_detections=30, convention="modern",
                       class_agnostic_boxes=True, valid=valid)
  tiled = np.repeat(agnostic[:, :, None], 4, axis=2)
  masked = scores.copy()
  masked[0, 10:] = 0.0
  _check(out, tiled, masked, 30, 0.0)


def test_all_below_threshold_and_empty():
  boxes = np.zeros([2, 5, 3, 4], np.float32) + [0, 0, 10, 10]
  scores = np.full([2, 5, 3], 0.05, np.float32)  # not > 0.05
  for kw in ({}, {"soft_nms": {}}, {"box_voting": {"scoring_method": "AVG"}}):
    out = multiclass_nms(boxes, scores, max_detections=7, convention="detectron", **kw)
    np.testing.assert_array_equal(out.num.numpy(), [0, 0])
    np.testing.assert_array_equal(out.scores.numpy(), np.zeros([2, 7]))
    np.testing.assert_array_equal(out.boxes.numpy(), np.zeros([2, 7, 4]))
  out = multiclass_nms(np.zeros([1, 0, 3, 4], np.float32), np.zeros([1, 0, 3], np.float32),
                       max_detections=4, convention="modern")
  np.testing.assert_array_equal(out.num.numpy(), [0])
  assert out.boxes.shape == (1, 4, 4)


def test_ties_at_the_limit_keep_exactly_max_detections():
  # Three classes give the same isolated box the same score; the limit is 2.
  boxes = np.tile(np.array([10, 10, 40, 40], np.float32), [1, 1, 4, 1])
  scores = np.array([[[0.1, 0.3, 0.3, 0.3]]], np.float32)
  out = multiclass_nms(boxes, scores, max_detections=2, convention="detectron")
  np.testing.assert_array_equal(out.num.numpy(), [2])
  np.testing.assert_array_equal(out.classes.numpy(), [[1, 2]])
  np.testing.assert_allclose(out.scores.numpy(), [[0.3, 0.3]])


def test_hard_nms_suppresses_at_equal_iou_in_detectron_convention():
  # Detectron IoU of [0,0,9,9] and [0,0,9,19] is 100 / 200 = 0.5 exactly;
  # Detectron's CPU NMS suppresses at IoU >= TEST.NMS.
  boxes = np.array([[0, 0, 9, 9], [0, 0, 9, 19]], np.float32)[None, :, None]
  boxes = np.repeat(boxes, 2, axis=2)
  scores = np.array([[[0.1, 0.9], [0.1, 0.8]]], np.float32)
  out = multiclass_nms(boxes, scores, iou_threshold=0.5, max_detections=5,
                       convention="detectron")
  np.testing.assert_array_equal(out.num.numpy(), [1])


def test_bad_options():
  boxes = np.zeros([1, 2, 3, 4], np.float32)
  scores = np.zeros([1, 2, 3], np.float32)
  with pytest.raises(TypeError):
    multiclass_nms(boxes, scores, convention="modern", soft_nms="linear")
  with pytest.raises(ValueError):
    multiclass_nms(boxes[:, :, 0], scores, convention="modern")
