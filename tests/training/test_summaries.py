"""Summaries without the tensorboard package, and detections drawn on a batch by hand."""

import glob
import os

import numpy as np
import pytest
import tensorflow as tf

from tfdet import visualization
from tfdet.data import keys, transforms
from tfdet.modeling.detectors import outputs as out
from tfdet.training import summaries


def _read(log_dir):
  values = []
  for path in glob.glob(os.path.join(str(log_dir), "events.out.tfevents.*")):
    for event in tf.compat.v1.train.summary_iterator(path):
      values += [(event.step, v) for v in event.summary.value]
  return values


def test_image_and_scalar_round_trip(tmp_path):
  pixels = np.random.default_rng(0).integers(0, 256, size=(5, 7, 3)).astype(np.uint8)
  writer = tf.summary.create_file_writer(str(tmp_path))
  with writer.as_default():
    summaries.image("predictions/0", pixels, 12)
    summaries.scalar("learning_rate", 0.25, 12)
  writer.close()
  (step, img), (step2, lr) = sorted(_read(tmp_path), key=lambda sv: sv[1].tag, reverse=True)
  assert (img.tag, step, step2) == ("predictions/0", 12, 12)
  assert img.metadata.plugin_data.plugin_name == "images"
  width, height, png = img.tensor.string_val
  assert (int(width), int(height)) == (7, 5)
  np.testing.assert_array_equal(tf.io.decode_png(png).numpy(), pixels)
  assert lr.metadata.plugin_data.plugin_name == "scalars"
  assert float(tf.make_ndarray(lr.tensor)) == 0.25


@pytest.mark.parametrize("order,means,stds", [
    ("bgr", transforms.DETECTRON_PIXEL_MEANS, (1.0, 1.0, 1.0)),
    ("rgb", (123.675, 116.28, 103.53), (58.395, 57.12, 57.375))])
def test_display_image_undoes_normalization_and_padding(order, means, stds):
  rgb = np.random.default_rng(1).integers(0, 256, size=(6, 9, 3)).astype(np.uint8)
  normalized = transforms.normalize_image(rgb, channel_order=order, pixel_means=means,
                                          pixel_stds=stds)
  padded = transforms.pad_image(normalized, 8, 12).numpy()
  info = np.array([6, 9, 1.5, 4, 6], np.float32)
  shown = summaries.display_image(padded, info, channel_order=order, pixel_means=means,
                                  pixel_stds=stds)
  np.testing.assert_array_equal(shown, rgb)


def _batch_and_outputs():
  """Two images (scales 2 and 1.5) and a padding row; 2 detections per image, M = 4."""
  rgb = np.random.default_rng(2).integers(0, 200, size=(3, 40, 60, 3)).astype(np.uint8)
  images = transforms.pad_image(transforms.normalize_image(rgb[0]), 48, 64).numpy()[None]
  images = np.concatenate([images, images, np.zeros_like(images)])
  infos = np.array([[40, 60, 2.0, 20, 30], [40, 60, 1.5, 27, 40], [0, 0, 0, 0, 0]], np.float32)
  outputs = {
      out.DETECTION_BOXES: np.array([[[5, 4, 15, 12], [0, 0, 3, 3]],
                                     [[4, 4, 20, 20], [0, 0, 3, 3]],
                                     [[0, 0, 0, 0], [0, 0, 0, 0]]], np.float32),
      out.DETECTION_SCORES: np.array([[0.9, 0.3], [0.8, 0.2], [0, 0]], np.float32),
      out.DETECTION_CLASSES: np.array([[2, 1], [1, 1], [0, 0]], np.int32),
      out.NUM_DETECTIONS: np.array([2, 2, 0], np.int32),
      out.DETECTION_MASKS: np.ones([3, 2, 4, 4], np.float32),
  }
  return rgb[0], {keys.IMAGES: images, keys.IMAGE_INFO: infos}, outputs


