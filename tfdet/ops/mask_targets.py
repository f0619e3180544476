"""Mask R-CNN training targets: each foreground RoI's gt polygons rasterized
inside the RoI (Detectron's roi_data/mask_rcnn.py and
segms.polys_to_mask_wrt_box), with static shapes.

For each foreground RoI:

1. its gt instance is the non-crowd instance whose *polygon bounding box*
   (min/max of its vertices, not the annotated box) overlaps the RoI most
   (IoU in the box convention), as Detectron does;
2. the instance's polygons are mapped into the RoI, ``u = (x - x1) * M / w``
   with ``w = max(x2 - x1, 1)`` (no "+1"), and rasterized to M x M: a pixel
   is inside when its centre ``(j + 0.5, i + 0.5)`` is inside any of the
   instance's polygons (even-odd rule per polygon, union over polygons, as
   Detectron sums the parts' masks).

pycocotools' rasterizer, which Detectron calls, walks the edges on a 5x
upsampled grid; pixel-centre sampling agrees with it on about 99.7% of the
pixels of random polygons (tests/ops/test_targets.py measures it).

Polygons are given per instance as vertices ``[B, M, V, 2]`` with polygon
ids ``[B, M, V]``: polygon after polygon (ids 0, 0, 0, 1, 1, ...), then -1
for the trailing padding (`tfdet.data.keys.GT_POLYGONS`).
"""

import tensorflow as tf

from tfdet.ops import boxes as box_ops


def polygon_boxes(polygons, polygon_ids):
  """Bounding boxes of each instance's polygons.

  Args:
    polygons: [B, M, V, 2] float32 (x, y).
    polygon_ids: [B, M, V] int32, -1 for padding.

  Returns:
    [B, M, 4] float32 (min x, min y, max x, max y); zeros for instances
    without vertices.
  """
  valid = polygon_ids >= 0
  big = tf.float32.max
  xs = polygons[..., 0]
  ys = polygons[..., 1]
  x1 = tf.reduce_min(tf.where(valid, xs, big), axis=-1)
  y1 = tf.reduce_min(tf.where(valid, ys, big), axis=-1)
  x2 = tf.reduce_max(tf.where(valid, xs, -big), axis=-1)
  y2 = tf.reduce_max(tf.where(valid, ys, -big), axis=-1)
  has = tf.reduce_any(valid, axis=-1)
  return tf.where(has[..., None], tf.stack([x1, y1, x2, y2], axis=-1), 0.0)


def polygon_edges(polygons, polygon_ids):
  """The closed edges of each instance's polygons.

  Args:
    polygons: [..., V, 2] float32.
    polygon_ids: [..., V] int32: non-decreasing polygon ids (0, 0, 0, 1, ...),
      then -1 for the trailing padding.

  Returns:
    (start [..., V, 2], end [..., V, 2], valid [..., V] bool, first [..., V]
    int32): edge k runs from vertex k to the next vertex of its polygon, the
    last vertex of a polygon closing back to its first; `first` is the index
    of the first vertex of k's polygon.
  """
  v = tf.shape(polygon_ids)[-1]
  index = tf.range(v)
  # With padding moved to the end of the order, ids are sorted, so the first
  # vertex of k's polygon is where id[k] would be inserted on the left.
  key = tf.reshape(tf.where(polygon_ids >= 0, polygon_ids, tf.int32.max), [-1, v])
  start_of = tf.reshape(tf.searchsorted(key, key, side="left", out_type=tf.int32),
                        tf.shape(polygon_ids))
  next_ids = tf.concat([polygon_ids[..., 1:], tf.fill(tf.shape(polygon_ids[..., :1]), -2)], -1)
  is_last = polygon_ids != next_ids
  nxt = tf.where(is_last, start_of, tf.minimum(index + 1, v - 1))
  end = tf.gather(polygons, nxt, batch_dims=polygons.shape.rank - 2)
  return polygons, end, polygon_ids >= 0, start_of


