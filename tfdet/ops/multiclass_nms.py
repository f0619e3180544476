"""Per-class detection post-processing: threshold, NMS, voting, top-D.

Reproduces Detectron's ``box_results_with_nms_and_limit`` (``core/test.py``)
with static shapes. Scores have C columns with column 0 the background
(skipped). For each image and each foreground class j:

1. candidates are the boxes with ``score > score_threshold`` (TEST.SCORE_THRESH),
2. NMS at ``iou_threshold`` (TEST.NMS): hard (`tfdet.ops.nms.nms_padded`) or
   soft (`tfdet.ops.soft_nms.soft_nms_padded`, TEST.SOFT_NMS),
3. optionally box voting of the survivors with that class's candidates
   (`tfdet.ops.box_voting.box_voting`, TEST.BBOX_VOTE),

then the ``max_detections`` (TEST.DETECTIONS_PER_IM) highest scores over all
classes are kept. Detectron keeps every score ``>=`` the max_detections-th
highest, so ties at that score can give it more than max_detections; here the
output holds exactly ``max_detections`` rows and among tied scores the earlier
class (then the earlier NMS rank) wins, which is the order Detectron stacks its
results in. Outputs are sorted by descending score.

Each class keeps at most ``max_per_class`` NMS survivors. NMS (hard or soft)
emits them in non-increasing score order, so ``max_detections`` per class
loses nothing unless box voting changes the scores; the default then keeps
all N. Hard NMS is `tfdet.ops.nms.nms_padded`: IoU >= threshold suppresses
in "detectron" (Detectron's CPU NMS), IoU > threshold in "modern". Boxes
follow `tfdet.ops.boxes`.
"""

import dataclasses
from typing import NamedTuple

import tensorflow as tf

from tfdet.ops.box_voting import box_voting as box_voting_op
from tfdet.ops.nms import gather_padded, nms_padded
from tfdet.ops.soft_nms import soft_nms_padded


class Detections(NamedTuple):
  """Padded detections of a batch, sorted by descending score; rows past `num` are zeros.

  Attributes:
    boxes: [B, D, 4] float32.
    scores: [B, D] float32.
    classes: [B, D] int32 in 1..C-1.
    num: [B] int32.
  """
  boxes: tf.Tensor
  scores: tf.Tensor
  classes: tf.Tensor
  num: tf.Tensor


@dataclasses.dataclass(frozen=True)
class SoftNMSOptions:
  """Detectron's TEST.SOFT_NMS settings.

  iou_threshold None means the multiclass NMS threshold (test.py passes
  TEST.NMS); score_threshold 0.0001 is the value test.py hard-codes.
  """
  method: str = "linear"
  sigma: float = 0.5
  iou_threshold: float | None = None
  score_threshold: float = 0.0001


@dataclasses.dataclass(frozen=True)
class BoxVotingOptions:
  """Detectron's TEST.BBOX_VOTE settings (VOTE_TH, SCORING_METHOD, ..._BETA)."""
  iou_threshold: float = 0.8
  scoring_method: str = "ID"
  beta: float = 1.0


def _options(value, cls, name):
  if value is None or isinstance(value, cls):
    return value
  if isinstance(value, dict):
    return cls(**value)
  raise TypeError(f"multiclass_nms: {name} must be None, a dict or {cls.__name__}, "
                  f"got {type(value).__name__}")


