"""RetinaNet training targets: a class label and box regression target per anchor.

Every anchor of every level takes part (no border rule, no sampling). For
each image, with IoU against its non-crowd ground-truth boxes:

* ``matching="detectron"`` (Detectron's roi_data/retinanet.py):
  1. label -1 (ignored) everywhere;
  2. each gt box's anchors of highest IoU with it (ties included) take the
     class of *their own* best gt box;
  3. every anchor with IoU >= `positive_overlap` takes its best gt's class;
  4. the foreground count is taken now (it feeds the loss normalizer);
  5. every anchor whose best IoU is < `negative_overlap` becomes background
     (0), overriding step 2: a gt box whose best anchor has IoU < 0.4
     contributes a foreground count but no foreground anchor.
* ``matching="modern"`` (detectron2's Matcher, thresholds (0.4, 0.5),
  allow_low_quality_matches): background below `negative_overlap`,
  ignored in between, foreground at or above `positive_overlap`, and the
  anchors of step 2 foreground whatever their IoU; the foreground count is
  that of the final labels.

Box targets encode each foreground anchor's best gt box (`tfdet.ops.boxes`
encoding with `box_weights`). An image without valid gt has only
background. The matching is `tfdet.ops.anchor_matching`'s, as the RPN's: a
gt box that overlaps no anchor (best IoU 0) claims none in step 2 (Detectron
would label every anchor of IoU 0 with it).

Boxes follow `tfdet.ops.boxes`; anchors and gt are in input-image pixels.
"""

from typing import NamedTuple

import tensorflow as tf

from tfdet.ops import anchor_matching

MATCHING = ("detectron", "modern")


class RetinaNetTargets(NamedTuple):
  """Per-anchor targets of a batch.

  Attributes:
    labels: [B, N] int32: -1 ignored, 0 background, k in 1..K the class.
    box_targets: [B, N, 4] float32 deltas, zero where the label is not > 0.
    num_foreground: [B] float32, the image's foreground count as its
      normalizer sees it (see the module docstring).
  """
  labels: tf.Tensor
  box_targets: tf.Tensor
  num_foreground: tf.Tensor


def retinanet_targets(anchors, gt_boxes, gt_classes, gt_valid, *, convention,
                      positive_overlap=0.5, negative_overlap=0.4, matching="detectron",
                      box_weights=(1.0, 1.0, 1.0, 1.0)):
  """Labels and regression targets of every anchor of a batch.

  Args:
    anchors: [N, 4] float32, every level's anchors concatenated in the order
      of the head's flattened outputs.
    gt_boxes: [B, M, 4] float32 ground truth in the resized image.
    gt_classes: [B, M] int32 classes 1..K.
    gt_valid: [B, M] bool, True for real, non-crowd gt boxes.
    convention: "detectron" or "modern" (IoU and box encoding).
    positive_overlap, negative_overlap: RETINANET.POSITIVE_OVERLAP (0.5) and
      NEGATIVE_OVERLAP (0.4).
    matching: "detectron" or "modern" (module docstring).
    box_weights: box-coder weights.

  Returns:
    RetinaNetTargets.
  """
  if matching not in MATCHING:
    raise ValueError(f"matching must be one of {MATCHING}, got {matching!r}")
  anchors = tf.convert_to_tensor(anchors, tf.float32)
  gt_boxes = tf.convert_to_tensor(gt_boxes, tf.float32)
  gt_valid = tf.cast(gt_valid, tf.bool)
  match = anchor_matching.match_anchors(anchors, gt_boxes, gt_valid[:, :, None],
                                        convention=convention)
  claimed = match.best_for_gt | (match.max_iou >= positive_overlap)  # steps 2, 3: counted
  background = match.max_iou < negative_overlap
  # Detectron's step 5 overrides step 2; detectron2 keeps the low-quality matches.
  foreground = claimed & ~background if matching == "detectron" else claimed
  classes = tf.gather(tf.cast(gt_classes, tf.int32), match.matched_gt, batch_dims=1)  # [B, N]
  labels = tf.where(foreground, classes, tf.where(background & ~foreground, 0, -1))
  return RetinaNetTargets(
      labels=tf.cast(labels, tf.int32),
      box_targets=anchor_matching.encode_matched(anchors, gt_boxes, match.matched_gt,
                                                 foreground, weights=box_weights,
                                                 convention=convention),
      num_foreground=tf.reduce_sum(tf.cast(claimed, tf.float32), axis=1))
