"""Tests for tfdet.ops.box_voting against hand-computed values and a numpy port."""

import math

import numpy as np
import pytest

from tests import numpy_reference as ref
from tfdet.ops.box_voting import SCORING_METHODS, box_voting

OFF = {"detectron": 1.0, "modern": 0.0}


def np_box_voting(top_boxes, top_scores, all_boxes, all_scores, thresh, method, beta, off):
  """Detectron's box voting semantics, one image, in float64."""
  ov = ref.iou_matrix(top_boxes, all_boxes, off)
  out_b = np.array(top_boxes, np.float64)
  out_s = np.array(top_scores, np.float64)
  for k in range(len(top_boxes)):
    sel = ov[k] >= thresh
    ws = all_scores[sel].astype(np.float64)
    out_b[k] = (all_boxes[sel] * ws[:, None]).sum(0) / ws.sum()
    if method == "TEMP_AVG":
      p = np.stack([ws, 1.0 - ws])
      x = np.exp(np.log(p / p.max(0)) / beta)
      out_s[k] = (x[0] / x.sum(0)).mean()
    elif method == "AVG":
      out_s[k] = ws.mean()
    elif method == "IOU_AVG":
      out_s[k] = (ws * ov[k, sel]).sum() / ov[k, sel].sum()
    elif method == "GENERALIZED_AVG":
      out_s[k] = np.mean(ws**beta)**(1.0 / beta)
    elif method == "QUASI_SUM":
      out_s[k] = ws.sum() / float(len(ws))**beta
  return out_b, out_s


def _hand(convention):
  off = OFF[convention]
  # Modern geometry: IoU(A, B) = 100 / 110, C is far away.
  all_boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 11], [50, 50, 60, 60]], np.float32)
  all_boxes -= np.array([0, 0, off, off], np.float32)
  return all_boxes, np.array([0.9, 0.6, 0.3], np.float32)


@pytest.mark.parametrize("convention", ["detectron", "modern"])
@pytest.mark.parametrize("method,beta,expected", [
    ("ID", 1.0, 0.85),
    ("AVG", 1.0, 0.75),
    ("TEMP_AVG", 1.0, 0.75),
    ("TEMP_AVG", 2.0, 0.5 * (3 / (3 + 1) + math.sqrt(0.6) / (math.sqrt(0.6) + math.sqrt(0.4)))),
    ("IOU_AVG", 1.0, (0.9 + 0.6 * 100 / 110) / (1 + 100 / 110)),
    ("GENERALIZED_AVG", 2.0, math.sqrt((0.81 + 0.36) / 2)),
    ("QUASI_SUM", 0.5, 1.5 / math.sqrt(2)),
])
def test_two_overlapping_boxes_by_hand(convention, method, beta, expected):
  all_boxes, all_scores = _hand(convention)
  kept_boxes = all_boxes[None, :1]
  boxes, scores = box_voting(kept_boxes, [[0.85]], all_boxes[None], all_scores[None],
                             iou_threshold=0.8, scoring_method=method, beta=beta,
                             convention=convention)
  off = OFF[convention]
  # (0.9 * A + 0.6 * B) / 1.5: only y2 differs, 10 and 11 -> 10.4.
  np.testing.assert_allclose(boxes.numpy(), [[[0, 0, 10 - off, 10.4 - off]]], rtol=1e-6)
  np.testing.assert_allclose(scores.numpy(), [[expected]], rtol=1e-6)


def test_threshold_is_inclusive():
  # IoU exactly 0.5 (modern): 100 / 200 votes at threshold 0.5.
  all_boxes = np.array([[[0, 0, 10, 10], [0, 0, 10, 20]]], np.float32)
  boxes, scores = box_voting(all_boxes[:, :1], [[0.5]], all_boxes, [[0.5, 0.5]],
                             iou_threshold=0.5, scoring_method="AVG", convention="modern")
  np.testing.assert_allclose(boxes.numpy(), [[[0, 0, 10, 15]]])


@pytest.mark.parametrize("convention", ["detectron", "modern"])
@pytest.mark.parametrize("method", SCORING_METHODS)
def test_matches_numpy_reference(convention, method):
  rng = np.random.default_rng(3)
  b, n, k = 2, 30, 6
  xy = rng.uniform(0, 50, (b, 5, 2))
  base = np.concatenate([xy, xy + rng.uniform(15, 30, (b, 5, 2))], -1)  # 5 clusters
  all_boxes = (base[:, rng.integers(0, 5, n)] + rng.normal(0, 1.5, (b, n, 4))).astype(np.float32)
  all_scores = rng.uniform(0.05, 1.0, (b, n)).astype(np.float32)
  kept = rng.integers(0, 20, (b, k))  # kept boxes are valid voters
  kept_boxes = np.take_along_axis(all_boxes, kept[..., None], 1)
  kept_scores = np.take_along_axis(all_scores, kept, 1) * 0.9
  all_valid = np.ones([b, n], bool)
  all_valid[1, 20:] = False
  kept_valid = np.ones([b, k], bool)
  kept_valid[0, -1] = False
  beta = 1.0 if method in ("ID", "AVG") else 1.7
  boxes, scores = box_voting(kept_boxes, kept_scores, all_boxes, all_scores, iou_threshold=0.6,
                             scoring_method=method, beta=beta, convention=convention,
                             kept_valid=kept_valid, all_valid=all_valid)
  for i in range(b):
    v = all_valid[i]
    rb, rs = np_box_voting(kept_boxes[i], kept_scores[i], all_boxes[i, v], all_scores[i, v],
                           0.6, method, beta, OFF[convention])
    rb[~kept_valid[i]] = 0.0
    rs[~kept_valid[i]] = 0.0
    np.testing.assert_allclose(boxes.numpy()[i], rb, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(scores.numpy()[i], rs, rtol=1e-5, atol=1e-6)


def test_no_voters_keeps_box_and_nan_never_votes():
  kept = np.array([[[0, 0, 10, 10]]], np.float32)
  all_boxes = np.array([[[0, 0, 10, 10], [50, 50, 60, 60]]], np.float32)
  boxes, scores = box_voting(kept, [[0.7]], all_boxes, [[np.nan, 0.4]], scoring_method="AVG",
                             convention="modern")
  np.testing.assert_allclose(boxes.numpy(), kept)
  np.testing.assert_allclose(scores.numpy(), [[0.7]])
  with pytest.raises(ValueError):
    box_voting(kept, [[0.7]], all_boxes, [[0.1, 0.4]], scoring_method="MAX", convention="modern")
