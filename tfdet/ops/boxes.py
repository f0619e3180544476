"""Box geometry: the one box convention of tfdet, and the ops on it.

Convention (every function here and every caller):

* A box is ``(x1, y1, x2, y2)`` in **absolute pixel coordinates** of the
  image the model sees (after resizing), x along the width. Tensors of boxes
  have a last dimension of 4 in that order: ``boxes: [..., 4] float32``.
* How a box's width is measured is chosen by ``convention``:

  - ``"detectron"`` (legacy, Detectron and the 12_2017 model zoo): pixel
    indices are inclusive, ``width = x2 - x1 + 1``. Areas, IoU, encoding,
    decoding (``x2 = ctr + w/2 - 1``), clipping (to ``[0, W - 1]``), NMS and
    the FPN level rule all use it.
  - ``"modern"`` (detectron2, TF Model Garden): coordinates are continuous,
    ``width = x2 - x1``; clipping is to ``[0, W]``.

The functions are batched: leading dimensions broadcast as in TF.
"""

import math

import tensorflow as tf

CONVENTIONS = ("detectron", "modern")
# Detectron's BBOX_XFORM_CLIP: largest log-size delta applied in decode.
BBOX_XFORM_CLIP = math.log(1000.0 / 16.0)


def box_offset(convention):
  """Returns the "+1" of a convention: 1.0 for "detectron", 0.0 for "modern"."""
  if convention == "detectron":
    return 1.0
  if convention == "modern":
    return 0.0
  raise ValueError(f"convention must be one of {CONVENTIONS}, got {convention!r}")


def widths_heights(boxes, *, convention):
  """Widths and heights of boxes.

  Args:
    boxes: [..., 4] float (x1, y1, x2, y2).
    convention: "detectron" or "modern".

  Returns:
    (widths, heights), each [...].
  """
  off = box_offset(convention)
  x1, y1, x2, y2 = tf.unstack(boxes, 4, axis=-1)
  return x2 - x1 + off, y2 - y1 + off


def areas(boxes, *, convention):
  """Areas of boxes: [..., 4] -> [...]. Degenerate boxes may give <= 0."""
  w, h = widths_heights(boxes, convention=convention)
  return w * h


def pairwise_iou(boxes1, boxes2, *, convention):
  """Intersection over union of every pair.

  Args:
    boxes1: [..., N, 4] float.
    boxes2: [..., M, 4] float, same leading dimensions.
    convention: "detectron" or "modern".

  Returns:
    [..., N, M] float. Pairs whose union is not positive give 0.
  """
  off = box_offset(convention)
  a = boxes1[..., :, None, :]  # [..., N, 1, 4]
  b = boxes2[..., None, :, :]  # [..., 1, M, 4]
  iw = tf.maximum(tf.minimum(a[..., 2], b[..., 2]) - tf.maximum(a[..., 0], b[..., 0]) + off, 0.0)
  ih = tf.maximum(tf.minimum(a[..., 3], b[..., 3]) - tf.maximum(a[..., 1], b[..., 1]) + off, 0.0)
  inter = iw * ih
  union = (areas(boxes1, convention=convention)[..., :, None]
           + areas(boxes2, convention=convention)[..., None, :] - inter)
  return tf.where(union > 0.0, inter / tf.where(union > 0.0, union, 1.0), 0.0)


def encode(boxes, anchors, *, weights=(1.0, 1.0, 1.0, 1.0), convention):
  """Regression targets (dx, dy, dw, dh) that map anchors onto boxes.

  dx = wx * (cx_box - cx_anchor) / w_anchor, dw = ww * log(w_box / w_anchor),
  with centres cx = x1 + 0.5 * w (Detectron's bbox_transform_inv).

  Args:
    boxes: [..., 4] float, target boxes.
    anchors: [..., 4] float, reference boxes (anchors or proposals).
    weights: (wx, wy, ww, wh): (1, 1, 1, 1) for RPN, (10, 10, 5, 5) for the
      R-CNN box heads.
    convention: "detectron" or "modern".

  Returns:
    [..., 4] float deltas.
  """
  wx, wy, ww, wh = weights
  aw, ah = widths_heights(anchors, convention=convention)
  bw, bh = widths_heights(boxes, convention=convention)
  acx = anchors[..., 0] + 0.5 * aw
  acy = anchors[..., 1] + 0.5 * ah
  bcx = boxes[..., 0] + 0.5 * bw
  bcy = boxes[..., 1] + 0.5 * bh
  return tf.stack([
      wx * (bcx - acx) / aw,
      wy * (bcy - acy) / ah,
      ww * tf.math.log(bw / aw),
      wh * tf.math.log(bh / ah),
  ], axis=-1)


