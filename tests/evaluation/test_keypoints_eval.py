"""Keypoint results and keypoint AP (pycocotools) on the synthetic person_keypoints data.

The "detector" of the AP tests is an oracle that reads the eval batches'
ground truth (boxes and keypoints in resized pixels) and hands it to
`runner.collect_batch` as detector outputs: the whole path -- TFRecords,
the pipeline's scaling, the conversion back to original pixels, the COCO
result layout and pycocotools' OKS -- must be right for the AP to be 1, and
moving the keypoints must lower it.
"""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from tests.export import keypoint_model, tiny
from tfdet.data import keys, pipeline
from tfdet.evaluation import coco, runner
from tfdet.modeling.detectors import outputs as out

DATA = dict(scales=(96,), max_size=160, max_instances=16, max_polygon_vertices=64)


@pytest.fixture(scope="module")
def data(synthetic_data):
  return synthetic_data


def _dataset(data):
  return pipeline.build_dataset(data["person_keypoints"]["val"], mode="eval", batch_size=3,
                                **DATA)


@pytest.fixture(scope="module")
def batches(data):
  """The eval batches, read once (what the oracle run functions iterate)."""
  return list(_dataset(data))


def _reorder(x, order):
  """x [B, M, ...] with its rows in `order` [B, M] per image."""
  return np.take_along_axis(x, order.reshape(order.shape + (1,) * (x.ndim - 2)), axis=1)


def _oracle(shift=0.0):
  """A `run_model`-like function whose detections are the batches' labelled people.

  Each person with a labelled keypoint becomes a detection of its ground-truth
  box (score 1) and keypoints moved by `shift` pixels along x and y (original
  pixels), keypoint j scored 10 - j - instance index / 10.
  """

  def run(model, dataset, *, class_to_category, convention, keypoint_confidence="bbox"):
    del model
    results = runner.new_results()
    for batch in dataset:
      scale = np.maximum(batch[keys.IMAGE_INFO][:, 2].numpy(), 1e-6)[:, None, None]  # 0: padding
      kps = batch[keys.GT_KEYPOINTS].numpy()  # [B, M, 17, 3] resized pixels
      labelled = (kps[..., 2] > 0).any(-1) & batch[keys.GT_VALID].numpy()  # [B, M]
      order = np.argsort(~labelled, axis=1, kind="stable")  # labelled people first
      boxes = _reorder(batch[keys.GT_BOXES].numpy(), order) / scale
      xy = _reorder(kps, order)[..., :2] / scale[..., None] + shift
      m = kps.shape[1]
      kp_scores = 10.0 - np.arange(17)[None, None, :] - np.arange(m)[None, :, None] / 10.0
      outputs = {
          out.PROPOSALS: batch[keys.GT_BOXES], out.NUM_PROPOSALS: batch[keys.NUM_GT],
          out.DETECTION_BOXES: boxes, out.DETECTION_SCORES: np.ones(boxes.shape[:2]),
          out.DETECTION_CLASSES: _reorder(batch[keys.GT_CLASSES].numpy(), order),
          out.NUM_DETECTIONS: labelled.sum(1),
          out.DETECTION_KEYPOINTS: np.concatenate(
              [xy, np.broadcast_to(kp_scores, xy.shape[:-1])[..., None]], axis=-1),
      }
      runner.collect_batch(results, outputs, batch[keys.IMAGE_ID], batch[keys.IMAGE_INFO],
                           class_to_category=class_to_category, convention=convention,
                           keypoint_confidence=keypoint_confidence)
    return results

  return run


def _evaluate(data, batches, tmp_path, run_fn, **kwargs):
  return runner.evaluate(None, batches, run_fn=run_fn,
                         annotations_file=data["annotations"]["val"]["person_keypoints"],
                         label_map_file=data["label_map"]["person_keypoints"],
                         output_dir=str(tmp_path), convention="detectron", **kwargs)


