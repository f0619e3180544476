"""Decoder: records written with schema.make_example, decoded in both conventions."""

import numpy as np
import pytest
import tensorflow as tf

from tfdet.data import decoder, keys, schema


def _png(height, width, value=0):
  image = np.full([height, width, 3], value, np.uint8)
  image[0, 0] = [10, 20, 30]
  return tf.io.encode_png(image).numpy()


def _record(*, keypoints=None, proposals=None, scores=None, fmt="png"):
  """A 40x60 (h x w) image with 4 instances:

  0: polygon instance with 2 polygons (3 and 4 vertices), box (5, 6, 10, 8);
  1: crowd RLE instance with 0 polygons, box (20, 10, 15, 12);
  2: zero-area annotation (dropped);
  3: box 1 pixel wide (dropped in "detectron", kept in "modern"), 1 polygon.
  """
  image = _png(40, 60) if fmt == "png" else tf.io.encode_jpeg(
      np.full([40, 60, 3], 128, np.uint8)).numpy()
  example = schema.make_example(
      encoded_image=image, image_format=fmt, image_id=7, filename="a.png", height=40,
      width=60,
      boxes_xywh=[[5, 6, 10, 8], [20, 10, 15, 12], [1, 1, 5, 5], [30, 30, 1, 4]],
      classes=[3, 1, 2, 4], category_ids=[3, 1, 2, 5], is_crowd=[0, 1, 0, 0],
      areas=[50.0, 100.0, 0.0, 2.0], annotation_ids=[1, 2, 3, 4],
      polygons=[[[5, 6, 15, 6, 15, 14], [5, 6, 6, 6, 6, 7, 5, 7]], [], [[1, 1, 6, 1, 6, 6]],
                [[30, 30, 31, 30, 31, 34]]],
      rles=[b"", b"rle", b"", b""], keypoints=keypoints)
  feature = example.features.feature
  if proposals is not None:
    feature[schema.PROPOSAL_BOXES].float_list.value.extend(np.ravel(proposals).tolist())
  if scores is not None:
    feature[schema.PROPOSAL_SCORES].float_list.value.extend(scores)
  return example.SerializeToString()


@pytest.mark.parametrize("convention,x2_off,kept", [("detectron", 1.0, 2), ("modern", 0.0, 3)])
def test_boxes_classes_crowd(convention, x2_off, kept):
  out = decoder.decode(_record(), convention=convention, max_polygon_vertices=8)
  boxes = out[keys.GT_BOXES].numpy()
  assert boxes.shape == (kept, 4)
  np.testing.assert_allclose(boxes[0], [5, 6, 15 - x2_off, 14 - x2_off])
  np.testing.assert_allclose(boxes[1], [20, 10, 35 - x2_off, 22 - x2_off])
  np.testing.assert_array_equal(out[keys.GT_CLASSES].numpy(), [3, 1, 4][:kept])
  np.testing.assert_array_equal(out[keys.GT_IS_CROWD].numpy(), [False, True, False][:kept])
  assert out[keys.IMAGE_ID].numpy() == 7
  assert out[decoder.IMAGE].dtype == tf.uint8
  assert out[decoder.IMAGE].shape == (40, 60, 3)
  np.testing.assert_array_equal(out[decoder.IMAGE].numpy()[0, 0], [10, 20, 30])
  np.testing.assert_array_equal(out[decoder.ORIGINAL_SIZE].numpy(), [40, 60])


def test_polygons_several_parts_and_crowd_without_polygons():
  out = decoder.decode(_record(), convention="modern", max_polygon_vertices=8)
  polys = out[keys.GT_POLYGONS].numpy()
  ids = out[keys.GT_POLYGON_IDS].numpy()
  assert polys.shape == (3, 8, 2) and ids.shape == (3, 8)
  np.testing.assert_array_equal(ids[0], [0, 0, 0, 1, 1, 1, 1, -1])
  np.testing.assert_allclose(polys[0, :7], [[5, 6], [15, 6], [15, 14], [5, 6], [6, 6], [6, 7],
                                            [5, 7]])
  np.testing.assert_allclose(polys[0, 7], [0, 0])
  np.testing.assert_array_equal(ids[1], [-1] * 8)  # the crowd RLE instance
  np.testing.assert_allclose(polys[1], 0.0)
  np.testing.assert_array_equal(ids[2], [0, 0, 0, -1, -1, -1, -1, -1])
  np.testing.assert_allclose(polys[2, :3], [[30, 30], [31, 30], [31, 34]])


