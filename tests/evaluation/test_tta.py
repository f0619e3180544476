"""Test-time augmentation: identity == the plain eval loop, flips map back, merge rules, CLI."""

import json
import os
import subprocess
import sys

import gin
import numpy as np
import pytest
import tensorflow as tf

from tests.export import tiny
from tests.shared_data import first_shard
from tfdet import gin_files
from tfdet.data import keys, pipeline, schema
from tfdet.evaluation import runner, tta, tta_merge
from tfdet.modeling.detectors import outputs as out
from tfdet.modeling.detectors.config import RoiHeadSettings

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NUM_CLASSES = 8
CLASS_TO_CATEGORY = {c: 10 + c for c in range(1, NUM_CLASSES)}
# One square canvas for both orientations (aspect_grouping=False): one trace per graph.
PREP = tta.Preprocessing(scale=96, max_size=160, aspect_grouping=False)
FLIP = tta.TTAConfig(h_flip=True)


def _image(height, width, seed):
  """A smooth random RGB image with a few bright rectangles (uint8)."""
  rng = np.random.default_rng(seed)
  coarse = rng.uniform(0, 255, size=(height // 8 + 1, width // 8 + 1, 3))
  image = np.kron(coarse, np.ones((8, 8, 1)))[:height, :width]
  for _ in range(4):
    y, x = rng.integers(0, height - 20), rng.integers(0, width - 20)
    image[y:y + rng.integers(8, 20), x:x + rng.integers(8, 20)] = rng.uniform(0, 255, 3)
  return image.astype(np.uint8)


def _write_records(path, images):
  with tf.io.TFRecordWriter(path) as writer:
    for image_id, image in images.items():
      example = schema.make_example(
          encoded_image=tf.io.encode_png(image).numpy(), image_format="png", image_id=image_id,
          filename=f"{image_id}.png", height=image.shape[0], width=image.shape[1],
          boxes_xywh=[], classes=[], category_ids=[], is_crowd=[], areas=[],
          annotation_ids=[], polygons=[], rles=[])
      writer.write(example.SerializeToString())


@pytest.fixture(scope="module")
def images():
  a = _image(96, 128, seed=0)
  # 1: landscape, 2: its mirror image, 3: portrait.
  return {1: a, 2: a[:, ::-1].copy(), 3: _image(128, 96, seed=1)}


@pytest.fixture(scope="module")
def records(tmp_path_factory, images):
  path = str(tmp_path_factory.mktemp("tta") / "val-00000-of-00001.tfrecord")
  _write_records(path, images)
  return path


@pytest.fixture(scope="module")
def model():
  tf.keras.utils.set_random_seed(0)
  return tiny.tiny_model(num_classes=NUM_CLASSES, implementation="custom")


def _by_image(results):
  """{image_id: results sorted by descending score}."""
  grouped = {}
  for r in results:
    grouped.setdefault(r["image_id"], []).append(r)
  return {k: sorted(v, key=lambda r: -r["score"]) for k, v in grouped.items()}


def test_identity_only_equals_the_plain_eval_loop(model, records):
  config = tta.TTAConfig()  # no transform configured: the identity alone
  assert config.all_transforms(PREP.identity) == [PREP.identity]
  got = tta.run_tta(model, tta.build_tta_dataset(records, config=config, preprocessing=PREP),
                    class_to_category=CLASS_TO_CATEGORY, convention="detectron",
                    config=config, preprocessing=PREP)
  dataset = pipeline.build_dataset(records, mode="eval", batch_size=2, scales=(96,),
                                   max_size=160, aspect_grouping=False)
  want = runner.run_model(model, dataset, class_to_category=CLASS_TO_CATEGORY,
                          convention="detectron")
  assert sorted(got["image_ids"]) == sorted(want["image_ids"]) == [1, 2, 3]
  for image_id in want["image_ids"]:
    np.testing.assert_allclose(got["proposals"][image_id], want["proposals"][image_id],
                               atol=1e-3)
  for iou_type in ("bbox", "segm"):
    got_dets, want_dets = _by_image(got[iou_type]), _by_image(want[iou_type])
    assert set(want_dets) == {1, 2, 3}
    for image_id, wanted in want_dets.items():
      mine = got_dets[image_id]
      assert len(mine) == len(wanted) > 0
      np.testing.assert_allclose([r["score"] for r in mine], [r["score"] for r in wanted],
                                 rtol=1e-5)
      np.testing.assert_allclose([r["bbox"] for r in mine], [r["bbox"] for r in wanted],
                                 atol=1e-3)
      assert [r["category_id"] for r in mine] == [r["category_id"] for r in wanted]
      if iou_type == "segm":
        assert [r["segmentation"]["counts"] for r in mine] == [
            r["segmentation"]["counts"] for r in wanted]


def test_flip_tta_on_a_mirrored_image_gives_mirrored_detections(model, records):
  detector = tta.TTADetector(model, FLIP, PREP)
  dataset = tta.build_tta_dataset(records, config=FLIP, preprocessing=PREP)
  elements = {int(e[keys.IMAGE_ID]): e[tta.INPUTS] for e in dataset}
  a, b = (detector.detect(elements[i]) for i in (1, 2))
  width = 128.0
  n = int(a[out.NUM_DETECTIONS][0])
  assert n == int(b[out.NUM_DETECTIONS][0]) > 0
  # The flip pass adds candidates: the merged result is not the identity's.
  plain = model(elements[1][PREP.identity.key], training=False)
  assert not np.allclose(a[out.DETECTION_SCORES][0, :n], plain[out.DETECTION_SCORES][0, :n])
  order_a = np.argsort(-a[out.DETECTION_SCORES][0, :n], kind="stable")
  order_b = np.argsort(-b[out.DETECTION_SCORES][0, :n], kind="stable")
  np.testing.assert_allclose(a[out.DETECTION_SCORES][0, order_a],
                             b[out.DETECTION_SCORES][0, order_b], rtol=1e-5)
  np.testing.assert_array_equal(a[out.DETECTION_CLASSES][0, order_a],
                                b[out.DETECTION_CLASSES][0, order_b])
  boxes_a = a[out.DETECTION_BOXES][0, order_a]
  boxes_b = b[out.DETECTION_BOXES][0, order_b]
  mirrored = np.stack([width - 1 - boxes_a[:, 2], boxes_a[:, 1], width - 1 - boxes_a[:, 0],
                       boxes_a[:, 3]], axis=1)  # Detectron's flip_boxes
  np.testing.assert_allclose(boxes_b, mirrored, atol=1e-3)
  np.testing.assert_allclose(b[out.DETECTION_MASKS][0, order_b],
                             a[out.DETECTION_MASKS][0, order_a][..., ::-1], atol=1e-4)


def test_extra_scales_resize_the_original_image(records, images):
  # The base test scale (64) differs from the original's (96x128): an extra
  # scale must resize the original, not the base-scale image.
  prep = tta.Preprocessing(scale=64, max_size=160)  # aspect-grouped canvases
  config = tta.TTAConfig(scales=(128.0,), max_size=200, scale_h_flip=True, mask_aug=False)
  keys_wanted = ["128x200", "128x200_flip", "64x160"]  # Detectron's order, identity last
  assert [t.key for t in config.box_transforms(prep.identity)] == keys_wanted
  assert config.mask_transforms(prep.identity) == [prep.identity]
  element = next(iter(tta.build_tta_dataset(records, config=config, preprocessing=prep)))
  assert int(element[keys.IMAGE_ID]) == 1
  inputs = element[tta.INPUTS]
  assert sorted(inputs) == sorted(keys_wanted)
  means = np.array(prep.pixel_means, np.float32)
  for key, size, scale, canvas in (("64x160", [64, 85], 64 / 96, [64, 160]),
                                   ("128x200", [128, 171], 128 / 96, [128, 224])):
    # Shorter side to the scale, on the landscape canvas of that scale.
    np.testing.assert_allclose(inputs[key][keys.IMAGE_INFO][0], size + [scale, 96, 128],
                               rtol=1e-6)
    assert inputs[key][keys.IMAGES].shape == (1, *canvas, 3)
    resized = tf.image.resize(tf.constant(images[1], tf.float32), size)
    np.testing.assert_allclose(inputs[key][keys.IMAGES][0, :size[0], :size[1]],
                               resized[..., ::-1] - means, atol=1e-3)  # BGR minus means
    assert not np.any(inputs[key][keys.IMAGES][0, :, size[1]:])
  flipped = tf.image.resize(tf.constant(images[1][:, ::-1], tf.float32), [128, 171])
  np.testing.assert_allclose(inputs["128x200_flip"][keys.IMAGES][0, :, :171],
                             flipped[..., ::-1] - means, atol=1e-3)


def test_mask_heuristics_on_hand_made_arrays():
  p = np.array([[0.2, 0.9], [0.6, 0.5], [0.1, 0.999]], np.float32)  # 3 transforms, 2 pixels
  np.testing.assert_allclose(tta_merge.merge_mask_probabilities(p, "SOFT_AVG"),
                             [0.3, 2.399 / 3], rtol=1e-6)
  np.testing.assert_allclose(tta_merge.merge_mask_probabilities(p, "SOFT_MAX"), [0.6, 0.999])
  logit = np.log(p / (1 - p))
  expected = 1 / (1 + np.exp(-logit.mean(axis=0)))
  # Detectron recovers the logits from p; given logits are used as they are.
  np.testing.assert_allclose(tta_merge.merge_mask_probabilities(p, "LOGIT_AVG"), expected,
                             rtol=1e-4)
  np.testing.assert_allclose(tta_merge.merge_mask_probabilities(p, "LOGIT_AVG", logits=logit),
                             expected, rtol=1e-5)
  # Logits where float32 probabilities saturate: sigmoid(mean(40, 0)) = sigmoid(20).
  z = np.array([[40.0], [0.0]], np.float32)
  np.testing.assert_allclose(
      tta_merge.merge_mask_probabilities(1 / (1 + np.exp(-z)), "LOGIT_AVG", logits=z),
      [1 / (1 + np.exp(-20.0))], rtol=1e-6)
  with pytest.raises(ValueError, match="SOFT_AVG"):
    tta_merge.merge_mask_probabilities(p, "AVG")


def test_heatmap_heuristics_and_size_dependence():
  h = np.arange(3 * 2 * 1 * 1 * 2, dtype=np.float32).reshape(3, 2, 1, 1, 2)  # T=3, D=2, J=2
  h[1] *= -1.0
  np.testing.assert_allclose(tta_merge.merge_heatmaps(h, "HM_AVG"), h.mean(axis=0))
  np.testing.assert_allclose(tta_merge.merge_heatmaps(h, "HM_MAX"), h.max(axis=0))
  # Transforms at scales (800 identity, 600 down, 1000 up); detection 0 is small
  # (10x10 < 20^2), detection 1 large: the small one drops the downscaled
  # transform, the large one the upscaled one.
  boxes = np.array([[0, 0, 9, 9], [0, 0, 99, 99]], np.float32)
  common = dict(boxes=boxes, scales=[800, 600, 1000], test_scale=800, area_threshold=400)
  avg = tta_merge.merge_heatmaps(h, "HM_AVG", **common)
  np.testing.assert_allclose(avg[0], (h[0, 0] + h[2, 0]) / 2)
  np.testing.assert_allclose(avg[1], (h[0, 1] + h[1, 1]) / 2)
  mx = tta_merge.merge_heatmaps(h, "HM_MAX", **common)
  np.testing.assert_allclose(mx[0], np.maximum(h[0, 0], h[2, 0]))
  np.testing.assert_allclose(mx[1], np.maximum(h[0, 1], h[1, 1]))
  with pytest.raises(ValueError, match="HM_AVG"):
    tta_merge.merge_heatmaps(h, "SOFT_AVG")


def test_keypoint_heatmap_flip_swaps_left_and_right():
  m, j = 4, schema.NUM_KEYPOINTS
  heatmaps = np.random.default_rng(0).normal(size=(2, m, m, j)).astype(np.float32)
  flipped = tta_merge.flip_keypoint_heatmaps(heatmaps)
  names = schema.KEYPOINT_NAMES
  for k, name in enumerate(names):
    twin = name.replace("left", "right") if "left" in name else name.replace("right", "left")
    np.testing.assert_array_equal(flipped[..., k], heatmaps[..., ::-1, names.index(twin)])
  np.testing.assert_array_equal(tta_merge.flip_keypoint_heatmaps(flipped), heatmaps)
  np.testing.assert_array_equal(flipped[:, 1, 0, 0], heatmaps[:, 1, m - 1, 0])  # nose: mirrored


def test_config_refuses_what_it_cannot_do():
  with pytest.raises(ValueError, match="score_heur.*UNION"):
    tta.TTAConfig(score_heur="AVG")
  with pytest.raises(ValueError, match="coord_heur.*UNION"):
    tta.TTAConfig(coord_heur="ID")
  with pytest.raises(ValueError, match="mask_heur"):
    tta.TTAConfig(mask_heur="HM_AVG")
  # Mask settings follow the box settings unless given.
  config = tta.TTAConfig(h_flip=True, scales=[600], max_size=1000, mask_h_flip=False)
  assert [t.key for t in config.mask_transforms(PREP.identity)] == ["96x160", "600x1000"]
  assert [t.key for t in config.keypoint_transforms(PREP.identity)] == [
      "96x160", "96x160_flip", "600x1000"]
  prep = tta.Preprocessing.from_pipeline_arguments(file_pattern="x", scales=(640,),
                                                   size_divisibility=1)
  assert prep == tta.Preprocessing(scale=640.0, max_size=1333.0, size_divisibility=1)


class _WithKeypoints:
  """The tiny Mask R-CNN plus keypoint heatmaps made from its mask logits (a test double).

  Keypoint j's heatmap is the class-1 mask logits shifted by j, so the heatmaps
  depend on the image and differ per keypoint; keypoints are each heatmap's
  argmax cell (x, y) and value.
  """

  def __init__(self, model):
    self._model = model
    self.merged = []

  def __getattr__(self, name):
    return getattr(self._model, name)

  def keypoint_heatmaps(self, inputs, boxes):
    classes = tf.ones(tf.shape(boxes)[:2], tf.int32)
    _, logits = self._model.mask_predictions(inputs, boxes, classes)  # [B, D, M, M]
    return logits[..., None] + tf.range(schema.NUM_KEYPOINTS, dtype=tf.float32)

  def keypoints_from_heatmaps(self, heatmaps, boxes):
    self.merged.append(heatmaps)
    b, d, m, _, j = heatmaps.shape
    flat = heatmaps.reshape(b, d, m * m, j)
    cell = flat.argmax(axis=2)
    return np.stack([cell % m, cell // m, flat.max(axis=2)], axis=-1).astype(np.float32)


def test_keypoint_heatmaps_are_merged_over_flips(model, records):
  config = tta.TTAConfig(h_flip=True, kps_heur="HM_MAX")
  wrapped = _WithKeypoints(model)
  detector = tta.TTADetector(wrapped, config, PREP)
  element = next(iter(tta.build_tta_dataset(records, config=config, preprocessing=PREP)))
  inputs = element[tta.INPUTS]
  dets = model(inputs["96x160"], training=False)
  n = int(dets[out.NUM_DETECTIONS][0])
  boxes = dets[out.DETECTION_BOXES]
  keypoints = detector.keypoints(inputs, boxes, n)
  assert n > 0 and keypoints.shape == (1, 20, schema.NUM_KEYPOINTS, 3)
  # By hand: the flipped image's heatmaps of the mirrored boxes, flipped back
  # (mirrored, left/right swapped), and the identity's, combined by max.
  plain = wrapped.keypoint_heatmaps(inputs["96x160"], boxes).numpy()
  x1, y1, x2, y2 = np.moveaxis(boxes.numpy(), -1, 0)
  mirrored = tf.constant(np.stack([128 - 1 - x2, y1, 128 - 1 - x1, y2], axis=-1))
  flipped = wrapped.keypoint_heatmaps(inputs["96x160_flip"], mirrored).numpy()
  want = np.maximum(plain[0], tta_merge.flip_keypoint_heatmaps(flipped[0]))
  np.testing.assert_allclose(wrapped.merged[-1][0, :n], want[:n], atol=1e-4)
  np.testing.assert_array_equal(keypoints, wrapped.keypoints_from_heatmaps(want[None], boxes))


def test_a_keypoint_rcnn_under_tta(records):
  # The real keypoint head: with the identity alone TTA gives the plain model's keypoints;
  # with a flip the merged (averaged) heatmaps decode inside the same boxes.
  tf.keras.utils.set_random_seed(0)
  kp_model = tiny.tiny_model(heads="keypoint", num_classes=2, implementation="custom")
  flip = tta.TTAConfig(kps_h_flip=True)
  inputs = next(iter(tta.build_tta_dataset(records, config=flip, preprocessing=PREP)))[tta.INPUTS]
  dets = kp_model(inputs["96x160"], training=False)
  n = int(dets[out.NUM_DETECTIONS][0])
  boxes = dets[out.DETECTION_BOXES]
  assert n > 0
  plain = tta.TTADetector(kp_model, tta.TTAConfig(), PREP).keypoints(inputs, boxes, n)
  np.testing.assert_allclose(plain[0, :n], dets[out.DETECTION_KEYPOINTS][0, :n], atol=1e-3)
  flipped = tta.TTADetector(kp_model, flip, PREP).keypoints(inputs, boxes, n)[0, :n]
  b = boxes.numpy()[0, :n, None]
  assert np.isfinite(flipped).all() and (flipped[..., 0] >= b[..., 0]).all()
  assert (flipped[..., 0] <= np.maximum(b[..., 2], b[..., 0] + 1)).all()
  assert not np.allclose(flipped, plain[0, :n])  # the flipped pass changed the heatmaps


def test_evaluate_command_line_with_tta(model, tmp_path, synthetic_data):
  data = synthetic_data
  ckpt = tf.train.Checkpoint(model=model, step=tf.Variable(5, dtype=tf.int64))
  tf.train.CheckpointManager(ckpt, str(tmp_path / "model"), max_to_keep=1).save()
  gin_text = tiny.tiny_gin(num_classes=NUM_CLASSES, imports=["from tfdet.evaluation import tta"])
  gin_text += ("eval/pipeline.build_dataset.scales = (96,)\n"
               "eval/pipeline.build_dataset.max_size = 160\n"
               "tta.TTAConfig.h_flip = True\n"
               "tta.TTAConfig.scales = (112,)\n"
               "tta.TTAConfig.max_size = 200\n")
  (tmp_path / "tiny.gin").write_text(gin_text)
  env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="2")
  proc = subprocess.run(
      [sys.executable, "-m", "tfdet.evaluate", f"--gin_file={tmp_path / 'tiny.gin'}",
       f"--model_dir={tmp_path / 'model'}", f"--file_pattern={first_shard(data['instances']['val'])}",
       f"--annotations_file={data['annotations']['val']['instances']}", "--tta"],
      capture_output=True, text=True, cwd=REPO, env=env, timeout=300, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "test-time augmentation" in proc.stderr
  with open(tmp_path / "model" / "eval" / "metrics-5.json") as f:
    record = json.load(f)
  assert record["step"] == 5 and record["num_images"] == 2
  for name in ("bbox/AP", "segm/AP", "proposals/AR@100"):
    assert 0.0 <= record[name] <= 1.0, name
  with open(tmp_path / "model" / "eval" / "bbox_results.json") as f:
    assert json.load(f)


def test_the_zoo_tta_gin_file_gives_detectrons_transforms():
  gin.clear_config()
  try:
    gin_files.parse(["models/mask_rcnn_fpn.gin", "evaluation/detectron_tta.gin"])
    config = gin.get_configurable(tta.TTAConfig)()
    roi = gin.get_configurable(RoiHeadSettings)()
  finally:
    gin.clear_config()
  identity = tta.Preprocessing().identity  # TEST.SCALE 800, TEST.MAX_SIZE 1333
  extra = [f"{s}x2000{f}" for s in (400, 500, 600, 700, 900, 1000, 1100, 1200)
           for f in ("", "_flip")]
  assert [t.key for t in config.box_transforms(identity)] == ["800x1333_flip", *extra,
                                                               "800x1333"]
  assert [t.key for t in config.mask_transforms(identity)] == ["800x1333", "800x1333_flip",
                                                                *extra]
  assert config.keypoint_transforms(identity) == [identity]
  assert (roi.box_voting_threshold, roi.box_voting_scoring) == (0.9, "ID")
