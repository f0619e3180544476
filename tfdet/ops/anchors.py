"""Anchor generation: Detectron's quantized anchors and the modern float ones.

Boxes follow `tfdet.ops.boxes` (absolute (x1, y1, x2, y2) pixels).

A level's anchors are a small set of *cell anchors* ([A, 4], computed in
numpy once, at graph-construction time) shifted over the feature-map grid.
Grid anchors are ordered (y, x, a): index ``(y * W + x) * A + a``, which is
the order of an NHWC head output ``[B, H, W, A]`` flattened to ``[B, H*W*A]``.

* ``"detectron"``: Detectron's generate_anchors. A base box
  ``[0, 0, stride - 1, stride - 1]`` is reshaped to each aspect ratio
  (``h / w``) keeping its area, with widths and heights *rounded*, then
  scaled by ``size / stride``; cell anchors are ordered ratio-major
  (for each ratio, each size). Cells are shifted by ``(x, y) * stride``,
  so an anchor of size ``stride`` covers the cell's pixels exactly.
* ``"modern"``: detectron2's DefaultAnchorGenerator. Anchors of area
  ``size**2`` and exact aspect ratio, centred on ``(x, y) * stride +
  offset * stride`` (offset 0 by default); size-major order.
"""

import numpy as np
import tensorflow as tf

from tfdet.ops.boxes import box_offset


def _whctrs(anchor):
  w = anchor[2] - anchor[0] + 1.0
  h = anchor[3] - anchor[1] + 1.0
  return w, h, anchor[0] + 0.5 * (w - 1.0), anchor[1] + 0.5 * (h - 1.0)


def _mkanchors(ws, hs, x_ctr, y_ctr):
  ws = np.asarray(ws, np.float64)[:, None]
  hs = np.asarray(hs, np.float64)[:, None]
  return np.hstack([x_ctr - 0.5 * (ws - 1.0), y_ctr - 0.5 * (hs - 1.0),
                    x_ctr + 0.5 * (ws - 1.0), y_ctr + 0.5 * (hs - 1.0)])


def _detectron_cell_anchors(stride, sizes, aspect_ratios):
  base = np.array([0.0, 0.0, stride - 1.0, stride - 1.0])
  w, h, x_ctr, y_ctr = _whctrs(base)
  ratios = np.asarray(aspect_ratios, np.float64)
  ws = np.round(np.sqrt(w * h / ratios))
  hs = np.round(ws * ratios)
  ratio_anchors = _mkanchors(ws, hs, x_ctr, y_ctr)
  scales = np.asarray(sizes, np.float64) / stride
  out = []
  for anchor in ratio_anchors:
    w, h, x_ctr, y_ctr = _whctrs(anchor)
    out.append(_mkanchors(w * scales, h * scales, x_ctr, y_ctr))
  return np.vstack(out)


def _modern_cell_anchors(sizes, aspect_ratios):
  out = []
  for size in sizes:
    for ratio in aspect_ratios:
      w = np.sqrt(size * size / ratio)
      h = ratio * w
      out.append([-0.5 * w, -0.5 * h, 0.5 * w, 0.5 * h])
  return np.asarray(out, np.float64)


def generate_cell_anchors(stride, sizes, aspect_ratios, *, convention):
  """Cell anchors of one level.

  Args:
    stride: int, the level's stride in input pixels.
    sizes: sequence of anchor sizes (sqrt of area) in input pixels.
    aspect_ratios: sequence of h / w ratios.
    convention: "detectron" (quantized, ratio-major) or "modern" (float,
      size-major, centred on 0).

  Returns:
    [len(sizes) * len(aspect_ratios), 4] float32 numpy array.
  """
  box_offset(convention)  # validates
  if stride <= 0 or not sizes or not aspect_ratios:
    raise ValueError(f"need stride > 0 and non-empty sizes and aspect_ratios, got "
                     f"stride={stride}, sizes={sizes}, aspect_ratios={aspect_ratios}")
  if convention == "detectron":
    anchors = _detectron_cell_anchors(stride, sizes, aspect_ratios)
  else:
    anchors = _modern_cell_anchors(sizes, aspect_ratios)
  return anchors.astype(np.float32)


def retinanet_cell_anchors(stride, *, anchor_scale=4.0, scales_per_octave=3,
                           aspect_ratios=(0.5, 1.0, 2.0), convention):
  """RetinaNet's cell anchors of one level (Detectron's retinanet ordering).

  Sizes are ``stride * anchor_scale * 2**(o / scales_per_octave)`` for each
  octave step o; the order is octave-major, then aspect ratio.

  Returns:
    [scales_per_octave * len(aspect_ratios), 4] float32 numpy array.
  """
  cells = []
  for octave in range(scales_per_octave):
    size = stride * anchor_scale * 2.0 ** (octave / float(scales_per_octave))
    for ratio in aspect_ratios:
      cells.append(generate_cell_anchors(stride, (size,), (ratio,), convention=convention))
  return np.concatenate(cells, axis=0)


def grid_anchors(cell_anchors, *, stride, height, width, offset=0.0):
  """Shifts cell anchors over a feature-map grid.

  Args:
    cell_anchors: [A, 4] float (numpy or tensor).
    stride: int, the level's stride.
    height, width: int or scalar int tensor, the feature map's size.
    offset: fraction of the stride added to every shift (detectron2's
      ANCHOR_GENERATOR.OFFSET; 0 for Detectron).

  Returns:
    [height * width * A, 4] float32, ordered (y, x, a).
  """
  cell = tf.convert_to_tensor(cell_anchors, tf.float32)
  sx = (tf.cast(tf.range(width), tf.float32) + offset) * float(stride)
  sy = (tf.cast(tf.range(height), tf.float32) + offset) * float(stride)
  yy, xx = tf.meshgrid(sy, sx, indexing="ij")  # [H, W]
  shifts = tf.stack([xx, yy, xx, yy], axis=-1)  # [H, W, 4]
  anchors = shifts[:, :, None, :] + cell[None, None, :, :]  # [H, W, A, 4]
  return tf.reshape(anchors, [-1, 4])


def multilevel_anchors(level_cell_anchors, strides, feature_sizes, offset=0.0):
  """Grid anchors of several levels.

  Args:
    level_cell_anchors: list of [A, 4] cell anchors, one per level.
    strides: list of int strides, one per level.
    feature_sizes: list of (height, width), one per level.

  Returns:
    list of [H_l * W_l * A, 4] float32 tensors.
  """
  if not len(level_cell_anchors) == len(strides) == len(feature_sizes):
    raise ValueError("level_cell_anchors, strides and feature_sizes need one entry per level; "
                     f"got {len(level_cell_anchors)}, {len(strides)}, {len(feature_sizes)}")
  return [grid_anchors(c, stride=s, height=h, width=w, offset=offset)
          for c, s, (h, w) in zip(level_cell_anchors, strides, feature_sizes, strict=True)]