def test_draw_scales_boxes_to_the_resized_image():
  rgb, batch, outputs = _batch_and_outputs()
  drawn = summaries.PredictionImages(num_images=3, class_names={2: "b"},
                                     score_threshold=0.5).draw(batch, outputs,
                                                               convention="detectron")
  assert len(drawn) == 2 and all(d.shape == (40, 60, 3) for d in drawn)  # padding row skipped
  first, second = drawn
  color = visualization.class_color(2)
  # Box (5, 4, 15, 12) x 2 -> (10, 8, 30, 24): its bottom and right edges.
  np.testing.assert_array_equal(first[24, 12:29], np.broadcast_to(color, (17, 3)))
  np.testing.assert_array_equal(first[14:24, 30], np.broadcast_to(color, (10, 3)))
  # Inside: the mask blended at 40%; outside and the 0.3 detection: the image as it was.
  np.testing.assert_array_equal(first[18, 20], (0.6 * rgb[18, 20] + 0.4 * color).astype(np.uint8))
  np.testing.assert_array_equal(first[30:, 35:], rgb[30:, 35:])
  np.testing.assert_array_equal(first[:7, :7], rgb[:7, :7])
  # Scale 1.5: (4, 4, 20, 20) -> (6, 6, 30, 30).
  np.testing.assert_array_equal(second[30, 12:28], np.broadcast_to(visualization.class_color(1),
                                                                    (16, 3)))
  np.testing.assert_array_equal(second[32:, :], rgb[32:, :])


def test_keypoints_are_scaled_for_drawing(monkeypatch):
  _, batch, outputs = _batch_and_outputs()
  points = np.random.default_rng(3).uniform(0, 20, size=(3, 2, 17, 3)).astype(np.float32)
  outputs[out.DETECTION_KEYPOINTS] = points
  calls = []

  def fake_draw(image, boxes, classes, scores, *, masks=None, keypoints=None, class_names=None,
                score_threshold=0.5):
    calls.append(dict(image=image, boxes=boxes, masks=masks, keypoints=keypoints))
    return image

  monkeypatch.setattr(summaries.visualization, "draw_detections", fake_draw)
  summaries.PredictionImages(num_images=3).draw(batch, outputs, convention="detectron")
  assert len(calls) == 2
  for call, scale, i in zip(calls, (2.0, 1.5), range(2), strict=True):
    np.testing.assert_allclose(call["keypoints"][..., :2], points[i, :, :, :2] * scale)
    np.testing.assert_array_equal(call["keypoints"][..., 2], points[i, :, :, 2])
    np.testing.assert_allclose(call["boxes"], outputs[out.DETECTION_BOXES][i] * scale)
    assert call["masks"].shape == (2, 40, 60)


def test_rpn_only_models_show_their_best_proposals(monkeypatch):
  _, batch, _ = _batch_and_outputs()
  outputs = {  # proposals are in resized-image pixels already
      out.PROPOSALS: np.array([[[1, 1, 5, 5], [2, 2, 9, 9], [3, 3, 7, 7], [0, 0, 1, 1]]] * 3,
                              np.float32),
      out.PROPOSAL_SCORES: np.array([[0.2, 0.9, 0.6, 0.99]] * 3, np.float32),
      out.NUM_PROPOSALS: np.array([3, 3, 0], np.int32),
  }
  calls = []

  def fake_draw(image, boxes, classes, scores, *, masks=None, class_names=None,
                score_threshold=0.5):
    calls.append((boxes, classes, scores, class_names))
    return image

  monkeypatch.setattr(summaries.visualization, "draw_detections", fake_draw)
  drawn = summaries.PredictionImages(num_images=3, max_proposals=2).draw(
      batch, outputs, convention="detectron")
  assert len(drawn) == 2
  boxes, classes, scores, names = calls[0]
  np.testing.assert_array_equal(boxes, [[2, 2, 9, 9], [3, 3, 7, 7]])  # the best 2 of the 3 valid
  np.testing.assert_array_equal(scores, np.array([0.9, 0.6], np.float32))
  np.testing.assert_array_equal(classes, [0, 0])
  assert names == {0: "RPN"}
