"""Keypoints through export, a fresh process, infer and drawing.

The exported model is `keypoint_model.BoxKeypointModel` (the tiny Mask R-CNN
plus keypoints computed from its boxes, a stand-in for a keypoint head). A
fresh process that never imports tfdet loads the SavedModel and runs its
three signatures; their `detection_keypoints` must be the in-process
model's, lie in the original image, and follow the boxes they were computed
from; `tfdet.infer` writes them into its COCO json.
"""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from tests.export import fresh_process, keypoint_model, tiny
from tfdet import infer, visualization
from tfdet.data import synthetic
from tfdet.export import serving
from tfdet.modeling.detectors import outputs as out

_SPECS = ("specs={name: {k: [v.dtype.name, v.shape.as_list()] "
          "for k, v in loaded.signatures[name].structured_outputs.items()} for name in results}")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
  tf.keras.utils.set_random_seed(0)
  tmp = tmp_path_factory.mktemp("export_keypoints")
  # Faster R-CNN (no mask head): a smaller graph to trace and save.
  model = keypoint_model.BoxKeypointModel(tiny.tiny_model(heads="faster"))
  export_dir = str(tmp / "saved_model")
  module = serving.export_saved_model(model, export_dir, **tiny.PREPROCESSING)
  image = np.random.default_rng(0).integers(0, 255, size=(80, 120, 3), dtype=np.uint8)
  report, served = fresh_process.run_signatures(export_dir, image, tmp, report=_SPECS)
  return model, module, image, export_dir, report, served


def test_signatures_output_keypoints(exported):
  _, _, _, _, report, _ = exported
  assert not report["tfdet_imported"]
  for name, specs in report["specs"].items():
    dtype, shape = specs[out.DETECTION_KEYPOINTS]
    assert dtype == "float32" and shape == [None, tiny.ROI["detections_per_image"], 17, 3], (
        name, shape)
    assert specs[out.DETECTION_BOXES][0] == "float32"


def test_served_keypoints_are_the_models_in_original_pixels(exported):
  model, module, image, _, _, served = exported
  got = {k[len("serving_default/"):]: v[0] for k, v in served.items()
         if k.startswith("serving_default/")}
  n = int(got[out.NUM_DETECTIONS])
  assert n > 0
  kps = got[out.DETECTION_KEYPOINTS][:n]
  # They follow the served boxes (in original pixels) as the model computes them ...
  np.testing.assert_allclose(
      kps, keypoint_model.expected_keypoints(got[out.DETECTION_BOXES][:n],
                                             got[out.DETECTION_SCORES][:n]), atol=1e-4)
  assert kps[..., 0].min() >= 0 and kps[..., 0].max() <= 120
  assert kps[..., 1].min() >= 0 and kps[..., 1].max() <= 80
  # ... and equal the in-process model's on the module's own preprocessing.
  expected = model(module.preprocess(tf.constant(image)), training=False)
  assert int(expected[out.NUM_DETECTIONS][0]) == n
  np.testing.assert_allclose(kps, expected[out.DETECTION_KEYPOINTS][0, :n], atol=1e-2)


def test_bytes_and_tf_example_signatures_agree(exported):
  _, _, _, _, _, served = exported
  for name in (serving.BYTES_SIGNATURE, serving.TF_EXAMPLE_SIGNATURE):
    np.testing.assert_allclose(served[f"{name}/{out.DETECTION_KEYPOINTS}"],
                               served[f"serving_default/{out.DETECTION_KEYPOINTS}"], atol=1e-5)


def test_infer_writes_keypoints(exported, tmp_path):
  # infer with the exported module in process (its --gin_file path; --saved_model runs the
  # same signature, whose outputs in the fresh process are the reference here).
  _, module, image, _, _, served = exported
  path = str(tmp_path / "image.png")
  visualization.encode_image(image, path)
  results = infer.annotate(module.serve_bytes, [path], str(tmp_path / "out"),
                           score_threshold=0.0, convention="detectron")
  n = int(served[f"serving_bytes/{out.NUM_DETECTIONS}"][0])
  kps = served[f"serving_bytes/{out.DETECTION_KEYPOINTS}"][0, :n]
  assert len(results) == n
  with open(tmp_path / "out" / infer.RESULTS_FILE) as f:
    written = json.load(f)
  got = np.array([r["keypoints"] for r in written]).reshape(n, 17, 3)
  np.testing.assert_allclose(got[..., :2], kps[..., :2], atol=1e-4)
  np.testing.assert_array_equal(got[..., 2], 1.0)
  np.testing.assert_allclose([r["keypoint_scores"] for r in written], kps[..., 2], atol=1e-4)
  assert os.path.exists(tmp_path / "out" / "image.png")


