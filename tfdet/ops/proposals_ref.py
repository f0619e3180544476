"""Pure-TF reference of `tfdet.ops.proposals.generate_proposals`.

Built from stock TF ops, `tfdet.ops.boxes` and `tfdet.ops.nms`; it follows
the semantics in `tfdet.ops.proposals` (and custom_ops/kernels/
proposals_cpu.h) step by step, with the same float arithmetic, so that the
compiled op can be tested against it. Slow: per level a top-k, a decode and
TF's padded NMS, mapped over the images.

Level sizes must be static when ``pre_nms_top_n`` and ``post_nms_top_n``
are both 0 (the padded NMS needs a static output size).
"""

import tensorflow as tf

from tfdet.ops import boxes as box_ops
from tfdet.ops import nms as nms_ops

_NEG_INF = float("-inf")


def _static_count(tensor, name):
  m = tensor.shape.num_elements() if tensor.shape.rank == 4 else None
  if m is None:
    raise ValueError(f"{name} needs a static shape when pre_nms_top_n and post_nms_top_n "
                     f"are 0")
  return m // tensor.shape[0] if tensor.shape[0] else 0


def _check_level(lvl, scores, deltas, anchors):
  """Static shape checks; raises ValueError naming the argument."""
  if scores.shape.rank != 4:
    raise ValueError(f"scores[{lvl}] must be [batch, height, width, A], got {scores.shape}")
  if deltas.shape.rank != 4:
    raise ValueError(f"deltas[{lvl}] must be [batch, height, width, A * 4], got {deltas.shape}")
  if anchors.shape.rank != 2 or anchors.shape[1] not in (None, 4):
    raise ValueError(f"anchors[{lvl}] must be [height * width * A, 4], got {anchors.shape}")
  if not deltas.shape[:3].is_compatible_with(scores.shape[:3]):
    raise ValueError(f"deltas[{lvl}] {deltas.shape} does not match scores[{lvl}] {scores.shape}")
  a = scores.shape[3]
  if a is not None and deltas.shape[3] is not None and deltas.shape[3] != 4 * a:
    raise ValueError(f"deltas[{lvl}] has {deltas.shape[3]} channels, expected A * 4 = {4 * a}")
  m = scores.shape[1:].num_elements()
  if m is not None and anchors.shape[0] is not None and anchors.shape[0] != m:
    raise ValueError(f"anchors[{lvl}] has {anchors.shape[0]} rows, expected "
                     f"height * width * A = {m}")


def _image_valid(image_info):
  """[B] bool: height, width and scale positive and finite."""
  ok = tf.logical_and(image_info > 0.0, tf.math.is_finite(image_info))
  return tf.reduce_all(ok, axis=-1)


def _filter_mask(boxes, image_info, min_size, convention):
  """Detectron's _filter_boxes on clipped boxes [B, K, 4] -> [B, K] bool."""
  off = box_ops.box_offset(convention)
  height = image_info[:, 0:1]
  width = image_info[:, 1:2]
  scale = image_info[:, 2:3]
  bw = boxes[..., 2] - boxes[..., 0]
  bh = boxes[..., 3] - boxes[..., 1]
  if off == 1.0:
    m = max(min_size, 1.0)
    big = tf.logical_and(bw / scale + 1.0 >= m, bh / scale + 1.0 >= m)
  else:
    big = tf.logical_and(bw / scale > min_size, bh / scale > min_size)
  inside = tf.logical_and(boxes[..., 0] + (bw + off) / 2.0 < width,
                          boxes[..., 1] + (bh + off) / 2.0 < height)
  return tf.logical_and(big, inside)


