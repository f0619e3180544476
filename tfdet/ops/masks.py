"""Pasting M x M mask predictions into the image, as Detectron and detectron2 do.

``convention="detectron"`` (core/test.py segm_results): the M x M mask is
zero-padded to (M + 2) x (M + 2); its box is scaled by (M + 2) / M about its
centre and truncated to integers; the padded mask is resized bilinearly to
the box's ``(x2 - x1 + 1) x (y2 - y1 + 1)`` pixels (OpenCV's INTER_LINEAR:
source coordinate ``(x + 0.5) * src / dst - 0.5``, edges replicated),
thresholded (``> threshold``) and written into the image at the box.

``convention="modern"`` (detectron2 paste_masks_in_image): every image pixel
centre is mapped into the box's mask frame,
``u = (x + 0.5 - x1) / (x2 - x1) * M - 0.5``, and sampled bilinearly with
zeros outside the mask (grid_sample, align_corners=False); ``>= threshold``.

Both are separable, so a mask is pasted as ``Wy @ mask @ Wx^T`` with one
interpolation-weight matrix per axis: no Python loop over detections.
"""

import tensorflow as tf

from tfdet.ops.boxes import box_offset


def _interp_weights(coords, size, replicate):
  """Bilinear weights of sample positions over a 1-D grid.

  Args:
    coords: [..., L] float32 source coordinates (pixel centres at integers).
    size: int, the grid's length S.
    replicate: clamp to the edge (OpenCV) instead of zero outside (grid_sample).

  Returns:
    [..., L, S] float32.
  """
  if replicate:
    coords = tf.clip_by_value(coords, 0.0, float(size - 1))
  low = tf.floor(coords)
  frac = coords - low
  low_i = tf.cast(low, tf.int32)
  w = (tf.one_hot(low_i, size) * (1.0 - frac)[..., None]
       + tf.one_hot(low_i + 1, size) * frac[..., None])  # out-of-range indices give zeros
  return w


def paste_masks(masks, boxes, image_height, image_width, *, threshold=0.5, convention):
  """Pastes per-detection mask probabilities into full-image binary masks.

  Args:
    masks: [B, D, M, M] float32 probabilities.
    boxes: [B, D, 4] float32 (x1, y1, x2, y2) in the image's pixels.
    image_height, image_width: ints (static) or scalar int tensors, the
      output size (the original image's, for evaluation).
    threshold: binarization threshold (MRCNN.THRESH_BINARIZE, 0.5).
    convention: "detectron" or "modern", see the module docstring.

  Returns:
    [B, D, image_height, image_width] uint8 in {0, 1}.
  """
  legacy = box_offset(convention) == 1.0
  masks = tf.convert_to_tensor(masks, tf.float32)
  boxes = tf.convert_to_tensor(boxes, tf.float32)
  m = masks.shape[-1]
  ys = tf.cast(tf.range(image_height), tf.float32)  # [H]
  xs = tf.cast(tf.range(image_width), tf.float32)  # [W]
  x1, y1, x2, y2 = [boxes[..., i][..., None] for i in range(4)]  # [B, D, 1]
  if legacy:
    scale = (m + 2.0) / m
    cx, cy = (x1 + x2) * 0.5, (y1 + y2) * 0.5
    hw, hh = (x2 - x1) * 0.5 * scale, (y2 - y1) * 0.5 * scale
    # astype(np.int32) truncates toward zero.
    bx1, bx2 = tf.truncatediv(cx - hw, 1.0), tf.truncatediv(cx + hw, 1.0)
    by1, by2 = tf.truncatediv(cy - hh, 1.0), tf.truncatediv(cy + hh, 1.0)
    bw = tf.maximum(bx2 - bx1 + 1.0, 1.0)
    bh = tf.maximum(by2 - by1 + 1.0, 1.0)
    src = float(m + 2)
    u = (xs - bx1 + 0.5) * src / bw - 0.5  # [B, D, W]
    v = (ys - by1 + 0.5) * src / bh - 0.5  # [B, D, H]
    inside_x = (xs >= bx1) & (xs < bx1 + bw)
    inside_y = (ys >= by1) & (ys < by1 + bh)
    grid = tf.pad(masks, [[0, 0], [0, 0], [1, 1], [1, 1]])
    wx = _interp_weights(u, m + 2, replicate=True)  # [B, D, W, M+2]
    wy = _interp_weights(v, m + 2, replicate=True)  # [B, D, H, M+2]
  else:
    u = (xs + 0.5 - x1) / tf.maximum(x2 - x1, 1e-6) * m - 0.5
    v = (ys + 0.5 - y1) / tf.maximum(y2 - y1, 1e-6) * m - 0.5
    inside_x = tf.ones_like(u, tf.bool)
    inside_y = tf.ones_like(v, tf.bool)
    grid = masks
    wx = _interp_weights(u, m, replicate=False)
    wy = _interp_weights(v, m, replicate=False)
  wx *= tf.cast(inside_x, tf.float32)[..., None]
  wy *= tf.cast(inside_y, tf.float32)[..., None]
  pasted = tf.einsum("bdhi,bdij,bdwj->bdhw", wy, grid, wx)  # [B, D, H, W]
  binary = pasted > threshold if legacy else pasted >= threshold
  return tf.cast(binary, tf.uint8)
