"""Pure-TensorFlow RoIAlign: the reference for the custom op.

Same semantics as the compiled kernels (``custom_ops/kernels/roi_align_cpu.h``),
written with gathers and einsums so that TensorFlow's autodiff gives the
gradient with respect to the features. It needs no compiled code and runs on
any device, at the price of memory: it materializes the four bilinear corners
of every sample, ``[num_rois, ph, grid_h, 2, pw, grid_w, 2, channels]``.

* ``aligned=False`` (Detectron): ``start = x1 * scale``, RoI size
  ``max((x2 - x1) * scale, 1)``; ``aligned=True`` (detectron2): 0.5 is
  subtracted after scaling and the size is not clamped.
* ``sampling_ratio`` samples per bin and axis; 0 = ``ceil(roi size / bins)``
  per RoI (capped at ``MAX_ADAPTIVE_GRID``).
* A sample outside ``[-1, size]`` on either axis contributes 0; otherwise it
  is clamped to ``[0, size - 1]``.
* RoIs with a NaN or infinite coordinate give zeros and no gradient.
"""

import tensorflow as tf

MAX_ADAPTIVE_GRID = 512  # kRoiAlignMaxAdaptiveGrid in roi_align_cpu.h


def _grid_size(roi_size, pooled, sampling_ratio, valid):
  """Samples per bin along one axis: [R] int32 (0 for invalid RoIs)."""
  if sampling_ratio > 0:
    grid = tf.fill(tf.shape(roi_size), sampling_ratio)
  else:
    g = tf.math.ceil(roi_size / float(pooled))
    g = tf.where(g > 0.0, tf.minimum(g, float(MAX_ADAPTIVE_GRID)), 0.0)  # NaN -> 0
    grid = tf.cast(g, tf.int32)
  return tf.where(valid, grid, 0)


def _axis_samples(start, bin_size, grid, pooled, max_grid, size, sampling_ratio):
  """Bilinear rows (or columns) and weights of every sample along one axis.

  Args:
    start, bin_size: [R] float32, in feature-map pixels.
    grid: [R] int32 samples per bin (0 = none).
    pooled: number of bins.
    max_grid: scalar int32 >= max(grid).
    size: scalar int32, the feature map's height (or width).
    sampling_ratio: the attribute (> 0 means the grid is static).

  Returns:
    index: [R, pooled, max_grid, 2] int32 (low, high).
    weight: [R, pooled, max_grid, 2] float32, divided by the grid size and 0
      for samples outside the map or beyond the RoI's grid.
  """
  bins = tf.range(pooled, dtype=tf.float32)[None, :, None]  # [1, P, 1]
  steps = tf.range(max_grid)  # [G]
  grid_f = tf.cast(tf.maximum(grid, 1), tf.float32)[:, None, None]  # [R, 1, 1]
  start = start[:, None, None]
  bin_size = bin_size[:, None, None]
  v = start + bins * bin_size + (tf.cast(steps, tf.float32)[None, None, :] + 0.5) * bin_size / grid_f
  if sampling_ratio <= 0:
    v = tf.broadcast_to(v, [tf.shape(start)[0], pooled, max_grid])
  size_f = tf.cast(size, tf.float32)
  inside = (v >= -1.0) & (v <= size_f) & (steps[None, None, :] < grid[:, None, None])
  v = tf.maximum(v, 0.0)
  v = tf.where(inside, v, 0.0)  # keeps NaN / huge values out of the casts below
  low = tf.cast(tf.floor(v), tf.int32)
  at_end = low >= size - 1
  low = tf.where(at_end, size - 1, low)
  high = tf.where(at_end, size - 1, low + 1)
  v = tf.where(at_end, tf.cast(low, tf.float32), v)
  frac = v - tf.cast(low, tf.float32)
  scale = tf.cast(inside, tf.float32) / grid_f
  weight = tf.stack([(1.0 - frac) * scale, frac * scale], axis=-1)
  index = tf.stack([low, high], axis=-1)
  return index, weight


