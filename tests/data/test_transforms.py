"""Transforms: hand-computed resize scales, flips in both conventions, normalization, padding."""

import numpy as np
import pytest
import tensorflow as tf

from tfdet.data import decoder, keys, schema, transforms


def _example(height=40, width=60):
  image = np.arange(height * width * 3, dtype=np.float32).reshape([height, width, 3]) % 251
  kps = np.zeros([2, 17, 3], np.float32)
  kps[0, 1] = [10, 5, 2]  # left_eye, visible
  kps[0, 2] = [12, 5, 1]  # right_eye, labelled not visible
  kps[0, 5] = [0, 0, 0]  # left_shoulder, not labelled
  kps[0, 6] = [3, 9, 0]  # right_shoulder: v = 0 but x != 0 (x is zeroed on flip)
  return {
      decoder.IMAGE: tf.constant(image.astype(np.uint8)),
      keys.IMAGE_ID: tf.constant(3, tf.int64),
      keys.GT_BOXES: tf.constant([[5, 6, 14, 13], [20, 10, 34, 21]], tf.float32),
      keys.GT_CLASSES: tf.constant([3, 1], tf.int32),
      keys.GT_IS_CROWD: tf.constant([False, True]),
      keys.GT_POLYGONS: tf.constant([[[5, 6], [15, 6], [15, 14], [0, 0]],
                                     [[0, 0], [0, 0], [0, 0], [0, 0]]], tf.float32),
      keys.GT_POLYGON_IDS: tf.constant([[0, 0, 0, -1], [-1, -1, -1, -1]], tf.int32),
      keys.GT_KEYPOINTS: tf.constant(kps),
      keys.PROPOSALS: tf.constant([[0, 0, 59, 39]], tf.float32),
      keys.PROPOSAL_SCORES: tf.constant([0.5], tf.float32),
  }


@pytest.mark.parametrize("h,w,scale,max_size,expected_scale,expected_size", [
    (480, 640, 800, 1333, 800 / 480, (800, 1067)),
    (640, 480, 800, 1333, 800 / 480, (1067, 800)),
    (100, 2000, 800, 1333, 1333 / 2000, (67, 1333)),  # capped by max_size
    (600, 1000, 800, 1333, 800 / 600, (800, 1333)),  # round(1333.3) = 1333 is not > 1333
    (600, 1001, 800, 1333, 1333 / 1001, (799, 1333)),  # round(1334.7) > 1333
])
def test_compute_scale_matches_prep_im_for_blob(h, w, scale, max_size, expected_scale,
                                                 expected_size):
  s = transforms.compute_scale(h, w, scale=scale, max_size=max_size)
  np.testing.assert_allclose(s.numpy(), expected_scale, rtol=1e-6)
  np.testing.assert_array_equal(transforms.resized_size(h, w, s).numpy(), expected_size)


def test_resize_example_scales_image_and_geometry():
  ex = _example()
  out, s = transforms.resize_example(ex, scale=80, max_size=1000)
  np.testing.assert_allclose(s.numpy(), 2.0)
  assert out[decoder.IMAGE].shape == (80, 120, 3) and out[decoder.IMAGE].dtype == tf.float32
  # Detectron multiplies every coordinate (also its inclusive x2) by the scale.
  np.testing.assert_allclose(out[keys.GT_BOXES].numpy(), ex[keys.GT_BOXES].numpy() * 2)
  np.testing.assert_allclose(out[keys.GT_POLYGONS].numpy(), ex[keys.GT_POLYGONS].numpy() * 2)
  np.testing.assert_allclose(out[keys.GT_KEYPOINTS].numpy()[0, 1], [20, 10, 2])
  np.testing.assert_allclose(out[keys.PROPOSALS].numpy(), [[0, 0, 118, 78]])
  # Bilinear with half-pixel centres: a x2 upsample of a constant stays constant.
  const = {**ex, decoder.IMAGE: tf.fill([40, 60, 3], tf.constant(7, tf.uint8))}
  np.testing.assert_allclose(transforms.resize_example(const, scale=80, max_size=1000)[0][
      decoder.IMAGE].numpy(), 7.0)


@pytest.mark.parametrize("convention,right", [("detectron", 59.0), ("modern", 60.0)])
def test_flip_geometry(convention, right):
  ex = _example()
  out = transforms.flip_example(ex, convention=convention)
  np.testing.assert_array_equal(out[decoder.IMAGE].numpy(), ex[decoder.IMAGE].numpy()[:, ::-1])
  np.testing.assert_allclose(out[keys.GT_BOXES].numpy(),
                             [[right - 14, 6, right - 5, 13], [right - 34, 10, right - 20, 21]])
  np.testing.assert_allclose(out[keys.GT_POLYGONS].numpy()[0],
                             [[right - 5, 6], [right - 15, 6], [right - 15, 14], [0, 0]])
  np.testing.assert_allclose(out[keys.GT_POLYGONS].numpy()[1], 0.0)  # padding stays 0
  kps = out[keys.GT_KEYPOINTS].numpy()[0]
  np.testing.assert_allclose(kps[2], [right - 10, 5, 2])  # old left_eye is now right_eye
  np.testing.assert_allclose(kps[1], [right - 12, 5, 1])  # old right_eye is now left_eye
  np.testing.assert_allclose(kps[5], [0, 9, 0])  # v = 0: x zeroed (Detectron), y untouched
  np.testing.assert_allclose(kps[6], [0, 0, 0])
  np.testing.assert_allclose(out[keys.PROPOSALS].numpy(), [[right - 59, 0, right, 39]])