def test_keypoints_to_coco_layout_and_instance_scores():
  kps = np.zeros((2, 17, 3))
  kps[..., 0] = np.arange(17) + 0.25
  kps[..., 1] = 2 * np.arange(17)
  kps[0, :, 2] = np.linspace(0.0, 4.0, 17)  # mean 2
  kps[1, :, 2] = -1.0
  common = dict(class_to_category={1: 7})
  by_box = coco.keypoints_to_coco(5, kps, np.array([0.9, 0.3]), np.array([1, 1]), 2, **common)
  assert [r["score"] for r in by_box] == pytest.approx([0.9, 0.3])
  assert by_box[0]["image_id"] == 5 and by_box[0]["category_id"] == 7
  assert by_box[0]["keypoints"][:6] == [0.25, 0.0, 1.0, 1.25, 2.0, 1.0]
  assert len(by_box[1]["keypoints"]) == 51
  by_logit = coco.keypoints_to_coco(5, kps, np.array([0.9, 0.3]), np.array([1, 1]), 1,
                                    confidence="logit", **common)
  assert len(by_logit) == 1 and by_logit[0]["score"] == pytest.approx(2.0)
  with pytest.raises(ValueError, match="confidence"):
    coco.keypoints_to_coco(5, kps, np.ones(2), np.ones(2), 2, confidence="prob", **common)


def test_ground_truth_keypoints_score_ap_1_and_moving_them_lowers_it(data, batches, tmp_path):
  exact = _evaluate(data, batches, tmp_path / "exact", _oracle())
  assert set(coco.KEYPOINT_STAT_NAMES) == {k[len("keypoints/"):] for k in exact
                                           if k.startswith("keypoints/")}
  # Evaluated as the outputs' keys say: the oracle's boxes are the people's own.
  assert exact["bbox/AP"] == pytest.approx(1.0) and "segm/AP" not in exact
  for name in ("AP", "AP50", "AP75", "AR"):
    assert exact[f"keypoints/{name}"] == pytest.approx(1.0), name
  # The oracle's proposals are the gt boxes: Detectron's AR is 1 too.
  assert exact["proposals/AR@100"] == pytest.approx(1.0)
  with open(tmp_path / "exact" / runner.KEYPOINT_RESULTS_FILE) as f:
    results = json.load(f)
  gt = coco.load_ground_truth(data["annotations"]["val"]["person_keypoints"])
  labelled = [a for a in gt.anns.values() if a["num_keypoints"] > 0]
  assert len(results) == len(labelled) >= 10
  with open(tmp_path / "exact" / runner.METRICS_FILE) as f:
    assert json.load(f)["keypoints/AP"] == pytest.approx(1.0)
  near = _evaluate(data, batches, tmp_path / "near", _oracle(shift=1.0))["keypoints/AP"]
  far = _evaluate(data, batches, tmp_path / "far", _oracle(shift=4.0))["keypoints/AP"]
  assert 1.0 > near > far >= 0.0


def test_keypoint_confidence_option_sets_instance_scores(data, batches, tmp_path):
  metrics = _evaluate(data, batches, tmp_path, _oracle(), keypoint_confidence="logit")
  assert metrics["keypoints/AP"] == pytest.approx(1.0)
  with open(tmp_path / runner.KEYPOINT_RESULTS_FILE) as f:
    results = json.load(f)
  # Mean of 10 - j - i / 10 over j = 0..16: 2 - i / 10 for the image's i-th person.
  scores = sorted({round(r["score"], 5) for r in results}, reverse=True)
  assert scores[:3] == pytest.approx([2.0, 1.9, 1.8])