def _one_level(scores, deltas, anchors, image_info, *, pre_nms_top_n, post_nms_top_n,
               nms_threshold, min_size, convention, bbox_xform_clip):
  """Steps 1-5 of one level.

  Returns:
    boxes: [B, P, 4] float32 kept proposals in NMS order.
    scores: [B, P] float32, -inf in unused slots.
  """
  batch = tf.shape(scores)[0]
  flat = tf.reshape(scores, [batch, -1])  # [B, M]
  m = tf.shape(flat)[1]
  key = tf.where(tf.math.is_finite(flat), flat, _NEG_INF)
  k = tf.minimum(m, pre_nms_top_n) if pre_nms_top_n > 0 else m
  top, idx = tf.math.top_k(key, k)  # [B, k], ties: lower index first
  d = tf.gather(tf.reshape(deltas, [batch, -1, 4]), idx, batch_dims=1)  # [B, k, 4]
  a = tf.gather(anchors, idx)  # [B, k, 4]
  valid = tf.math.is_finite(top)
  valid &= tf.reduce_all(tf.math.is_finite(d), -1) & tf.reduce_all(tf.math.is_finite(a), -1)
  boxes = box_ops.decode(d, a, convention=convention, clip=bbox_xform_clip)
  valid &= tf.reduce_all(tf.math.is_finite(boxes), -1)
  boxes = box_ops.clip_to_image(boxes, image_info[:, None, :2], convention=convention)
  valid &= _filter_mask(boxes, image_info, min_size, convention)
  valid &= _image_valid(image_info)[:, None]
  boxes = tf.where(valid[..., None], boxes, 0.0)
  if post_nms_top_n > 0:
    p = post_nms_top_n
  elif pre_nms_top_n > 0:
    p = pre_nms_top_n
  else:
    p = _static_count(scores, "scores")
  masked = tf.where(valid, top, _NEG_INF)
  keep, num = nms_ops.nms_padded(boxes, masked, max_output_size=p,
                                 iou_threshold=nms_threshold, convention=convention)
  kept_scores = tf.gather(masked, keep, batch_dims=1)  # [B, P]
  # nms_padded may also return -inf-scored boxes, after all finite ones.
  used = (tf.range(p)[None, :] < num[:, None]) & tf.math.is_finite(kept_scores)
  kept_boxes = tf.where(used[..., None], tf.gather(boxes, keep, batch_dims=1), 0.0)
  kept_scores = tf.where(used, kept_scores, _NEG_INF)
  return kept_boxes, kept_scores


def generate_proposals_ref(scores, deltas, anchors, image_info, *, pre_nms_top_n,
                           post_nms_top_n, nms_threshold, min_size, convention,
                           bbox_xform_clip, collect_top_n, collect_per_batch):
  """Pure-TF proposal generation; arguments and results as
  `tfdet.ops.proposals.generate_proposals` (lists of levels, already tensors).

  Returns:
    rois [B, C, 4] float32, roi_scores [B, C] float32, num_rois [B] int32.
  """
  if image_info.shape.rank != 2 or image_info.shape[1] not in (None, 3):
    raise ValueError(f"image_info must be [batch, 3], got {image_info.shape}")
  level_boxes, level_scores = [], []
  for lvl, (s, d, a) in enumerate(zip(scores, deltas, anchors, strict=True)):
    _check_level(lvl, s, d, a)
    if s.shape[1:].num_elements() == 0:
      continue  # empty level: nothing to add
    b, sc = _one_level(s, d, a, image_info, pre_nms_top_n=pre_nms_top_n,
                       post_nms_top_n=post_nms_top_n, nms_threshold=nms_threshold,
                       min_size=min_size, convention=convention,
                       bbox_xform_clip=bbox_xform_clip)
    level_boxes.append(b)
    level_scores.append(sc)
  batch = tf.shape(image_info)[0]
  c = collect_top_n
  # Pad to at least collect_top_n candidates per image.
  level_boxes.append(tf.zeros([batch, c, 4]))
  level_scores.append(tf.fill([batch, c], _NEG_INF))
  all_boxes = tf.concat(level_boxes, axis=1)  # [B, N, 4], (level, rank) order
  all_scores = tf.concat(level_scores, axis=1)  # [B, N]
  if collect_per_batch:
    # Keep the collect_top_n best of the batch; ties: lower (image, level,
    # rank) first, as top_k prefers lower indices.
    flat = tf.reshape(all_scores, [-1])
    top, gidx = tf.math.top_k(flat, tf.minimum(c, tf.size(flat)))
    chosen = tf.scatter_nd(gidx[:, None], tf.cast(tf.math.is_finite(top), tf.int32),
                           tf.shape(flat)) > 0
    all_scores = tf.where(tf.reshape(chosen, tf.shape(all_scores)), all_scores, _NEG_INF)
  top, idx = tf.math.top_k(all_scores, c)  # [B, C]
  valid = tf.math.is_finite(top)
  rois = tf.where(valid[..., None], tf.gather(all_boxes, idx, batch_dims=1), 0.0)
  roi_scores = tf.where(valid, top, 0.0)
  num_rois = tf.reduce_sum(tf.cast(valid, tf.int32), axis=1)
  return rois, roi_scores, num_rois