@pytest.mark.parametrize("convention", ["detectron", "modern"])
def test_flip_twice_is_identity(convention):
  ex = _example()
  twice = transforms.flip_example(transforms.flip_example(ex, convention=convention),
                                  convention=convention)
  for key in (decoder.IMAGE, keys.GT_BOXES, keys.GT_POLYGONS, keys.PROPOSALS):
    np.testing.assert_allclose(twice[key].numpy(), ex[key].numpy())
  kps = ex[keys.GT_KEYPOINTS].numpy().copy()
  kps[..., 0] *= kps[..., 2] > 0  # COCO convention: unlabelled keypoints have x = 0
  np.testing.assert_allclose(twice[keys.GT_KEYPOINTS].numpy(), kps)


def test_flip_permutation_is_left_right_swap():
  perm = schema.KEYPOINT_FLIP_PERMUTATION
  for i, name in enumerate(schema.KEYPOINT_NAMES):
    other = schema.KEYPOINT_NAMES[perm[i]]
    assert other == name.replace("left", "tmp").replace("right", "left").replace("tmp", "right")


def test_random_flip_probability_extremes():
  ex = _example()
  seed = tf.constant([1, 2], tf.int64)
  never = transforms.random_flip(ex, probability=0.0, seed=seed, convention="modern")
  always = transforms.random_flip(ex, probability=1.0, seed=seed, convention="modern")
  np.testing.assert_allclose(never[keys.GT_BOXES].numpy(), ex[keys.GT_BOXES].numpy())
  np.testing.assert_allclose(always[keys.GT_BOXES].numpy()[0], [46, 6, 55, 13])


def test_choose_scale_covers_the_list():
  scales = [640, 672, 704, 736, 768, 800]
  seen = {float(transforms.choose_scale(scales, tf.constant([i, 0], tf.int64)).numpy())
          for i in range(60)}
  assert seen == {float(s) for s in scales}


def test_normalize_bgr_and_rgb():
  rgb = tf.constant([[[10.0, 20.0, 30.0]]])
  np.testing.assert_allclose(transforms.normalize_image(rgb).numpy()[0, 0],
                             [30 - 102.9801, 20 - 115.9465, 10 - 122.7717], rtol=1e-6)
  out = transforms.normalize_image(rgb, channel_order="rgb", pixel_means=(1, 2, 3),
                                   pixel_stds=(3, 2, 1))
  np.testing.assert_allclose(out.numpy()[0, 0], [3, 9, 27])
  with pytest.raises(ValueError):
    transforms.normalize_image(rgb, channel_order="hsv")


def test_canvas_shapes_and_pad_image():
  land, port = transforms.canvas_shapes(scales=[640, 800], max_size=1333, size_divisibility=32)
  assert land == (800, 1344) and port == (1344, 800)
  land, port = transforms.canvas_shapes(scales=[800], max_size=1333, size_divisibility=128)
  assert land == (896, 1408) and port == (1408, 896)
  assert transforms.canvas_shapes(scales=[800], max_size=1333, size_divisibility=32,
                                  aspect_grouping=False) == ((1344, 1344), (1344, 1344))
  padded = transforms.pad_image(tf.ones([3, 5, 3]), 8, 16).numpy()
  assert padded.shape == (8, 16, 3)
  assert padded[:3, :5].min() == 1.0 and padded[3:].max() == 0.0 and padded[:, 5:].max() == 0.0


def test_pad_instances_drops_zero_area_and_masks():
  ex = _example()
  ex[keys.GT_BOXES] = tf.constant([[5, 6, 5, 13], [20, 10, 34, 21]], tf.float32)  # 0 wide
  out = transforms.pad_instances(ex, max_instances=4, convention="modern")
  assert out[keys.NUM_GT].numpy() == 1
  np.testing.assert_array_equal(out[keys.GT_VALID].numpy(), [True, False, False, False])
  np.testing.assert_allclose(out[keys.GT_BOXES].numpy()[0], [20, 10, 34, 21])
  np.testing.assert_allclose(out[keys.GT_BOXES].numpy()[1:], 0.0)
  np.testing.assert_array_equal(out[keys.GT_CLASSES].numpy(), [1, 0, 0, 0])
  np.testing.assert_array_equal(out[keys.GT_IS_CROWD].numpy(), [True, False, False, False])
  assert out[keys.GT_POLYGONS].shape == (4, 4, 2)
  np.testing.assert_array_equal(out[keys.GT_POLYGON_IDS].numpy(), -np.ones([4, 4]))
  assert out[keys.GT_KEYPOINTS].shape == (4, 17, 3)
  # Truncation to M keeps the first rows.
  out = transforms.pad_instances(_example(), max_instances=1, convention="detectron")
  assert out[keys.NUM_GT].numpy() == 1 and out[keys.GT_BOXES].shape == (1, 4)
  np.testing.assert_array_equal(out[keys.GT_CLASSES].numpy(), [3])


def test_pad_proposals():
  out = transforms.pad_proposals(_example(), max_proposals=3)
  assert out[keys.PROPOSALS].shape == (3, 4)
  np.testing.assert_array_equal(out[keys.PROPOSALS_VALID].numpy(), [True, False, False])
  np.testing.assert_allclose(out[keys.PROPOSAL_SCORES].numpy(), [0.5, 0, 0])