def decode(deltas, anchors, *, weights=(1.0, 1.0, 1.0, 1.0), convention,
           clip=BBOX_XFORM_CLIP):
  """Applies (dx, dy, dw, dh) deltas to anchors; the inverse of `encode`.

  Log-size deltas are clipped at `clip` (Detectron's BBOX_XFORM_CLIP) before
  exp. In "detectron", x2 = cx + 0.5 * w - 1 (inclusive pixel), as
  Detectron's bbox_transform does.

  Args:
    deltas: [..., 4] float.
    anchors: [..., 4] float, broadcastable to deltas.
    weights: (wx, wy, ww, wh), as in `encode`.
    convention: "detectron" or "modern".
    clip: upper bound for dw / ww and dh / wh.

  Returns:
    [..., 4] float boxes.
  """
  off = box_offset(convention)
  wx, wy, ww, wh = weights
  aw, ah = widths_heights(anchors, convention=convention)
  acx = anchors[..., 0] + 0.5 * aw
  acy = anchors[..., 1] + 0.5 * ah
  dx = deltas[..., 0] / wx
  dy = deltas[..., 1] / wy
  dw = tf.minimum(deltas[..., 2] / ww, clip)
  dh = tf.minimum(deltas[..., 3] / wh, clip)
  cx = dx * aw + acx
  cy = dy * ah + acy
  w = tf.exp(dw) * aw
  h = tf.exp(dh) * ah
  return tf.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w - off, cy + 0.5 * h - off],
                  axis=-1)


def clip_to_image(boxes, image_size, *, convention):
  """Clips boxes to the image.

  Args:
    boxes: [..., 4] float.
    image_size: [..., 2] float (height, width), broadcastable against the
      boxes' leading dimensions once a box axis is added: e.g. boxes
      [B, N, 4] with image_size [B, 1, 2] or [2].
    convention: "detectron" clips to [0, W - 1] x [0, H - 1]; "modern" to
      [0, W] x [0, H].

  Returns:
    [..., 4] float boxes.
  """
  off = box_offset(convention)
  image_size = tf.cast(image_size, boxes.dtype)
  h = image_size[..., 0] - off
  w = image_size[..., 1] - off
  x1, y1, x2, y2 = tf.unstack(boxes, 4, axis=-1)
  return tf.stack([
      tf.clip_by_value(x1, 0.0, w), tf.clip_by_value(y1, 0.0, h),
      tf.clip_by_value(x2, 0.0, w), tf.clip_by_value(y2, 0.0, h)
  ], axis=-1)


def min_size_mask(boxes, min_size, *, convention):
  """True where both sides of a box are at least `min_size`.

  Args:
    boxes: [..., 4] float.
    min_size: scalar or [...] float, broadcastable to boxes' leading dims.
    convention: "detectron" or "modern".

  Returns:
    [...] bool.
  """
  w, h = widths_heights(boxes, convention=convention)
  return tf.logical_and(w >= min_size, h >= min_size)


def flip_horizontal(boxes, image_width, *, convention):
  """Mirrors boxes left-right in an image of `image_width` pixels.

  "detectron" maps x to W - 1 - x (pixel indices), "modern" to W - x.

  Args:
    boxes: [..., 4] float.
    image_width: scalar or [...] float, broadcastable to boxes' leading dims.
    convention: "detectron" or "modern".
  """
  off = box_offset(convention)
  x1, y1, x2, y2 = tf.unstack(boxes, 4, axis=-1)
  right = tf.cast(image_width, boxes.dtype) - off
  return tf.stack([right - x2, y1, right - x1, y2], axis=-1)