def test_keypoint_ground_truth_is_required_and_checked(data, batches, tmp_path):
  instances = dict(annotations_file=data["annotations"]["val"]["instances"],
                   label_map_file=data["label_map"]["person_keypoints"], convention="detectron")
  # Keypoints collected, but the box annotations define none: results written, AP skipped ...
  metrics = runner.evaluate(None, batches, run_fn=_oracle(),
                            output_dir=str(tmp_path / "a"), **instances)
  assert not [k for k in metrics if k.startswith("keypoints/")]
  assert os.path.exists(tmp_path / "a" / runner.KEYPOINT_RESULTS_FILE)
  # ... unless keypoint_annotations_file names the person_keypoints json.
  metrics = runner.evaluate(
      None, batches, run_fn=_oracle(), output_dir=str(tmp_path / "b"),
      keypoint_annotations_file=data["annotations"]["val"]["person_keypoints"], **instances)
  assert metrics["keypoints/AP"] == pytest.approx(1.0)
  with pytest.raises(ValueError, match="defines no keypoints"):
    runner.evaluate(None, batches, run_fn=_oracle(), output_dir=str(tmp_path / "c"),
                    keypoint_annotations_file=data["annotations"]["val"]["instances"],
                    **instances)

  def no_keypoints(*args, **kwargs):
    results = _oracle()(*args, **kwargs)
    del results["keypoints"]
    return results

  with pytest.raises(ValueError, match="no keypoints"):
    runner.evaluate(
        None, batches, run_fn=no_keypoints, output_dir=str(tmp_path / "d"),
        keypoint_annotations_file=data["annotations"]["val"]["person_keypoints"], **instances)


def test_run_model_collects_the_models_keypoints(data):
  tf.keras.utils.set_random_seed(0)
  detector = tiny.tiny_model(num_classes=2)
  collected = runner.run_model(keypoint_model.BoxKeypointModel(detector),
                               _dataset(data).take(1),  # one batch: one trace
                               class_to_category={1: 1}, convention="detectron")
  boxes, kps = collected["bbox"], collected["keypoints"]
  assert boxes and len(kps) == len(boxes)  # an untrained model still detects (scores > 0.05)
  assert [(r["image_id"], r["category_id"], r["score"]) for r in kps] == [
      (r["image_id"], r["category_id"], r["score"]) for r in boxes]  # "bbox" confidence
  x, y, w, h = np.array([r["bbox"] for r in boxes]).T
  # detections_to_coco wrote w = x2 - x1 + 1 (detectron): undo it for the model's boxes.
  xyxy = np.stack([x, y, x + w - 1, y + h - 1], axis=1)
  expected = keypoint_model.expected_keypoints(xyxy, [r["score"] for r in boxes])
  got = np.array([r["keypoints"] for r in kps]).reshape(-1, 17, 3)
  np.testing.assert_allclose(got[..., :2], expected[..., :2], atol=1e-3)
  np.testing.assert_array_equal(got[..., 2], 1.0)  # visibility 1, as Detectron writes


def test_collect_batch_adds_keypoints_only_for_keypoint_outputs():
  outputs = {out.PROPOSALS: np.full((2, 3, 4), 10.0), out.NUM_PROPOSALS: np.array([3, 0]),
             out.DETECTION_BOXES: np.array([[[0, 0, 9, 9]], [[1, 1, 5, 5]]], np.float32),
             out.DETECTION_SCORES: np.array([[0.8], [0.7]]),
             out.DETECTION_CLASSES: np.array([[1], [1]]), out.NUM_DETECTIONS: np.array([1, 0])}
  info = np.array([[20, 20, 2.0, 10, 10], [20, 20, 2.0, 10, 10]], np.float32)
  common = dict(class_to_category={1: 3}, convention="detectron")
  plain = runner.new_results()
  runner.collect_batch(plain, outputs, [4, 5], info, **common)
  assert "keypoints" not in plain and len(plain["bbox"]) == 1
  np.testing.assert_allclose(plain["proposals"][4], np.full((3, 4), 5.0))  # original pixels
  kps = np.zeros((2, 1, 17, 3))
  kps[0, 0, :, 0] = np.arange(17)
  with_kps = runner.new_results()
  runner.collect_batch(with_kps, dict(outputs, **{out.DETECTION_KEYPOINTS: kps}), [4, -1],
                       info, **common)
  assert with_kps["image_ids"] == [4] and len(with_kps["keypoints"]) == 1
  assert with_kps["keypoints"][0]["keypoints"][::3] == list(range(17))
  assert with_kps["keypoints"][0]["category_id"] == 3
  empty = runner.new_results()
  runner.collect_batch(empty, dict(outputs, **{out.DETECTION_KEYPOINTS: kps}), [-1, 5], info,
                       **common)
  assert empty["keypoints"] == []  # a keypoint model without detections: evaluated as such
