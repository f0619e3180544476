"""Batched bounding-box voting (Gidaris & Komodakis, arXiv:1505.01749).

Reproduces Detectron's ``box_voting`` (``utils/boxes.py``), which
``core/test.py`` applies per class after NMS when ``TEST.BBOX_VOTE.ENABLED``:
each kept box is replaced by the score-weighted average of all boxes (of the
same class, after the score threshold) whose IoU with it is ``>=
iou_threshold`` (TEST.BBOX_VOTE.VOTE_TH). Its score is recomputed from the
voters' scores ``ws`` by ``scoring_method`` (TEST.BBOX_VOTE.SCORING_METHOD):

* ``"ID"``: the kept score, unchanged.
* ``"TEMP_AVG"``: mean over voters of ``softmax([log ws, log(1 - ws)] / beta)[0]``
  (each probability normalized by ``max(ws, 1 - ws)`` first, as Detectron does).
* ``"AVG"``: ``mean(ws)``.
* ``"IOU_AVG"``: mean of ``ws`` weighted by the voters' IoUs with the kept box.
* ``"GENERALIZED_AVG"``: ``mean(ws ** beta) ** (1 / beta)``.
* ``"QUASI_SUM"``: ``sum(ws) / count ** beta``.

Note: Detectron's test.py does not pass TEST.BBOX_VOTE.SCORING_METHOD_BETA to
box_voting, so its results use beta = 1.0 whatever the config says.

A kept box with no voter (impossible when it is itself among the voters with a
positive score) keeps its box and score; Detectron would divide by zero.
Boxes follow `tfdet.ops.boxes`.
"""

import tensorflow as tf

from tfdet.ops.boxes import pairwise_iou

SCORING_METHODS = ("ID", "TEMP_AVG", "AVG", "IOU_AVG", "GENERALIZED_AVG", "QUASI_SUM")


def _safe_div(num, den):
  return tf.where(den > 0.0, num / tf.where(den > 0.0, den, 1.0), 0.0)


def _temp_avg_terms(ws, beta):
  """Detectron's temperature-smoothed P(class) of each voter: [...] -> [...]."""
  p_fg = ws
  p_bg = 1.0 - ws
  p_max = tf.maximum(p_fg, p_bg)
  x_fg = tf.exp(tf.math.log(p_fg / p_max) / beta)
  x_bg = tf.exp(tf.math.log(p_bg / p_max) / beta)
  return x_fg / (x_fg + x_bg)


def box_voting(kept_boxes, kept_scores, all_boxes, all_scores, *, iou_threshold=0.8,
               scoring_method="ID", beta=1.0, convention, kept_valid=None, all_valid=None):
  """Refines kept boxes (and optionally their scores) by voting.

  Args:
    kept_boxes: [B, K, 4] float32, boxes that survived NMS.
    kept_scores: [B, K] float32, their (possibly soft-NMS) scores.
    all_boxes: [B, N, 4] float32, the voters (Detectron: the class's boxes
      above the score threshold, before NMS).
    all_scores: [B, N] float32, the voters' original scores.
    iou_threshold: float, a box votes when IoU >= iou_threshold.
    scoring_method: one of SCORING_METHODS.
    beta: float, the scoring method's hyperparameter.
    convention: "detectron" or "modern".
    kept_valid: optional [B, K] bool; invalid rows come out as zeros.
    all_valid: optional [B, N] bool; invalid voters (and non-finite scores)
      never vote.

  Returns:
    boxes: [B, K, 4] float32 voted boxes.
    scores: [B, K] float32 new scores.
  """
  if scoring_method not in SCORING_METHODS:
    raise ValueError(f"box_voting: scoring_method must be one of {SCORING_METHODS}, "
                     f"got {scoring_method!r}")
  kept_boxes = tf.convert_to_tensor(kept_boxes, tf.float32)
  kept_scores = tf.convert_to_tensor(kept_scores, tf.float32)
  all_boxes = tf.convert_to_tensor(all_boxes, tf.float32)
  all_scores = tf.convert_to_tensor(all_scores, tf.float32)
  voter_ok = tf.math.is_finite(all_scores)
  if all_valid is not None:
    voter_ok = tf.logical_and(voter_ok, tf.cast(all_valid, tf.bool))
  all_boxes = tf.where(voter_ok[..., None], all_boxes, 0.0)
  ws = tf.where(voter_ok, all_scores, 0.0)  # [B, N]

  iou = pairwise_iou(kept_boxes, all_boxes, convention=convention)  # [B, K, N]
  votes = tf.logical_and(iou >= iou_threshold, voter_ok[:, None, :])  # [B, K, N]
  vote_f = tf.cast(votes, tf.float32)
  count = tf.reduce_sum(vote_f, axis=-1)  # [B, K]
  w = vote_f * ws[:, None, :]  # [B, K, N]
  w_sum = tf.reduce_sum(w, axis=-1)  # [B, K]
  voted = tf.matmul(w, all_boxes) / tf.where(w_sum > 0.0, w_sum, 1.0)[..., None]
  has_votes = w_sum > 0.0
  boxes = tf.where(has_votes[..., None], voted, kept_boxes)

  if scoring_method == "ID":
    scores = kept_scores
  elif scoring_method == "TEMP_AVG":
    terms = tf.where(votes, _temp_avg_terms(ws, beta)[:, None, :], 0.0)
    scores = _safe_div(tf.reduce_sum(terms, axis=-1), count)
  elif scoring_method == "AVG":
    scores = _safe_div(w_sum, count)
  elif scoring_method == "IOU_AVG":
    iou_w = vote_f * iou
    scores = _safe_div(tf.reduce_sum(iou_w * ws[:, None, :], axis=-1),
                       tf.reduce_sum(iou_w, axis=-1))
  elif scoring_method == "GENERALIZED_AVG":
    powered = tf.where(votes, tf.pow(ws[:, None, :], beta), 0.0)
    mean = _safe_div(tf.reduce_sum(powered, axis=-1), count)
    scores = tf.pow(mean, 1.0 / beta)
  else:  # "QUASI_SUM"
    scores = _safe_div(w_sum, tf.pow(count, beta))
  scores = tf.where(count > 0.0, scores, kept_scores)

  if kept_valid is not None:
    kept_valid = tf.cast(kept_valid, tf.bool)
    boxes = tf.where(kept_valid[..., None], boxes, 0.0)
    scores = tf.where(kept_valid, scores, 0.0)
  return boxes, scores
