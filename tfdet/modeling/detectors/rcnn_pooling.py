"""RoI feature pooling of the R-CNN's RoI heads: RoIAlign on one level, or on FPN levels by
Detectron's level rule.

One `RoiPooler` serves every RoI head of a model (box, mask, keypoint); each
head asks for its own output size and sampling ratio. It holds no weights.
"""

import tensorflow as tf

from tfdet.ops import fpn_levels, roi_align


class RoiPooler:
  """RoIAlign of [B, R, 4] RoIs (resized-image pixels) over the levels a model pools from.

  Args:
    levels: feature names, ("p2", ..., "p5") with the FPN level rule, or ("res4",).
    strides: stride of each level.
    min_level, max_level, canonical_scale, canonical_level: the FPN level rule
      (`fpn_levels.assign_levels`; ignored with one level).
    aligned: RoIAlign variant (False: Detectron's).
    convention: box convention of the level rule's areas.
    implementation: "custom" ops or the pure-TF "reference".
  """

  def __init__(self, *, levels, strides, min_level=2, max_level=5, canonical_scale=224.0,
               canonical_level=4, aligned=False, convention="detectron",
               implementation="custom"):
    if len(levels) != len(strides):
      raise ValueError("levels and strides need one entry per level")
    self.levels = tuple(levels)
    self.strides = tuple(strides)
    self.min_level = min_level
    self.max_level = max_level
    self.canonical_scale = canonical_scale
    self.canonical_level = canonical_level
    self.aligned = aligned
    self.convention = convention
    self.implementation = implementation

  def __call__(self, features, rois, *, output_size, sampling_ratio):
    """[B, R, 4] RoIs -> [B * R, S, S, C] pooled features (RoIs of image b first)."""
    batch = tf.shape(rois)[0]
    r = tf.shape(rois)[1]
    flat = tf.reshape(rois, [-1, 4])  # [B*R, 4]
    batch_indices = tf.repeat(tf.range(batch, dtype=tf.int32), r)
    return self.pool_flat(features, flat, batch_indices, output_size=output_size,
                          sampling_ratio=sampling_ratio)

  def pool_flat(self, features, flat, batch_indices, *, output_size, sampling_ratio):
    """[N, 4] RoIs of images [N] (int32) -> [N, S, S, C] pooled features."""
    maps = [features[name] for name in self.levels]
    scales = [1.0 / s for s in self.strides]
    common = dict(output_size=output_size, sampling_ratio=sampling_ratio, aligned=self.aligned,
                  implementation=self.implementation)
    if len(maps) == 1:
      return roi_align.roi_align(maps[0], flat, batch_indices, spatial_scale=scales[0], **common)
    levels = fpn_levels.assign_levels(flat, min_level=self.min_level, max_level=self.max_level,
                                      canonical_scale=self.canonical_scale,
                                      canonical_level=self.canonical_level,
                                      convention=self.convention)
    return roi_align.multilevel_roi_align(maps, flat, batch_indices, levels - self.min_level,
                                          spatial_scales=scales, **common)


def valid_rows(valid):
  """The rows a head runs on: [N + 1, 2] int64 (image, row) of the N True entries of a
  [B, R] bool mask, row-major, then a spare (0, 0), so that the head never runs on an empty
  batch (TF's CPU convolutions mishandle a zero-sized batch); `scatter_rows` drops it."""
  return tf.concat([tf.where(valid), tf.zeros([1, 2], tf.int64)], 0)


def scatter_rows(values, rows, batch, num_rows):
  """[N + 1, ...] head outputs of `rows` (`valid_rows`) into zeros of [batch, num_rows, ...].

  The spare last row is dropped. The gradient gathers the same rows back, so a head run on
  the valid rows only trains exactly as if it had run on all of them with the others
  masked out.
  """
  shape = tf.concat([tf.cast([batch, num_rows], tf.int64),
                     tf.shape(values, out_type=tf.int64)[1:]], 0)
  return tf.scatter_nd(rows[:-1], values[:-1], shape)
