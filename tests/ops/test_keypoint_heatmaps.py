"""Keypoints from heatmaps: OpenCV's bicubic resize, and Detectron's heatmaps_to_keypoints
(ported here in numpy with cv2, as Detectron runs it), by hand and on random maps."""

import math

import cv2  # requirements-dev.txt: the reference every case is compared with
import numpy as np
import pytest

from tfdet.ops import keypoint_heatmaps as kh


@pytest.mark.parametrize("height,width", [(120, 37), (56, 56), (13, 200), (1, 1), (301, 451)])
def test_cubic_resize_is_opencvs(height, width):
  maps = np.random.default_rng(height).normal(size=(56, 56, 17)).astype(np.float32)
  want = cv2.resize(maps, (width, height), interpolation=cv2.INTER_CUBIC)
  got = kh.cubic_resize(maps, height, width).numpy()
  assert got.shape == (height, width, 17)
  np.testing.assert_allclose(got, want, atol=2e-6)


def np_heatmaps_to_keypoints(maps, rois):
  """Detectron's utils/keypoints.heatmaps_to_keypoints (INFERENCE_MIN_SIZE 0), NHWC maps.

  maps: [D, S, S, J]; rois: [D, 4]. Returns [D, J, 3] (x, y, logit).
  """
  out = np.zeros((len(rois), maps.shape[-1], 3), np.float32)
  for i, (x1, y1, x2, y2) in enumerate(rois):
    w, h = max(x2 - x1, 1), max(y2 - y1, 1)
    wc, hc = math.ceil(w), math.ceil(h)
    roi_map = cv2.resize(maps[i], (wc, hc), interpolation=cv2.INTER_CUBIC).reshape(hc, wc, -1)
    for k in range(maps.shape[-1]):
      pos = roi_map[:, :, k].argmax()
      x_int, y_int = pos % wc, pos // wc
      out[i, k] = [(x_int + 0.5) * w / wc + x1, (y_int + 0.5) * h / hc + y1,
                   roi_map[y_int, x_int, k]]
  return out


def test_a_single_peak_by_hand():
  maps = np.zeros((1, 1, 56, 56, 2), np.float32)
  maps[0, 0, 7, 5, 0] = 9.0  # keypoint 0: row 7, column 5
  maps[0, 0, 40, 50, 1] = 3.0
  # A 56 x 56 box: the resize is the identity; cell (5, 7) -> x1 + 5.5, y1 + 7.5.
  got = kh.heatmaps_to_keypoints(maps, np.array([[[10.0, 20.0, 66.0, 76.0]]], np.float32))
  np.testing.assert_allclose(got[0, 0], [[15.5, 27.5, 9.0], [60.5, 60.5, 3.0]], rtol=1e-6)


def test_matches_detectron_on_random_maps_and_boxes():
  rng = np.random.default_rng(0)
  b, d, j = 2, 6, 17
  maps = rng.normal(size=(b, d, 56, 56, j)).astype(np.float32)
  x1 = rng.uniform(0, 300, (b, d))
  y1 = rng.uniform(0, 200, (b, d))
  w = rng.uniform(0.2, 250, (b, d))  # some boxes under one pixel wide
  h = rng.uniform(0.2, 250, (b, d))
  boxes = np.stack([x1, y1, x1 + w, y1 + h], -1).astype(np.float32)
  got = kh.heatmaps_to_keypoints(maps, boxes).numpy()
  for i in range(b):
    want = np_heatmaps_to_keypoints(maps[i], boxes[i])
    np.testing.assert_allclose(got[i], want, rtol=1e-5, atol=1e-3)