def multiclass_nms(boxes, scores, *, score_threshold=0.05, iou_threshold=0.5,
                   max_detections=100, convention, soft_nms=None, box_voting=None,
                   class_agnostic_boxes=False, valid=None, max_per_class=None):
  """Detectron's per-class NMS and per-image detection limit, batched.

  Args:
    boxes: [B, N, C, 4] float32 class-specific boxes (column 0, background,
      is ignored), or [B, N, 4] when `class_agnostic_boxes`.
    scores: [B, N, C] float32 class probabilities, background in column 0.
      C must be static. NaN scores are never selected.
    score_threshold: float, a candidate needs score > score_threshold.
    iou_threshold: float, the NMS threshold.
    max_detections: int, D, detections per image.
    convention: "detectron" or "modern".
    soft_nms: None for hard NMS, or a SoftNMSOptions (or a dict of its fields).
    box_voting: None, or a BoxVotingOptions (or a dict of its fields).
    class_agnostic_boxes: True when `boxes` is [B, N, 4], shared by classes.
    valid: optional [B, N] bool, False for padded rows.
    max_per_class: int, NMS survivors kept per class; None picks
      min(N, D), or N when box voting recomputes scores (exact). N must then
      be static.

  Returns:
    `Detections` with D = max_detections.
  """
  soft_nms = _options(soft_nms, SoftNMSOptions, "soft_nms")
  box_voting = _options(box_voting, BoxVotingOptions, "box_voting")
  boxes = tf.convert_to_tensor(boxes, tf.float32)
  scores = tf.convert_to_tensor(scores, tf.float32)
  want_rank = 3 if class_agnostic_boxes else 4
  if scores.shape.rank != 3 or boxes.shape.rank != want_rank:
    raise ValueError(f"multiclass_nms: scores must be [B, N, C] and boxes rank {want_rank}; "
                     f"got scores {scores.shape}, boxes {boxes.shape}")
  num_classes = scores.shape[2]
  if num_classes is None or num_classes < 2:
    raise ValueError(f"multiclass_nms: need a static C >= 2 classes, got {scores.shape}")
  if max_detections < 0:
    raise ValueError(f"multiclass_nms: max_detections must be >= 0, got {max_detections}")
  num_fg = num_classes - 1
  batch = tf.shape(scores)[0]
  n = tf.shape(scores)[1]
  if max_per_class is None:
    rescores = box_voting is not None and box_voting.scoring_method != "ID"
    if scores.shape[1] is None:
      if rescores:
        raise ValueError("multiclass_nms: box voting with rescoring needs a static N, "
                         "or pass max_per_class")
      max_per_class = max_detections
    else:
      max_per_class = scores.shape[1] if rescores else min(scores.shape[1], max_detections)
  k = int(max_per_class)

  # Classes folded into the batch: image b, class j -> row b * (C - 1) + (j - 1).
  fg_scores = tf.transpose(scores[:, :, 1:], [0, 2, 1])  # [B, C-1, N]
  if class_agnostic_boxes:
    fg_boxes = tf.broadcast_to(boxes[:, None], [batch, num_fg, n, 4])  # [B, C-1, N, 4]
  else:
    fg_boxes = tf.transpose(boxes[:, :, 1:, :], [0, 2, 1, 3])  # [B, C-1, N, 4]
  fg_scores = tf.reshape(fg_scores, [-1, n])  # [B*(C-1), N]
  fg_boxes = tf.reshape(fg_boxes, [-1, n, 4])  # [B*(C-1), N, 4]
  cand = fg_scores > score_threshold  # NaN -> False
  if valid is not None:
    valid_rows = tf.repeat(tf.cast(valid, tf.bool), num_fg, axis=0)  # [B*(C-1), N]
    cand = tf.logical_and(cand, valid_rows)
  cand_scores = tf.where(cand, fg_scores, float("-inf"))

  if k == 0:
    idx = tf.zeros([batch * num_fg, 0], tf.int32)
    num = tf.zeros([batch * num_fg], tf.int32)
    kept_scores = tf.zeros([batch * num_fg, 0], tf.float32)
  elif soft_nms is None:
    idx, num = nms_padded(fg_boxes, cand_scores, max_output_size=k,
                          iou_threshold=iou_threshold, convention=convention)
    kept_scores = gather_padded(cand_scores, idx, num)
  else:
    soft_iou = iou_threshold if soft_nms.iou_threshold is None else soft_nms.iou_threshold
    idx, kept_scores, num = soft_nms_padded(
        fg_boxes, cand_scores, max_output_size=k, method=soft_nms.method,
        sigma=soft_nms.sigma, iou_threshold=soft_iou,
        score_threshold=soft_nms.score_threshold, convention=convention, valid=cand)
  kept_boxes = gather_padded(fg_boxes, idx, num)  # [B*(C-1), K, 4]
  kept_valid = tf.range(k)[None, :] < num[:, None]  # [B*(C-1), K]
  if box_voting is not None:
    kept_boxes, kept_scores = box_voting_op(
        kept_boxes, kept_scores, fg_boxes, fg_scores,
        iou_threshold=box_voting.iou_threshold, scoring_method=box_voting.scoring_method,
        beta=box_voting.beta, convention=convention, kept_valid=kept_valid,
        all_valid=cand)

  # Top D over all classes; flat order is class-major, so ties go to the earlier class.
  flat_scores = tf.reshape(tf.where(kept_valid, kept_scores, float("-inf")),
                           [batch, num_fg * k])  # [B, (C-1)*K]
  flat_valid = tf.reshape(kept_valid, [batch, num_fg * k])
  flat_boxes = tf.reshape(kept_boxes, [batch, num_fg * k, 4])
  top = min(max_detections, num_fg * k)
  _, order = tf.math.top_k(flat_scores, k=top)  # [B, top], stable for ties
  top_valid = tf.gather(flat_valid, order, batch_dims=1)
  num_det = tf.reduce_sum(tf.cast(top_valid, tf.int32), axis=1)  # valid rows come first
  det_scores = tf.where(top_valid, tf.gather(flat_scores, order, batch_dims=1), 0.0)
  det_boxes = tf.where(top_valid[..., None], tf.gather(flat_boxes, order, batch_dims=1), 0.0)
  det_classes = tf.where(top_valid, order // k + 1, 0) if k > 0 else tf.zeros_like(order)
  pad = max_detections - top
  return Detections(
      boxes=tf.pad(det_boxes, [[0, 0], [0, pad], [0, 0]]),
      scores=tf.pad(det_scores, [[0, 0], [0, pad]]),
      classes=tf.pad(tf.cast(det_classes, tf.int32), [[0, 0], [0, pad]]),
      num=num_det)