def rasterize_polygons_in_boxes(polygons, polygon_ids, boxes, resolution):
  """Rasterizes one polygon set per box into that box at M x M.

  Args:
    polygons: [R, V, 2] float32 vertices in the boxes' frame.
    polygon_ids: [R, V] int32, -1 for padding.
    boxes: [R, 4] float32 (x1, y1, x2, y2).
    resolution: int, M.

  Returns:
    [R, M, M] float32 in {0, 1}.
  """
  m = resolution
  x1, y1, x2, y2 = tf.unstack(boxes, 4, axis=-1)
  w = tf.maximum(x2 - x1, 1.0)
  h = tf.maximum(y2 - y1, 1.0)
  u = (polygons[..., 0] - x1[:, None]) * m / w[:, None]  # [R, V]
  v = (polygons[..., 1] - y1[:, None]) * m / h[:, None]
  start, end, valid, first = polygon_edges(tf.stack([u, v], -1), polygon_ids)
  del first
  u0, v0 = start[..., 0][:, None, :], start[..., 1][:, None, :]  # [R, 1, V]
  u1, v1 = end[..., 0][:, None, :], end[..., 1][:, None, :]
  centres = tf.range(m, dtype=tf.float32) + 0.5
  # Scanlines: where each edge crosses each pixel row (small [R, M, V] work).
  py = centres[None, :, None]  # [1, M, 1]
  straddles = ((v0 > py) != (v1 > py)) & valid[:, None, :]  # [R, M, V]
  dv = tf.where(straddles, v1 - v0, 1.0)
  x_cross = tf.where(straddles, u0 + (py - v0) * (u1 - u0) / dv, -1.0)  # -1: never right of px
  # A pixel's ray to the right crosses edge e when x_cross_e > px: [R, M, M, V].
  crossing = tf.cast(centres[None, None, :, None] < x_cross[:, :, None, :], tf.float32)
  # Crossings per polygon (one-hot of the polygon ids, a batched matmul), odd = inside.
  num_polygons = tf.maximum(tf.reduce_max(polygon_ids) + 1, 1)
  onehot = tf.one_hot(polygon_ids, num_polygons)  # [R, V, P]; padding (-1) is all zeros
  r = tf.shape(crossing)[0]
  per_polygon = tf.linalg.matmul(tf.reshape(crossing, [r, m * m, -1]), onehot)  # [R, M*M, P]
  inside = tf.reduce_any(tf.math.floormod(per_polygon, 2.0) > 0.5, axis=-1)
  return tf.reshape(tf.cast(inside, tf.float32), [-1, m, m])


def mask_targets(rois, roi_is_fg, polygons, polygon_ids, gt_valid, gt_is_crowd, image_scale,
                 *, resolution=28, convention, mode="detectron"):
  """M x M mask targets of foreground RoIs.

  Args:
    rois: [B, R, 4] float32 in the resized image (e.g. the first
      round(fg_fraction * R) rows of `sample_rois`, which hold every fg RoI).
    roi_is_fg: [B, R] bool.
    polygons: [B, M, V, 2] float32 gt polygons in the resized image.
    polygon_ids: [B, M, V] int32, -1 for padding.
    gt_valid: [B, M] bool. gt_is_crowd: [B, M] bool.
    image_scale: [B] float32; "detectron" mode rasterizes in original-image
      coordinates as Detectron does, "modern" in the resized image.
    resolution: M (MRCNN.RESOLUTION, 28).
    convention: box convention of the RoI-to-polygon-box IoU.
    mode: "detectron" or "modern".

  Returns:
    targets: [B, R, M, M] float32 in {0, 1}, zero for non-fg rows.
    matched: [B, R] int32, the gt instance each RoI's mask comes from.
  """
  inv = 1.0 if mode == "modern" else (1.0 / tf.cast(image_scale, tf.float32))[:, None, None]
  rois = tf.convert_to_tensor(rois, tf.float32) * inv
  polygons = tf.convert_to_tensor(polygons, tf.float32) * (
      inv if mode == "modern" else inv[..., None])
  polygon_ids = tf.cast(polygon_ids, tf.int32)
  eligible = tf.cast(gt_valid, tf.bool) & ~tf.cast(gt_is_crowd, tf.bool)
  eligible &= tf.reduce_any(polygon_ids >= 0, axis=-1)
  poly_boxes = polygon_boxes(polygons, polygon_ids)  # [B, M, 4]
  iou = box_ops.pairwise_iou(rois, poly_boxes, convention=convention)  # [B, R, M]
  iou = tf.where(eligible[:, None, :], iou, -1.0)
  matched = tf.argmax(iou, axis=-1, output_type=tf.int32)  # [B, R]
  b = tf.shape(rois)[0]
  r = tf.shape(rois)[1]
  # Padding vertices trail each instance: drop the columns no instance uses
  # (the rasterizer's cost grows with V).
  v = tf.maximum(tf.reduce_max(tf.reduce_sum(tf.cast(polygon_ids >= 0, tf.int32), -1)), 1)
  polygons = polygons[:, :, :v]
  polygon_ids = polygon_ids[:, :, :v]
  inst_polys = tf.gather(polygons, matched, batch_dims=1)  # [B, R, V, 2]
  inst_ids = tf.gather(polygon_ids, matched, batch_dims=1)  # [B, R, V]
  masks = rasterize_polygons_in_boxes(tf.reshape(inst_polys, [-1, v, 2]),
                                      tf.reshape(inst_ids, [-1, v]),
                                      tf.reshape(rois, [-1, 4]), resolution)
  masks = tf.reshape(masks, tf.stack([b, r, resolution, resolution]))
  has_target = tf.cast(roi_is_fg, tf.bool) & tf.reduce_any(eligible, axis=-1, keepdims=True)
  return tf.where(has_target[..., None, None], masks, 0.0), matched