def roi_align_ref(features, rois, batch_indices, *, output_size, spatial_scale,
                  sampling_ratio=2, aligned=False):
  """RoIAlign in pure TF.

  Args:
    features: [B, H, W, C] float.
    rois: [R, 4] float32 (x1, y1, x2, y2) in input-image pixels.
    batch_indices: [R] int32 in [0, B).
    output_size: (pooled_height, pooled_width).
    spatial_scale: feature-map pixels per image pixel (1 / stride).
    sampling_ratio: samples per bin and axis; 0 = adaptive.
    aligned: detectron2's half-pixel-shifted variant if True.

  Returns:
    [R, pooled_height, pooled_width, C], the dtype of `features`.
  """
  ph, pw = output_size
  features = tf.convert_to_tensor(features)
  dtype = features.dtype
  feats = tf.cast(features, tf.float32)
  rois = tf.stop_gradient(tf.convert_to_tensor(rois, tf.float32))
  batch_indices = tf.convert_to_tensor(batch_indices, tf.int32)
  shape = tf.shape(feats)
  batch, height, width, channels = shape[0], shape[1], shape[2], shape[3]
  tf.debugging.assert_equal(tf.shape(rois)[0], tf.shape(batch_indices)[0],
                            message="batch_indices must have one entry per RoI in rois")
  in_range = (batch_indices >= 0) & (batch_indices < batch)
  tf.debugging.assert_equal(tf.reduce_all(in_range), True,
                            message="batch_indices out of range [0, batch)")

  valid = tf.reduce_all(tf.math.is_finite(rois), axis=1)  # [R]
  rois = tf.where(valid[:, None], rois, 0.0)
  offset = 0.5 if aligned else 0.0
  x1, y1, x2, y2 = tf.unstack(rois * spatial_scale - offset, axis=1)
  roi_w, roi_h = x2 - x1, y2 - y1
  if not aligned:
    roi_w, roi_h = tf.maximum(roi_w, 1.0), tf.maximum(roi_h, 1.0)
  grid_h = _grid_size(roi_h, ph, sampling_ratio, valid)
  grid_w = _grid_size(roi_w, pw, sampling_ratio, valid)
  if sampling_ratio > 0:
    max_h = max_w = sampling_ratio
  else:
    max_h = tf.maximum(tf.reduce_max(tf.concat([grid_h, [0]], 0)), 1)
    max_w = tf.maximum(tf.reduce_max(tf.concat([grid_w, [0]], 0)), 1)
  y_idx, y_wt = _axis_samples(y1, roi_h / ph, grid_h, ph, max_h, height, sampling_ratio)
  x_idx, x_wt = _axis_samples(x1, roi_w / pw, grid_w, pw, max_w, width, sampling_ratio)

  # Flat pixel index of every corner of every sample: [R, ph, Gh, 2, pw, Gw, 2].
  base = (batch_indices * height)[:, None, None, None]
  rows = (base + y_idx) * width  # [R, ph, Gh, 2]
  flat = rows[:, :, :, :, None, None, None] + x_idx[:, None, None, None, :, :, :]
  corners = tf.gather(tf.reshape(feats, [-1, channels]), flat)  # [..., C]
  # Sum the y corners and samples, then the x ones.
  pooled_y = tf.einsum("rpgk,rpgkqwlc->rqwlpc", y_wt, corners)  # [R, pw, Gw, 2, ph, C]
  out = tf.einsum("rqwl,rqwlpc->rpqc", x_wt, pooled_y)
  return tf.cast(out, dtype)


def multilevel_roi_align_ref(features, rois, batch_indices, levels, *, output_size,
                             spatial_scales, sampling_ratio=2, aligned=False):
  """RoIAlign over a feature pyramid in pure TF.

  Args:
    features: list of N tensors [B, H_l, W_l, C].
    rois: [R, 4] float32; batch_indices: [R] int32; levels: [R] int32 in [0, N).
    spatial_scales: N floats.
    Other arguments as `roi_align_ref`.

  Returns:
    [R, pooled_height, pooled_width, C]; RoI r is pooled from
    features[levels[r]] with spatial_scales[levels[r]].
  """
  n = len(features)
  rois = tf.convert_to_tensor(rois, tf.float32)
  batch_indices = tf.convert_to_tensor(batch_indices, tf.int32)
  levels = tf.convert_to_tensor(levels, tf.int32)
  tf.debugging.assert_equal(tf.shape(levels)[0], tf.shape(rois)[0],
                            message="levels must have one entry per RoI in rois")
  tf.debugging.assert_equal(tf.reduce_all((levels >= 0) & (levels < n)), True,
                            message=f"levels out of range [0, {n})")
  parts = tf.dynamic_partition(tf.range(tf.shape(rois)[0]), levels, n)
  outputs = []
  for level, idx in enumerate(parts):
    outputs.append(roi_align_ref(
        features[level], tf.gather(rois, idx), tf.gather(batch_indices, idx),
        output_size=output_size, spatial_scale=spatial_scales[level],
        sampling_ratio=sampling_ratio, aligned=aligned))
  return tf.dynamic_stitch(parts, outputs)
