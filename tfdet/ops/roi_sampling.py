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
4. Regression targets encode each foreground RoI onto a gt box with the
   R-CNN weights (10, 10, 5, 5): in "detectron" mode onto the *non-crowd* gt
   box it overlaps most (Detectron's ``_compute_targets`` takes the argmax
   over ``gt_classes > 0 & is_crowd == 0``), which differs from the matched
   box when a crowd region is the best match; in "modern" onto the matched box
   (crowd boxes never match there).

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
class Candidates:
  """The RoI candidates of a batch (gt boxes first, then proposals) and their best gt.

  boxes: [B, M + P, 4] float32 in the resized image.
  valid: [B, M + P] bool (crowd gt rows and padding are not candidates).
  overlap: [B, M + P] float32 best IoU with a matchable gt box (1 for a gt
    row itself; -1 for invalid rows).
  matched_gt: [B, M + P] int32 index of that gt box.
  non_crowd_gt: [B, M + P] int32 index of the non-crowd gt box of highest IoU.
  """
  boxes: tf.Tensor
  valid: tf.Tensor
  overlap: tf.Tensor
  matched_gt: tf.Tensor
  non_crowd_gt: tf.Tensor


def candidates(proposals, proposals_valid, gt_boxes, gt_valid, gt_is_crowd, image_scale, *,
               convention, mode="detectron"):
  """Steps 1-2 of the module docstring: the candidates, their overlaps and best gt boxes.

  Args: as `sample_rois`. Returns: `Candidates`.
  """
  if mode not in MODES:
    raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
  gt_boxes = tf.convert_to_tensor(gt_boxes, tf.float32)
  proposals = tf.convert_to_tensor(proposals, tf.float32)
  gt_valid = tf.cast(gt_valid, tf.bool)
  non_crowd = gt_valid & ~tf.cast(gt_is_crowd, tf.bool)
  # Crowd gt can be matched by proposals in Detectron mode, never in modern.
  matchable = gt_valid if mode == "detectron" else non_crowd
  inv = (1.0 / target_frame_scale(image_scale, mode))[:, None, None]  # [B, 1, 1]
  boxes = tf.concat([gt_boxes, proposals], axis=1)  # [B, M + P, 4]
  m = tf.shape(gt_boxes)[1]
  valid = tf.concat([non_crowd, tf.cast(proposals_valid, tf.bool)], axis=1)
  iou = box_ops.pairwise_iou(boxes * inv, gt_boxes * inv, convention=convention)  # [B, M+P, M]
  matched_iou = tf.where(matchable[:, None, :], iou, -1.0)
  matched_gt = tf.argmax(matched_iou, axis=2, output_type=tf.int32)  # [B, M + P]
  non_crowd_gt = tf.argmax(tf.where(non_crowd[:, None, :], iou, -1.0), axis=2,
                           output_type=tf.int32)
  overlap = tf.reduce_max(matched_iou, axis=2)
  is_gt_row = tf.range(tf.shape(boxes)[1])[None, :] < m
  # A gt candidate matches itself (Detectron sets its overlap to 1 explicitly).
  self_index = tf.broadcast_to(tf.range(tf.shape(boxes)[1])[None, :], tf.shape(overlap))
  matched_gt = tf.where(is_gt_row, self_index, matched_gt)
  non_crowd_gt = tf.where(is_gt_row, self_index, non_crowd_gt)
  overlap = tf.where(is_gt_row, 1.0, tf.maximum(overlap, 0.0))
  overlap = tf.where(valid, overlap, -1.0)
  return Candidates(boxes=boxes, valid=valid, overlap=overlap, matched_gt=matched_gt,
                    non_crowd_gt=non_crowd_gt)


def target_frame_scale(image_scale, mode):
  """The scale that maps resized boxes to the frame IoUs are computed in."""
  if mode == "modern":
    return tf.ones_like(image_scale, tf.float32)
  return tf.cast(image_scale, tf.float32)


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
  cands = candidates(proposals, proposals_valid, gt_boxes, gt_valid, gt_is_crowd, image_scale,
                     convention=convention, mode=mode)
  gt_boxes = tf.convert_to_tensor(gt_boxes, tf.float32)
  overlap, matched_gt = cands.overlap, cands.matched_gt
  inv = (1.0 / target_frame_scale(image_scale, mode))[:, None, None]  # [B, 1, 1]

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
  total = tf.shape(cands.boxes)[1]
  pad = tf.maximum(batch_size_per_image - total, 0)
  order = tf.pad(order, [[0, 0], [0, pad]])[:, :batch_size_per_image]  # [B, R]
  valid = tf.range(batch_size_per_image)[None, :] < (fg_count + tf.reduce_sum(
      tf.cast(bg, tf.int32), axis=1))[:, None]
  is_fg = valid & (tf.range(batch_size_per_image)[None, :] < fg_count[:, None])

  rois = tf.gather(cands.boxes, order, batch_dims=1)  # [B, R, 4]
  matched = tf.gather(matched_gt, order, batch_dims=1)  # [B, R]
  regress_to = cands.non_crowd_gt if mode == "detectron" else matched_gt
  gt_for_roi = tf.gather(gt_boxes, tf.gather(regress_to, order, batch_dims=1),
                         batch_dims=1)  # [B, R, 4]
  labels = tf.where(is_fg, tf.gather(tf.cast(gt_classes, tf.int32), matched, batch_dims=1), 0)
  safe_rois = tf.where(is_fg[..., None], rois, gt_for_roi)
  targets = box_ops.encode(gt_for_roi * inv, safe_rois * inv, weights=box_weights,
                           convention=convention)
  targets = tf.where(is_fg[..., None], targets, 0.0)
  rois = tf.where(valid[..., None], rois, 0.0)
  return SampledRois(rois=rois, labels=labels, box_targets=targets, matched_gt=matched,
                     is_fg=is_fg, valid=valid)
