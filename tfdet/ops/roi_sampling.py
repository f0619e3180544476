"""Fast R-CNN training RoIs: sampling, labels and box regression targets.

Detectron's roi_data/fast_rcnn.py (_sample_rois) with the roidb bookkeeping
of json_dataset.add_proposals, batched with static shapes. Per image:

1. Candidates are the ground-truth boxes followed by the proposals.
2. Each candidate's overlap is its best IoU with a gt box, and its class
   that box's class. A non-crowd gt candidate has overlap 1 with itself;
   crowd gt candidates get -1 and are never sampled.
3. Foreground: overlap >= `fg_thresh`, at most
   ``round(fg_fraction * batch_size_per_image)`` chosen without replacement.
   Background: overlap in [`bg_thresh_lo`, `bg_thresh_hi`), filling the rest
   of `batch_size_per_image`, also without replacement.
4. Regression targets encode each foreground RoI onto its gt box with the
   R-CNN weights (10, 10, 5, 5).

``mode="detectron"`` keeps two of Detectron's habits that move numbers
slightly: IoUs and targets are computed in *original-image* coordinates
(the roidb's), which differs from the resized image under the "+1"
convention; and proposals are matched against every gt box *including
crowd regions* (add_proposals in end-to-end training does not filter crowd
overlaps). ``mode="modern"`` (detectron2) works in resized coordinates and
ignores crowd boxes altogether.

Rows are ordered foreground first, then background, then padding; the
output has exactly `batch_size_per_image` rows per image.
"""

import dataclasses

import tensorflow as tf

from tfdet.ops import boxes as box_ops
from tfdet.ops.sampling import subsample_without_replacement

MODES = ("detectron", "modern")


@dataclasses.dataclass(frozen=True)
class SampledRois:
  """Sampled RoIs of a batch; R = batch_size_per_image.

  rois: [B, R, 4] float32 in the resized image.
  labels: [B, R] int32 class (0 = background and padding).
  box_targets: [B, R, 4] float32 deltas, zero unless foreground.
  matched_gt: [B, R] int32 index of the gt box each RoI overlaps most.
  is_fg: [B, R] bool. valid: [B, R] bool (False for padding rows).
  """
  rois: tf.Tensor
  labels: tf.Tensor
  box_targets: tf.Tensor
  matched_gt: tf.Tensor
  is_fg: tf.Tensor
  valid: tf.Tensor