def test_polygon_decimation():
  # Instance 0 has 7 vertices; with V = 4 slots j take vertices floor(j * 7 / 4) = 0, 1, 3, 5.
  out = decoder.decode(_record(), convention="modern", max_polygon_vertices=4)
  np.testing.assert_array_equal(out[keys.GT_POLYGON_IDS].numpy()[0], [0, 0, 1, 1])
  np.testing.assert_allclose(out[keys.GT_POLYGONS].numpy()[0], [[5, 6], [15, 6], [5, 6], [6, 7]])


def test_missing_keypoints_are_zeros_and_present_ones_decode():
  out = decoder.decode(_record(), convention="detectron", max_polygon_vertices=8)
  assert out[keys.GT_KEYPOINTS].shape == (2, 17, 3)
  np.testing.assert_allclose(out[keys.GT_KEYPOINTS].numpy(), 0.0)
  assert not decoder.has_visible_keypoints(out)
  kps = [np.zeros(51).tolist() for _ in range(4)]
  kps[0][3:6] = [7.0, 8.0, 2.0]  # left_eye
  out = decoder.decode(_record(keypoints=kps), convention="detectron", max_polygon_vertices=8)
  np.testing.assert_allclose(out[keys.GT_KEYPOINTS].numpy()[0, 1], [7, 8, 2])
  assert decoder.has_visible_keypoints(out)
  assert decoder.has_non_crowd_gt(out)


def test_jpeg():
  out = decoder.decode(_record(fmt="jpeg"), convention="detectron", max_polygon_vertices=8)
  assert out[decoder.IMAGE].shape == (40, 60, 3)
  assert abs(int(out[decoder.IMAGE].numpy()[20, 30, 0]) - 128) <= 2


@pytest.mark.parametrize("convention", ["detectron", "modern"])
def test_proposals_clip_unique_small_topk(convention):
  proposals = [
      [0, 0, 10, 10],
      [-5, 2, 70, 30],  # clipped to (0, 2, 59, 30)
      [0.2, 0, 10, 10.1],  # duplicate of box 0 after rounding
      [3, 3, 5, 20],  # width 3 > 2: kept
      [3, 3, 4, 20],  # width 2: dropped (needs > 2)
      [1, 1, 30, 30],
      [2, 2, 30, 30],
  ]
  out = decoder.parse_annotations(
      _record(proposals=proposals, scores=[0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3]),
      convention=convention, max_polygon_vertices=4, with_proposals=True, max_proposals=4)
  extra = 1.0 if convention == "modern" else 0.0
  expected = np.array([[0, 0, 10, 10], [0, 2, 59, 30], [3, 3, 5, 20], [1, 1, 30, 30]], np.float32)
  expected[:, 2:] += extra
  np.testing.assert_allclose(out[keys.PROPOSALS].numpy(), expected)
  np.testing.assert_allclose(out[keys.PROPOSAL_SCORES].numpy(), [0.9, 0.8, 0.6, 0.4])


def test_proposals_without_scores_and_absent():
  out = decoder.parse_annotations(_record(proposals=[[0, 0, 10, 10]]), convention="detectron",
                                  max_polygon_vertices=4, with_proposals=True)
  np.testing.assert_allclose(out[keys.PROPOSAL_SCORES].numpy(), [0.0])
  out = decoder.parse_annotations(_record(), convention="detectron", max_polygon_vertices=4,
                                  with_proposals=True)
  assert out[keys.PROPOSALS].shape == (0, 4)
