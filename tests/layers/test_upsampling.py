"""Detectron's fixed bilinear x2 upsampling of keypoint heatmaps, by hand."""

import numpy as np
import pytest

from tfdet.layers.upsampling import BilinearUpsampling, bilinear_filter


def test_filter_is_detectrons_upsample_filt():
  # size 4: factor 2, centre 1.5 -> 1 - |i - 1.5| / 2 = (0.25, 0.75, 0.75, 0.25) per axis.
  row = np.array([0.25, 0.75, 0.75, 0.25], np.float32)
  np.testing.assert_allclose(bilinear_filter(4), np.outer(row, row))


def _one_d(v):
  # Stride 2, kernel (0.25, 0.75, 0.75, 0.25), one pixel cropped per side: each input
  # spreads 0.75 to its own two outputs and 0.25 to the next ones; the border outputs miss
  # a neighbour (Caffe2's zero padding).
  out = np.zeros(2 * len(v))
  for i, a in enumerate(v):
    out[2 * i] += 0.75 * a
    out[2 * i + 1] += 0.75 * a
    if 2 * i - 1 >= 0:
      out[2 * i - 1] += 0.25 * a
    if 2 * i + 2 < len(out):
      out[2 * i + 2] += 0.25 * a
  return out


def test_two_pixels_by_hand():
  np.testing.assert_allclose(_one_d([4.0, 8.0]), [3.0, 5.0, 7.0, 6.0])  # .75a, .75a + .25b, .25a + .75b, .75b


def test_separable_and_per_channel():
  rng = np.random.default_rng(0)
  u, v, w = rng.normal(size=5), rng.normal(size=3), rng.normal(size=5)
  x = np.stack([np.outer(u, v), np.outer(w, v)], axis=-1)[None].astype(np.float32)  # [1, 5, 3, 2]
  y = BilinearUpsampling(2)(x).numpy()
  assert y.shape == (1, 10, 6, 2)
  np.testing.assert_allclose(y[0, ..., 0], np.outer(_one_d(u), _one_d(v)), atol=1e-6)
  np.testing.assert_allclose(y[0, ..., 1], np.outer(_one_d(w), _one_d(v)), atol=1e-6)
  assert not BilinearUpsampling(2).trainable_weights


def test_odd_scale_is_refused():
  with pytest.raises(ValueError, match="even scale"):
    BilinearUpsampling(3)
