"""Anchor-to-ground-truth matching, shared by the RPN's and RetinaNet's targets.

Boxes follow `tfdet.ops.boxes`; anchors and gt are in input-image pixels.
"""

from typing import NamedTuple

import tensorflow as tf

from tfdet.ops import boxes as box_ops


class AnchorMatch(NamedTuple):
  """How every anchor of a batch meets the ground truth.

  Attributes:
    matched_gt: [B, N] int32, the gt box of highest IoU (0 when none is valid).
    max_iou: [B, N] float32, that IoU (0 when no pair is valid).
    best_for_gt: [B, N] bool, the anchor is one of the anchors of highest IoU
      with some gt box (ties included). A gt box that overlaps no anchor (best
      IoU 0) claims none; Detectron would mark every anchor of IoU 0 with it.
  """
  matched_gt: tf.Tensor
  max_iou: tf.Tensor
  best_for_gt: tf.Tensor


def match_anchors(anchors, gt_boxes, pair_valid, *, convention):
  """IoU matching of every anchor with every gt box of its image.

  Args:
    anchors: [N, 4] float32.
    gt_boxes: [B, M, 4] float32.
    pair_valid: [B, M, N] bool (or broadcastable: [B, M, 1] for valid gt
      rows), False for pairs that must not match (padding gt, anchors
      outside the image).
    convention: "detectron" or "modern" (IoU).

  Returns:
    AnchorMatch.
  """
  iou = box_ops.pairwise_iou(gt_boxes, anchors[None], convention=convention)  # [B, M, N]
  iou = tf.where(pair_valid, iou, -1.0)
  gt_max = tf.reduce_max(iou, axis=2, keepdims=True)  # [B, M, 1]
  return AnchorMatch(
      matched_gt=tf.argmax(iou, axis=1, output_type=tf.int32),
      max_iou=tf.maximum(tf.reduce_max(iou, axis=1), 0.0),
      best_for_gt=tf.reduce_any((iou == gt_max) & (gt_max > 0.0) & pair_valid, axis=1))


def encode_matched(anchors, gt_boxes, matched_gt, foreground, *, weights, convention):
  """[B, N, 4] regression targets of each foreground anchor onto its matched gt (0 elsewhere)."""
  matched = tf.gather(gt_boxes, matched_gt, batch_dims=1)  # [B, N, 4]
  safe_anchors = tf.broadcast_to(anchors[None], tf.shape(matched))
  deltas = box_ops.encode(tf.where(foreground[..., None], matched, safe_anchors), safe_anchors,
                          weights=weights, convention=convention)
  return tf.where(foreground[..., None], deltas, 0.0)