def test_draw_keypoints_dots_and_skeleton_above_threshold():
  kps = np.zeros((17, 3))  # score 0: not drawn
  kps[5] = (10.5, 10.5, 3.0)  # left shoulder
  kps[7] = (30.5, 10.5, 3.0)  # left elbow: limb (5, 7) drawn
  kps[6] = (50.5, 30.5, 1.0)  # right shoulder below the threshold: limb (5, 6) not drawn
  canvas = np.zeros((40, 60, 3), np.uint8)
  visualization.draw_keypoints(canvas, kps, threshold=2.0)
  limb = visualization.COCO_SKELETON.index((5, 7))
  np.testing.assert_array_equal(canvas[10, 20], visualization.hue_color(limb, 19))
  assert not canvas[9, 20].any() and not canvas[11, 20].any()  # a 1-pixel line
  np.testing.assert_array_equal(canvas[10, 10], visualization.hue_color(5, 17))
  np.testing.assert_array_equal(canvas[12, 10], visualization.hue_color(5, 17))  # radius 2
  np.testing.assert_array_equal(canvas[10, 32], visualization.hue_color(7, 17))
  assert not canvas[30, 50].any() and not canvas[20, 30].any() and not canvas[0, 0].any()
  painted = canvas.any(-1)
  assert painted.sum() == 2 * 13 + (30 - 10 + 1) - 2 * 3  # two discs + the line between them


def test_draw_detections_draws_keypoints_of_shown_detections():
  kps = np.zeros((2, 17, 3))
  kps[:, 0] = (20.5, 20.5, 5.0)
  kps[1, 0, :2] = (40.5, 20.5)
  drawn = visualization.draw_detections(
      np.zeros((40, 60, 3), np.uint8), np.array([[5, 5, 35, 35], [30, 5, 55, 35]], float),
      np.array([1, 1]), np.array([0.9, 0.1]), keypoints=kps, score_threshold=0.5)
  np.testing.assert_array_equal(drawn[20, 20], visualization.hue_color(0, 17))
  assert not drawn[20, 40].any()  # its detection is below the score threshold


def test_skeleton_is_cocos():
  # The skeleton the synthetic data set writes into person_keypoints json (1-based).
  assert visualization.COCO_SKELETON == tuple((a - 1, b - 1) for a, b in synthetic.SKELETON)


def test_a_keypoint_rcnn_exports_its_heatmap_keypoints(tmp_path):
  # The real head: heatmaps decoded in the graph (bicubic resize and argmax per detection)
  # serve, in a process without tfdet, what the model computes in process.
  tf.keras.utils.set_random_seed(0)
  model = tiny.tiny_model(heads="keypoint", num_classes=2)
  export_dir = str(tmp_path / "saved_model")
  module = serving.export_saved_model(model, export_dir, **tiny.PREPROCESSING)
  image = np.random.default_rng(1).integers(0, 255, size=(90, 130, 3), dtype=np.uint8)
  report, served = fresh_process.run_signatures(export_dir, image, tmp_path, report=_SPECS)
  assert not report["tfdet_imported"]
  expected = model(module.preprocess(tf.constant(image)), training=False)
  n = int(expected[out.NUM_DETECTIONS][0])
  assert n > 0
  for name in ("serving_default", serving.BYTES_SIGNATURE, serving.TF_EXAMPLE_SIGNATURE):
    assert int(served[f"{name}/{out.NUM_DETECTIONS}"][0]) == n
    kps = served[f"{name}/{out.DETECTION_KEYPOINTS}"][0, :n]
    np.testing.assert_allclose(kps, expected[out.DETECTION_KEYPOINTS][0, :n], atol=1e-2)
    # In its box, whose sides count as at least 1 pixel (Detectron's max(w, 1)): a box
    # clipped flat against the image's edge still gets its keypoints half a pixel in.
    boxes = served[f"{name}/{out.DETECTION_BOXES}"][0, :n, None]
    assert (kps[..., 0] >= boxes[..., 0]).all() and (kps[..., 1] >= boxes[..., 1]).all()
    assert (kps[..., 0] <= np.maximum(boxes[..., 2], boxes[..., 0] + 1)).all()
    assert (kps[..., 1] <= np.maximum(boxes[..., 3], boxes[..., 1] + 1)).all()
