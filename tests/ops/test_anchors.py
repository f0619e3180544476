"""Anchors: Detectron's quantized cell anchors (hand-checked) and grid order."""

import numpy as np
import pytest
import tensorflow as tf

from tfdet.ops import anchors


def test_detectron_cell_anchors_classic_values():
  # Faster R-CNN's classic 9 anchors: stride 16, scales 8/16/32 (sizes 128..512).
  # Ratio 0.5: w = round(sqrt(256 / 0.5)) = 23, h = round(11.5) = 12 (round half
  # to even), centre 7.5, scaled x8 -> 184 x 96 -> [-84, -40, 99, 55].
  got = anchors.generate_cell_anchors(16, (128, 256, 512), (0.5, 1.0, 2.0),
                                      convention="detectron")
  expect = [[-84, -40, 99, 55], [-176, -88, 191, 103], [-360, -184, 375, 199],
            [-56, -56, 71, 71], [-120, -120, 135, 135], [-248, -248, 263, 263],
            [-36, -80, 51, 95], [-80, -168, 95, 183], [-168, -344, 183, 359]]
  np.testing.assert_array_equal(got, np.array(expect, np.float32))


def test_detectron_fpn_level_anchor():
  # P2 (stride 4, size 32), ratio 1: the 4x4 cell [0, 0, 3, 3] scaled by 8
  # around centre 1.5 -> [-14, -14, 17, 17] (32 pixels wide with the +1).
  got = anchors.generate_cell_anchors(4, (32,), (1.0,), convention="detectron")
  np.testing.assert_array_equal(got, [[-14, -14, 17, 17]])


def test_modern_cell_anchors_exact_area_and_ratio():
  got = anchors.generate_cell_anchors(16, (32, 64), (0.5, 2.0), convention="modern")
  w = got[:, 2] - got[:, 0]
  h = got[:, 3] - got[:, 1]
  np.testing.assert_allclose(w * h, [32 * 32, 32 * 32, 64 * 64, 64 * 64], rtol=1e-5)
  np.testing.assert_allclose(h / w, [0.5, 2.0, 0.5, 2.0], rtol=1e-5)
  np.testing.assert_allclose(got[:, 0] + got[:, 2], 0.0, atol=1e-5)  # centred on 0


def test_retinanet_cell_anchors_order_and_sizes():
  got = anchors.retinanet_cell_anchors(8, convention="modern")
  assert got.shape == (9, 4)
  sizes = np.sqrt((got[:, 2] - got[:, 0]) * (got[:, 3] - got[:, 1]))
  expect = np.repeat([32.0, 32.0 * 2 ** (1 / 3), 32.0 * 2 ** (2 / 3)], 3)
  np.testing.assert_allclose(sizes, expect, rtol=1e-5)
  det = anchors.retinanet_cell_anchors(8, convention="detectron")
  np.testing.assert_array_equal(det[:3], anchors.generate_cell_anchors(
      8, (32.0,), (0.5, 1.0, 2.0), convention="detectron"))


def test_grid_anchors_order_matches_nhwc_flatten():
  cell = np.array([[0, 0, 1, 1], [0, 0, 2, 2]], np.float32)
  got = anchors.grid_anchors(cell, stride=10, height=2, width=3).numpy()
  assert got.shape == (2 * 3 * 2, 4)
  # index (y * W + x) * A + a
  y, x, a = 1, 2, 1
  np.testing.assert_array_equal(got[(y * 3 + x) * 2 + a], cell[a] + [20, 10, 20, 10])


def test_grid_anchors_dynamic_size_in_tf_function():
  cell = anchors.generate_cell_anchors(4, (32,), (0.5, 1.0, 2.0), convention="detectron")

  @tf.function(input_signature=[tf.TensorSpec([None, None, None, 8])])
  def fn(features):
    s = tf.shape(features)
    return anchors.grid_anchors(cell, stride=4, height=s[1], width=s[2])

  assert fn(tf.zeros([1, 5, 7, 8])).shape == (5 * 7 * 3, 4)


def test_multilevel_validates_lengths():
  with pytest.raises(ValueError, match="one entry per level"):
    anchors.multilevel_anchors([np.zeros((1, 4))], [4, 8], [(2, 2)])


def test_bad_arguments():
  with pytest.raises(ValueError, match="convention"):
    anchors.generate_cell_anchors(4, (32,), (1.0,), convention="x")
  with pytest.raises(ValueError, match="stride"):
    anchors.generate_cell_anchors(0, (32,), (1.0,), convention="modern")
