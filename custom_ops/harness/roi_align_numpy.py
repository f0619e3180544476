"""RoIAlign in plain numpy, for the harness checks (check_roi_align.py): caffe2's loops
(single- and multi-level, forward and backward, in float64) and the memory floor of a call
(the bytes that must move; check_roi_align.py's docstring defines it)."""

import math

import numpy as np


def _geometry(roi, scale, ph, pw, sr, aligned):
  """(y1, x1, bin_h, bin_w, grid_h, grid_w) of a RoI on its map (float32, as the kernels),
  or None for a non-finite RoI."""
  if not np.all(np.isfinite(roi)):
    return None
  off = 0.5 if aligned else 0.0
  x1, y1, x2, y2 = (np.float32(v) * np.float32(scale) - np.float32(off) for v in roi)
  rw, rh = x2 - x1, y2 - y1
  if not aligned:
    rw, rh = max(rw, np.float32(1)), max(rh, np.float32(1))
  bh, bw = rh / np.float32(ph), rw / np.float32(pw)
  gh = sr if sr > 0 else max(int(math.ceil(rh / ph)), 0)
  gw = sr if sr > 0 else max(int(math.ceil(rw / pw)), 0)
  return y1, x1, bh, bw, gh, gw


def _numpy_samples(roi, scale, ph, pw, sr, aligned, height, width):
  """Yields (i, j, weight, y, x) of every bilinear corner, caffe2's loops."""
  geo = _geometry(roi, scale, ph, pw, sr, aligned)
  if geo is None:
    return
  y1, x1, bh, bw, gh, gw = geo
  count = max(gh * gw, 1)
  for i in range(ph):
    for j in range(pw):
      for iy in range(gh):
        y = float(y1 + i * bh + (iy + 0.5) * bh / gh)
        for ix in range(gw):
          x = float(x1 + j * bw + (ix + 0.5) * bw / gw)
          if y < -1.0 or y > height or x < -1.0 or x > width:
            continue
          y, x = max(y, 0.0), max(x, 0.0)
          yl, xl = int(y), int(x)
          if yl >= height - 1:
            yl = yh = height - 1
            y = float(yl)
          else:
            yh = yl + 1
          if xl >= width - 1:
            xl = xh = width - 1
            x = float(xl)
          else:
            xh = xl + 1
          ly, lx = y - yl, x - xl
          for w, yy, xx in (((1 - ly) * (1 - lx), yl, xl), ((1 - ly) * lx, yl, xh),
                            (ly * (1 - lx), yh, xl), (ly * lx, yh, xh)):
            yield i, j, w / count, yy, xx


def numpy_forward(feats, rois, bidx, ph, pw, scale, sr, aligned):
  _, h, w, c = feats.shape
  out = np.zeros((len(rois), ph, pw, c), np.float64)
  for r, roi in enumerate(rois):
    for i, j, wt, y, x in _numpy_samples(roi, scale, ph, pw, sr, aligned, h, w):
      out[r, i, j] += wt * feats[bidx[r], y, x]
  return out


def numpy_backward(grads, shape, rois, bidx, scale, sr, aligned):
  out = np.zeros(shape, np.float64)
  ph, pw = grads.shape[1:3]
  for r, roi in enumerate(rois):
    for i, j, wt, y, x in _numpy_samples(roi, scale, ph, pw, sr, aligned, shape[1], shape[2]):
      out[bidx[r], y, x] += wt * grads[r, i, j]
  return out


def level_rois(levels, bidx, num_levels, batch):
  """Per level: the indices of its RoIs (those with an in-range level and image)."""
  ok = (bidx >= 0) & (bidx < batch)
  return [np.flatnonzero(ok & (levels == lvl)) for lvl in range(num_levels)]


def numpy_forward_ml(feats, rois, bidx, levels, ph, pw, scales, sr, aligned):
  """Level l's RoIs pooled from feats[l] with scales[l]; other RoIs zero."""
  out = np.zeros((len(rois), ph, pw, feats[0].shape[3]), np.float64)
  for f, scale, idx in zip(feats, scales, level_rois(levels, bidx, len(feats), len(feats[0])),
                           strict=True):
    out[idx] = numpy_forward(f, rois[idx], bidx[idx], ph, pw, scale, sr, aligned)
  return out


def numpy_backward_ml(grads, shapes, rois, bidx, levels, scales, sr, aligned):
  return [numpy_backward(grads[idx], shape, rois[idx], bidx[idx], scale, sr, aligned)
          for shape, scale, idx in zip(shapes, scales,
                                       level_rois(levels, bidx, len(shapes), shapes[0][0]),
                                       strict=True)]


def _axis_reads(start, bin_size, pooled, grid, size):
  """Rows (or columns) the kernels read along one axis of a RoI: both corners of every sample
  inside [-1, size]."""
  if grid <= 0 or size <= 0:
    return np.zeros(0, np.int64)
  k = np.arange(pooled, dtype=np.float32)[:, None]
  s = np.arange(grid, dtype=np.float32)[None, :]
  v = (start + k * bin_size + (s + np.float32(0.5)) * bin_size / np.float32(grid)).ravel()
  v = v[(v >= -1.0) & (v <= size)]
  low = np.minimum(np.maximum(v, 0.0).astype(np.int64), size - 1)
  return np.unique(np.concatenate([low, np.minimum(low + 1, size - 1)]))


def touched_pixels(shapes, scales, rois, bidx, levels, ph, pw, sr, aligned):
  """Number of distinct feature pixels (level, image, y, x) the forward reads. Bilinear
  sampling is separable, so a RoI reads (rows it reads) x (columns it reads)."""
  masks = [np.zeros(shape[:3], bool) for shape in shapes]
  for r, roi in enumerate(rois):
    lvl, b = int(levels[r]), int(bidx[r])
    if not (0 <= lvl < len(shapes) and 0 <= b < shapes[lvl][0]):
      continue
    geo = _geometry(roi, scales[lvl], ph, pw, sr, aligned)
    if geo is None:
      continue
    y1, x1, bh, bw, gh, gw = geo
    rows = _axis_reads(y1, bh, ph, gh, shapes[lvl][1])
    cols = _axis_reads(x1, bw, pw, gw, shapes[lvl][2])
    if len(rows) and len(cols):
      masks[lvl][b][np.ix_(rows, cols)] = True
  return sum(int(m.sum()) for m in masks)


def floor_bytes(shapes, scales, rois, bidx, levels, ph, pw, sr, aligned, itemsize, multilevel):
  """(forward, forward + backward) bytes that must move; see the module docstring."""
  channels = shapes[0][3]
  index = len(rois) * (4 * 4 + 4 + (4 if multilevel else 0))  # rois, batch indices, levels
  pooled = len(rois) * ph * pw * channels * itemsize  # output / its gradient
  read = touched_pixels(shapes, scales, rois, bidx, levels, ph, pw, sr, aligned)
  fwd = pooled + read * channels * itemsize + index
  bwd = sum(math.prod(shape) for shape in shapes) * itemsize + pooled + index
  return fwd, fwd + bwd
