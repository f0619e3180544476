"""Box encode/decode, IoU, clipping and filtering, checked by hand and against numpy."""

import math

import numpy as np
import pytest
import tensorflow as tf

from tests import numpy_reference as ref
from tfdet.ops import boxes as box_ops


def _random_boxes(rng, n, size=100.0):
  xy = rng.uniform(0, size, (n, 2))
  wh = rng.uniform(1, size / 2, (n, 2))
  return np.concatenate([xy, xy + wh], axis=1).astype(np.float32)


def test_offsets():
  assert box_ops.box_offset("detectron") == 1.0
  assert box_ops.box_offset("modern") == 0.0
  with pytest.raises(ValueError, match="convention"):
    box_ops.box_offset("caffe")


def test_areas_by_hand():
  b = tf.constant([[0.0, 0.0, 9.0, 19.0]])
  assert box_ops.areas(b, convention="detectron").numpy()[0] == 200.0
  assert box_ops.areas(b, convention="modern").numpy()[0] == 171.0


def test_iou_by_hand():
  a = tf.constant([[0.0, 0.0, 9.0, 9.0]])
  b = tf.constant([[5.0, 0.0, 14.0, 9.0], [20.0, 20.0, 30.0, 30.0]])
  # detectron: each 10x10=100, overlap 5x10=50 -> 50/150.
  np.testing.assert_allclose(box_ops.pairwise_iou(a, b, convention="detectron").numpy(),
                             [[50.0 / 150.0, 0.0]], rtol=1e-6)
  # modern: each 9x9=81, overlap 4x9=36 -> 36/126.
  np.testing.assert_allclose(box_ops.pairwise_iou(a, b, convention="modern").numpy(),
                             [[36.0 / 126.0, 0.0]], rtol=1e-6)


@pytest.mark.parametrize("convention,off", [("detectron", 1.0), ("modern", 0.0)])
def test_iou_matches_numpy_batched(convention, off):
  rng = np.random.default_rng(0)
  a = np.stack([_random_boxes(rng, 7) for _ in range(2)])
  b = np.stack([_random_boxes(rng, 5) for _ in range(2)])
  got = box_ops.pairwise_iou(tf.constant(a), tf.constant(b), convention=convention).numpy()
  for i in range(2):
    np.testing.assert_allclose(got[i], ref.iou_matrix(a[i], b[i], off), rtol=1e-5, atol=1e-6)


def test_encode_by_hand_detectron():
  anchor = tf.constant([[0.0, 0.0, 15.0, 15.0]])  # w = h = 16, centre 8
  box = tf.constant([[8.0, 0.0, 39.0, 7.0]])  # w = 32, h = 8, centre (24, 4)
  d = box_ops.encode(box, anchor, weights=(10.0, 10.0, 5.0, 5.0), convention="detectron")
  np.testing.assert_allclose(d.numpy(), [[10 * 16 / 16, 10 * -4 / 16, 5 * math.log(2.0),
                                          5 * math.log(0.5)]], rtol=1e-6)


@pytest.mark.parametrize("convention", ["detectron", "modern"])
@pytest.mark.parametrize("weights", [(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0)])
def test_encode_decode_round_trip(convention, weights):
  rng = np.random.default_rng(1)
  anchors = tf.constant(_random_boxes(rng, 50))
  gt = tf.constant(_random_boxes(rng, 50))
  deltas = box_ops.encode(gt, anchors, weights=weights, convention=convention)
  back = box_ops.decode(deltas, anchors, weights=weights, convention=convention)
  np.testing.assert_allclose(back.numpy(), gt.numpy(), atol=1e-3)


def test_decode_clips_log_size():
  anchor = tf.constant([[0.0, 0.0, 15.0, 15.0]])
  d = tf.constant([[0.0, 0.0, 100.0, 100.0]])
  out = box_ops.decode(d, anchor, convention="detectron").numpy()[0]
  w = out[2] - out[0] + 1.0
  np.testing.assert_allclose(w, 16.0 * 1000.0 / 16.0, rtol=1e-5)


def test_clip_to_image_per_image_sizes():
  b = tf.constant([[[-5.0, -5.0, 200.0, 50.0]], [[-5.0, -5.0, 200.0, 50.0]]])
  size = tf.constant([[[100.0, 120.0]], [[40.0, 300.0]]])  # (h, w) per image
  det = box_ops.clip_to_image(b, size, convention="detectron").numpy()
  np.testing.assert_array_equal(det[0, 0], [0, 0, 119, 50])
  np.testing.assert_array_equal(det[1, 0], [0, 0, 200, 39])
  mod = box_ops.clip_to_image(b, size, convention="modern").numpy()
  np.testing.assert_array_equal(mod[0, 0], [0, 0, 120, 50])


def test_min_size_mask():
  b = tf.constant([[0.0, 0.0, 3.0, 10.0], [0.0, 0.0, 4.0, 10.0]])
  np.testing.assert_array_equal(
      box_ops.min_size_mask(b, 5.0, convention="detectron").numpy(), [False, True])
  np.testing.assert_array_equal(
      box_ops.min_size_mask(b, 4.0, convention="modern").numpy(), [False, True])


@pytest.mark.parametrize("convention", ["detectron", "modern"])
def test_flip_is_an_involution_and_keeps_pixels(convention):
  b = tf.constant([[0.0, 2.0, 9.0, 5.0]])
  flipped = box_ops.flip_horizontal(b, 20.0, convention=convention)
  expect = [10.0, 2.0, 19.0, 5.0] if convention == "detectron" else [11.0, 2.0, 20.0, 5.0]
  np.testing.assert_array_equal(flipped.numpy()[0], expect)
  np.testing.assert_array_equal(
      box_ops.flip_horizontal(flipped, 20.0, convention=convention).numpy(), b.numpy())
