"""FPN level assignment of RoIs (Detectron's map_rois_to_fpn_levels)."""

import tensorflow as tf

from tfdet.ops.boxes import areas


def assign_levels(boxes, *, min_level, max_level, canonical_scale=224.0, canonical_level=4,
                  convention):
  """The FPN level each RoI is pooled from.

  level = floor(canonical_level + log2(sqrt(area) / canonical_scale + 1e-6)),
  clamped to [min_level, max_level]; areas use the convention's "+1"
  (Detectron's ROI_CANONICAL_SCALE 224, ROI_CANONICAL_LEVEL 4).

  Args:
    boxes: [..., 4] float (x1, y1, x2, y2).
    min_level, max_level: int, e.g. 2 and 5 for P2..P5.
    canonical_scale, canonical_level: the level a canonical_scale box maps to.
    convention: "detectron" or "modern".

  Returns:
    [...] int32 levels in [min_level, max_level]. Non-finite or empty boxes
    map to min_level.
  """
  if min_level > max_level:
    raise ValueError(f"min_level ({min_level}) must be <= max_level ({max_level})")
  area = areas(boxes, convention=convention)
  scale = tf.sqrt(tf.maximum(area, 0.0))
  level = tf.floor(canonical_level + tf.math.log(scale / canonical_scale + 1e-6) / tf.math.log(2.0))
  level = tf.where(tf.math.is_finite(level), level, float(min_level))
  level = tf.clip_by_value(level, float(min_level), float(max_level))
  return tf.cast(level, tf.int32)
