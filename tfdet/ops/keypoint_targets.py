"""Keypoint R-CNN training RoIs and heatmap targets (Detectron's roi_data/keypoint_rcnn.py).

Per image:

1. Candidates are the box sampling's (`roi_sampling.candidates`: the
   non-crowd gt boxes, then the proposals), with their best gt box.
2. A candidate is a keypoint RoI when its overlap is >= `fg_thresh` and its
   best gt box has at least one visible keypoint (visibility > 0) inside the
   candidate's box (bounds included; Detectron's ``_within_box``).
3. At most `rois_per_image` of them (Detectron: the box sampling's
   foreground quota, round(0.25 * 512) = 128) are chosen at random without
   replacement; they are sampled apart from the box head's RoIs.
4. Each RoI's target is, per keypoint of its gt, the position of the
   keypoint in a ``heatmap_size`` x ``heatmap_size`` grid over the RoI,
   Detectron's ``keypoints_to_heatmap_labels``: x = floor((kx - x1) * S /
   (x2 - x1)) (no "+1" in this width), and likewise y; a keypoint exactly on
   the RoI's right (bottom) edge goes to column (row) S - 1; the target is
   the flat index y * S + x, with weight 1 when the keypoint is visible and
   0 <= x, y < S, else weight 0.

Like `roi_sampling` in "detectron" mode, overlaps and heatmap positions are
computed in original-image coordinates (Detectron's roidb), i.e. resized
coordinates divided by the image scale; "modern" mode uses the resized ones.
Keypoints follow `keys.GT_KEYPOINTS` ([B, M, J, 3] x, y, visibility in
resized pixels).
"""

from typing import NamedTuple

import tensorflow as tf

from tfdet.ops import roi_sampling
from tfdet.ops.sampling import subsample_without_replacement


class KeypointRois(NamedTuple):
  """The keypoint RoIs of a batch and their targets; R = rois_per_image, J keypoints.

  Attributes:
    rois: [B, R, 4] float32 in the resized image (zeros past the valid ones).
    valid: [B, R] bool, the sampled rows (they come first).
    targets: [B, R, J] int32 flat heatmap index of each keypoint (0 where the
      weight is 0).
    weights: [B, R, J] float32, 1 for a visible keypoint inside the RoI.
  """
  rois: tf.Tensor
  valid: tf.Tensor
  targets: tf.Tensor
  weights: tf.Tensor


def heatmap_targets(keypoints, rois, *, heatmap_size):
  """Detectron's keypoints_to_heatmap_labels (module docstring, step 4).

  Args:
    keypoints: [..., J, 3] float32 (x, y, visibility) in the RoIs' frame.
    rois: [..., 4] float32 (x1, y1, x2, y2).
    heatmap_size: S.

  Returns:
    (targets [..., J] int32, weights [..., J] float32).
  """
  keypoints = tf.cast(keypoints, tf.float32)
  rois = tf.cast(rois, tf.float32)[..., None, :]  # [..., 1, 4]
  x, y, visible = keypoints[..., 0], keypoints[..., 1], keypoints[..., 2] > 0
  size = float(heatmap_size)
  hx = tf.math.floor((x - rois[..., 0]) * (size / (rois[..., 2] - rois[..., 0])))
  hy = tf.math.floor((y - rois[..., 1]) * (size / (rois[..., 3] - rois[..., 1])))
  hx = tf.where(x == rois[..., 2], size - 1.0, hx)  # on the right edge: the last column
  hy = tf.where(y == rois[..., 3], size - 1.0, hy)
  inside = (hx >= 0.0) & (hy >= 0.0) & (hx < size) & (hy < size)
  valid = inside & visible & tf.math.is_finite(hx) & tf.math.is_finite(hy)
  index = tf.cast(tf.where(valid, hy * size + hx, 0.0), tf.int32)
  return index, tf.cast(valid, tf.float32)


def sample_keypoint_rois(proposals, proposals_valid, gt_boxes, gt_valid, gt_is_crowd,
                         gt_keypoints, image_scale, *, convention, mode="detectron",
                         fg_thresh=0.5, rois_per_image=128, heatmap_size=56, seed=None):
  """The keypoint RoIs of a batch and their heatmap targets (module docstring).

  Args:
    proposals: [B, P, 4] float32 in the resized image. proposals_valid: [B, P] bool.
    gt_boxes: [B, M, 4] float32 in the resized image.
    gt_valid: [B, M] bool. gt_is_crowd: [B, M] bool.
    gt_keypoints: [B, M, J, 3] float32 in the resized image.
    image_scale: [B] float32, resized / original.
    convention, mode: as `roi_sampling.sample_rois`.
    fg_thresh: TRAIN.FG_THRESH (0.5).
    rois_per_image: R, at most this many RoIs per image.
    heatmap_size: KRCNN.HEATMAP_SIZE (56).
    seed: None or a stateless seed ([2] int tensor).

  Returns:
    KeypointRois.
  """
  cands = roi_sampling.candidates(proposals, proposals_valid, gt_boxes, gt_valid, gt_is_crowd,
                                  image_scale, convention=convention, mode=mode)
  scale = roi_sampling.target_frame_scale(image_scale, mode)
  inv = (1.0 / scale)[:, None, None]
  keypoints = tf.gather(tf.cast(gt_keypoints, tf.float32), cands.matched_gt,
                        batch_dims=1)  # [B, C, J, 3]
  xy = keypoints[..., :2] * inv[..., None]
  boxes = cands.boxes * inv  # [B, C, 4] in the targets' frame
  inside = ((xy[..., 0] >= boxes[..., None, 0]) & (xy[..., 0] <= boxes[..., None, 2])
            & (xy[..., 1] >= boxes[..., None, 1]) & (xy[..., 1] <= boxes[..., None, 3]))
  has_visible = tf.reduce_any(inside & (keypoints[..., 2] > 0), axis=-1)  # [B, C]
  chosen = subsample_without_replacement((cands.overlap >= fg_thresh) & has_visible,
                                         rois_per_image, seed=seed)  # [B, C]
  count = tf.reduce_sum(tf.cast(chosen, tf.int32), axis=1)
  order = tf.argsort(tf.cast(chosen, tf.int32), axis=1, direction="DESCENDING", stable=True)
  pad = tf.maximum(rois_per_image - tf.shape(order)[1], 0)
  order = tf.pad(order, [[0, 0], [0, pad]])[:, :rois_per_image]  # [B, R]
  valid = tf.range(rois_per_image)[None, :] < count[:, None]
  targets, weights = heatmap_targets(
      tf.concat([tf.gather(xy, order, batch_dims=1),
                 tf.gather(keypoints[..., 2:], order, batch_dims=1)], axis=-1),
      tf.gather(boxes, order, batch_dims=1), heatmap_size=heatmap_size)
  weights = tf.where(valid[..., None], weights, 0.0)
  rois = tf.where(valid[..., None], tf.gather(cands.boxes, order, batch_dims=1), 0.0)
  return KeypointRois(rois=rois, valid=valid, targets=tf.where(weights > 0, targets, 0),
                      weights=weights)
