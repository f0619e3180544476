"""Mask pasting against loop-based ports of Detectron's and detectron2's paste."""

import numpy as np
import pytest

from tfdet.ops import masks


def _cv2_resize_linear(src, out_w, out_h):
  """OpenCV INTER_LINEAR on float32, written out with loops (edges replicated)."""
  h, w = src.shape
  out = np.zeros((out_h, out_w), np.float64)
  for y in range(out_h):
    sy = min(max((y + 0.5) * h / out_h - 0.5, 0.0), h - 1.0)
    y0 = int(np.floor(sy))
    y1 = min(y0 + 1, h - 1)
    fy = sy - y0
    for x in range(out_w):
      sx = min(max((x + 0.5) * w / out_w - 0.5, 0.0), w - 1.0)
      x0 = int(np.floor(sx))
      x1 = min(x0 + 1, w - 1)
      fx = sx - x0
      out[y, x] = ((1 - fy) * ((1 - fx) * src[y0, x0] + fx * src[y0, x1])
                   + fy * ((1 - fx) * src[y1, x0] + fx * src[y1, x1]))
  return out


def _detectron_paste(mask, box, im_h, im_w, thresh=0.5):
  m = mask.shape[0]
  scale = (m + 2.0) / m
  w_half = (box[2] - box[0]) * 0.5 * scale
  h_half = (box[3] - box[1]) * 0.5 * scale
  cx, cy = (box[2] + box[0]) * 0.5, (box[3] + box[1]) * 0.5
  ref = np.array([cx - w_half, cy - h_half, cx + w_half, cy + h_half]).astype(np.int32)
  padded = np.zeros((m + 2, m + 2), np.float32)
  padded[1:-1, 1:-1] = mask
  w = max(ref[2] - ref[0] + 1, 1)
  h = max(ref[3] - ref[1] + 1, 1)
  resized = _cv2_resize_linear(padded, w, h) > thresh
  im = np.zeros((im_h, im_w), np.uint8)
  x0, x1 = max(ref[0], 0), min(ref[2] + 1, im_w)
  y0, y1 = max(ref[1], 0), min(ref[3] + 1, im_h)
  if x1 > x0 and y1 > y0:
    im[y0:y1, x0:x1] = resized[y0 - ref[1]:y1 - ref[1], x0 - ref[0]:x1 - ref[0]]
  return im


def _detectron2_paste(mask, box, im_h, im_w, thresh=0.5):
  m = mask.shape[0]
  out = np.zeros((im_h, im_w), np.uint8)

  def sample(v, u):
    y0, x0 = int(np.floor(v)), int(np.floor(u))
    total = 0.0
    for yy, wy in ((y0, 1 - (v - y0)), (y0 + 1, v - y0)):
      for xx, wx in ((x0, 1 - (u - x0)), (x0 + 1, u - x0)):
        if 0 <= yy < m and 0 <= xx < m:
          total += wy * wx * mask[yy, xx]
    return total

  for y in range(im_h):
    for x in range(im_w):
      u = (x + 0.5 - box[0]) / (box[2] - box[0]) * m - 0.5
      v = (y + 0.5 - box[1]) / (box[3] - box[1]) * m - 0.5
      out[y, x] = sample(v, u) >= thresh
  return out


@pytest.mark.parametrize("convention", ["detectron", "modern"])
def test_paste_matches_reference_ports(convention):
  rng = np.random.default_rng(0)
  m, im_h, im_w = 6, 23, 31
  probs = rng.uniform(size=(1, 4, m, m)).astype(np.float32)
  boxes = np.array([[[2.3, 3.1, 15.7, 12.2], [-4.0, -2.5, 9.0, 30.0],
                     [20.0, 5.0, 40.0, 19.5], [10.0, 10.0, 10.4, 11.0]]], np.float32)
  got = masks.paste_masks(probs, boxes, im_h, im_w, convention=convention).numpy()
  port = _detectron_paste if convention == "detectron" else _detectron2_paste
  for d in range(4):
    expect = port(probs[0, d], boxes[0, d], im_h, im_w)
    np.testing.assert_array_equal(got[0, d], expect, err_msg=f"detection {d}")


def test_detectron_paste_of_a_full_mask_by_hand():
  # M = 2, box [0, 0, 3, 3]: the box grows by (M+2)/M = 2 to [-1, 4] (6 pixels);
  # the zero-padded 4x4 mask resized to 6 crosses 0.5 strictly inside columns 1..2.
  got = masks.paste_masks(np.ones([1, 1, 2, 2], np.float32),
                          np.array([[[0.0, 0.0, 3.0, 3.0]]], np.float32), 6, 6,
                          convention="detectron").numpy()[0, 0]
  expect = np.zeros([6, 6], np.uint8)
  expect[1:3, 1:3] = 1
  np.testing.assert_array_equal(got, expect)
