"""RPN training targets: anchor labels and box regression targets.

Detectron's roi_data/rpn.py, batched with static shapes. For each image:

1. Anchors that cross the image border by more than `straddle_thresh`
   pixels are ignored (label -1); a negative `straddle_thresh` keeps all.
2. IoU of every kept anchor with every non-crowd ground-truth box.
3. Foreground (1): for each gt box, the anchors of highest IoU with it
   (ties included), and every anchor with IoU >= `positive_overlap`; then at
   most ``positive_fraction * batch_size_per_image`` of them, chosen at
   random without replacement (the rest become -1).
4. Background (0): anchors whose best IoU is < `negative_overlap`, up to
   ``batch_size_per_image - #foreground`` of them.

``sampling="detectron"`` reproduces Detectron's background step exactly:
the background draws are made *with replacement* (so slightly fewer than the
quota are marked), and a drawn anchor becomes background even if step 3 had
made it foreground (possible for a gt box whose best anchor has IoU < 0.3).
``sampling="modern"`` (detectron2) draws without replacement among the
anchors that are not foreground.

One deliberate difference from Detectron: a gt box that overlaps no anchor
at all (best IoU 0) marks no anchor foreground through step 3; Detectron
would mark every anchor of IoU 0 with it.

Boxes follow `tfdet.ops.boxes`; anchors and gt are in input-image pixels.
"""

import dataclasses

import tensorflow as tf

from tfdet.ops import anchor_matching
from tfdet.ops.sampling import subsample_with_replacement, subsample_without_replacement

SAMPLING_MODES = ("detectron", "modern")


@dataclasses.dataclass(frozen=True)
class RpnTargets:
  """labels: [B, N] int32 (1 fg, 0 bg, -1 ignored); box_targets: [B, N, 4]
  float32 deltas (zero where not fg); matched_gt: [B, N] int32 index of the
  best gt box (0 when there is none)."""
  labels: tf.Tensor
  box_targets: tf.Tensor
  matched_gt: tf.Tensor


def inside_image(anchors, image_size, straddle_thresh):
  """True for anchors within `straddle_thresh` pixels of the image.

  Args:
    anchors: [N, 4] float32.
    image_size: [B, 2] float (height, width) of the resized image.
    straddle_thresh: float; negative keeps every anchor.

  Returns:
    [B, N] bool.
  """
  image_size = tf.cast(image_size, tf.float32)
  if straddle_thresh < 0:
    return tf.ones([tf.shape(image_size)[0], tf.shape(anchors)[0]], tf.bool)
  t = float(straddle_thresh)
  h = image_size[:, 0:1]
  w = image_size[:, 1:2]
  x1, y1, x2, y2 = [anchors[None, :, i] for i in range(4)]
  return (x1 >= -t) & (y1 >= -t) & (x2 < w + t) & (y2 < h + t)


def rpn_targets(anchors, gt_boxes, gt_valid, image_size, *, convention, positive_overlap=0.7,
                negative_overlap=0.3, batch_size_per_image=256, positive_fraction=0.5,
                straddle_thresh=0.0, box_weights=(1.0, 1.0, 1.0, 1.0), sampling="detectron",
                seed=None):
  """Labels and regression targets of all anchors of a batch.

  Args:
    anchors: [N, 4] float32, every level's anchors concatenated (the order
      of the RPN head's flattened outputs).
    gt_boxes: [B, M, 4] float32 ground truth in the resized image.
    gt_valid: [B, M] bool, True for real, non-crowd gt boxes.
    image_size: [B, 2] (height, width) of each resized, un-padded image.
    convention: "detectron" or "modern" (IoU and box encoding).
    positive_overlap, negative_overlap: Detectron's RPN_POSITIVE_OVERLAP
      (0.7) and RPN_NEGATIVE_OVERLAP (0.3).
    batch_size_per_image: RPN_BATCH_SIZE_PER_IM (256).
    positive_fraction: RPN_FG_FRACTION (0.5).
    straddle_thresh: RPN_STRADDLE_THRESH (0); negative disables.
    box_weights: box-coder weights for the targets.
    sampling: "detectron" or "modern", see the module docstring.
    seed: None or a stateless seed ([2] int tensor) for the sampling.

  Returns:
    RpnTargets.
  """
  if sampling not in SAMPLING_MODES:
    raise ValueError(f"sampling must be one of {SAMPLING_MODES}, got {sampling!r}")
  anchors = tf.convert_to_tensor(anchors, tf.float32)
  gt_boxes = tf.convert_to_tensor(gt_boxes, tf.float32)
  gt_valid = tf.cast(gt_valid, tf.bool)
  seeds = (None, None) if seed is None else tf.unstack(
      tf.random.experimental.stateless_split(seed, 2))
  inside = inside_image(anchors, image_size, straddle_thresh)  # [B, N]
  match = anchor_matching.match_anchors(anchors, gt_boxes,
                                        gt_valid[:, :, None] & inside[:, None, :],
                                        convention=convention)
  anchor_max = match.max_iou

  fg = inside & (match.best_for_gt | (anchor_max >= positive_overlap))
  fg = subsample_without_replacement(fg, int(positive_fraction * batch_size_per_image),
                                     seed=seeds[0])
  num_bg = batch_size_per_image - tf.reduce_sum(tf.cast(fg, tf.int32), axis=1)  # [B]
  bg_candidates = inside & (anchor_max < negative_overlap)
  if sampling == "detectron":
    bg = subsample_with_replacement(bg_candidates, num_bg, batch_size_per_image, seed=seeds[1])
    fg = fg & ~bg
  else:
    bg = subsample_without_replacement(bg_candidates & ~fg, num_bg, seed=seeds[1])
  labels = tf.where(fg, 1, tf.where(bg, 0, -1))
  box_targets = anchor_matching.encode_matched(anchors, gt_boxes, match.matched_gt, fg,
                                               weights=box_weights, convention=convention)
  return RpnTargets(labels=tf.cast(labels, tf.int32), box_targets=box_targets,
                    matched_gt=match.matched_gt)