def sample_rois(proposals, proposals_valid, gt_boxes, gt_classes, gt_valid, gt_is_crowd,
                image_scale, *, convention, mode="detectron", batch_size_per_image=512,
                fg_fraction=0.25, fg_thresh=0.5, bg_thresh_hi=0.5, bg_thresh_lo=0.0,
                box_weights=(10.0, 10.0, 5.0, 5.0), seed=None):
  """Samples the RoIs that train the box (and mask / keypoint) heads.

  Args:
    proposals: [B, P, 4] float32 in the resized image.
    proposals_valid: [B, P] bool.
    gt_boxes: [B, M, 4] float32 in the resized image.
    gt_classes: [B, M] int32 in 1..K.
    gt_valid: [B, M] bool, real (non-padding) gt rows, crowd included.
    gt_is_crowd: [B, M] bool.
    image_scale: [B] float32, resized / original (Detectron's im_scale).
    convention: "detectron" or "modern".
    mode: "detectron" or "modern", see the module docstring.
    batch_size_per_image: TRAIN.BATCH_SIZE_PER_IM (512).
    fg_fraction: TRAIN.FG_FRACTION (0.25).
    fg_thresh, bg_thresh_hi, bg_thresh_lo: TRAIN.FG_THRESH (0.5),
      BG_THRESH_HI (0.5), BG_THRESH_LO (0.0).
    box_weights: MODEL.BBOX_REG_WEIGHTS.
    seed: None or a stateless seed ([2] int tensor).

  Returns:
    SampledRois.
  """
  if mode not in MODES:
    raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
  gt_boxes = tf.convert_to_tensor(gt_boxes, tf.float32)
  proposals = tf.convert_to_tensor(proposals, tf.float32)
  gt_valid = tf.cast(gt_valid, tf.bool)
  gt_is_crowd = tf.cast(gt_is_crowd, tf.bool)
  non_crowd = gt_valid & ~gt_is_crowd
  # Crowd gt can be matched by proposals in Detectron mode, never in modern.
  matchable = gt_valid if mode == "detectron" else non_crowd
  scale = tf.ones_like(image_scale, tf.float32) if mode == "modern" else tf.cast(
      image_scale, tf.float32)
  inv = (1.0 / scale)[:, None, None]  # [B, 1, 1]

  candidates = tf.concat([gt_boxes, proposals], axis=1)  # [B, M + P, 4]
  m = tf.shape(gt_boxes)[1]
  cand_valid = tf.concat([non_crowd, tf.cast(proposals_valid, tf.bool)], axis=1)
  iou = box_ops.pairwise_iou(candidates * inv, gt_boxes * inv,
                             convention=convention)  # [B, M + P, M]
  iou = tf.where(matchable[:, None, :], iou, -1.0)
  matched_gt = tf.argmax(iou, axis=2, output_type=tf.int32)  # [B, M + P]
  overlap = tf.reduce_max(iou, axis=2)
  is_gt_row = tf.range(tf.shape(candidates)[1])[None, :] < m
  # A gt candidate matches itself (Detectron sets its overlap to 1 explicitly).
  self_index = tf.broadcast_to(tf.range(tf.shape(candidates)[1])[None, :], tf.shape(overlap))
  matched_gt = tf.where(is_gt_row, self_index, matched_gt)
  overlap = tf.where(is_gt_row, 1.0, tf.maximum(overlap, 0.0))
  overlap = tf.where(cand_valid, overlap, -1.0)

  num_fg = int(round(fg_fraction * batch_size_per_image))
  seeds = (None, None) if seed is None else tf.unstack(
      tf.random.experimental.stateless_split(seed, 2))
  fg = subsample_without_replacement(overlap >= fg_thresh, num_fg, seed=seeds[0])
  fg_count = tf.reduce_sum(tf.cast(fg, tf.int32), axis=1)
  bg_candidates = (overlap < bg_thresh_hi) & (overlap >= bg_thresh_lo)
  bg = subsample_without_replacement(bg_candidates, batch_size_per_image - fg_count,
                                     seed=seeds[1])

  # Foreground rows first, then background, then the rest (padding).
  rank_key = tf.cast(fg, tf.int32) * 2 + tf.cast(bg, tf.int32)  # [B, M + P]
  order = tf.argsort(rank_key, axis=1, direction="DESCENDING", stable=True)
  total = tf.shape(candidates)[1]
  pad = tf.maximum(batch_size_per_image - total, 0)
  order = tf.pad(order, [[0, 0], [0, pad]])[:, :batch_size_per_image]  # [B, R]
  valid = tf.range(batch_size_per_image)[None, :] < (fg_count + tf.reduce_sum(
      tf.cast(bg, tf.int32), axis=1))[:, None]
  is_fg = valid & (tf.range(batch_size_per_image)[None, :] < fg_count[:, None])

  rois = tf.gather(candidates, order, batch_dims=1)  # [B, R, 4]
  matched = tf.gather(matched_gt, order, batch_dims=1)  # [B, R]
  gt_for_roi = tf.gather(gt_boxes, matched, batch_dims=1)  # [B, R, 4]
  labels = tf.where(is_fg, tf.gather(tf.cast(gt_classes, tf.int32), matched, batch_dims=1), 0)
  safe_rois = tf.where(is_fg[..., None], rois, gt_for_roi)
  targets = box_ops.encode(gt_for_roi * inv, safe_rois * inv, weights=box_weights,
                           convention=convention)
  targets = tf.where(is_fg[..., None], targets, 0.0)
  rois = tf.where(valid[..., None], rois, 0.0)
  return SampledRois(rois=rois, labels=labels, box_targets=targets, matched_gt=matched,
                     is_fg=is_fg, valid=valid)
