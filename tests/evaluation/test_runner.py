"""The eval loop on a tiny Mask R-CNN trained a few steps on the shared synthetic images."""

import json
import os
import subprocess
import sys

import gin
import numpy as np
import pytest
import tensorflow as tf

from tests import shared_data
from tests.export import tiny
from tfdet import evaluate, gin_files
from tfdet.data import keys, pipeline, synthetic
from tfdet.evaluation import coco, runner
from tfdet.evaluation import proposals_recall as recall
from tfdet.modeling.detectors import outputs as out
from tfdet.modeling.detectors import rcnn_losses

DATA = dict(scales=(96,), max_size=160, max_instances=16, max_polygon_vertices=64)
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GIN = tiny.tiny_gin(num_classes=8) + """
eval/pipeline.build_dataset:
  scales = (96,)
  max_size = 160
  max_instances = 16
  max_polygon_vertices = 64
"""


@pytest.fixture(scope="module")
def data(synthetic_data):
  return synthetic_data


NUM_VAL = shared_data.SYNTHETIC["num_val_images"]


def _trained_model(data, steps=3):
  tf.keras.utils.set_random_seed(0)
  # Threshold 0: after 3 steps the background class dominates and every foreground score
  # can fall under Detectron's 0.05 (it did on CI's machine), leaving no results to check.
  model = tiny.tiny_model(num_classes=8, roi=dict(tiny.ROI, score_threshold=0.0))
  batch = next(iter(pipeline.build_dataset(data["instances"]["train"], mode="train",
                                           batch_size=2, seed=0, **DATA)))
  optimizer = tf.keras.optimizers.SGD(learning_rate=0.005, momentum=0.9, clipnorm=10.0)
  for _ in range(steps):
    with tf.GradientTape() as tape:
      losses = rcnn_losses.rcnn_losses(model, model(batch, training=True), batch,
                                       seed=tf.constant([0, 0]))
    grads = tape.gradient(losses[rcnn_losses.TOTAL_LOSS], model.trainable_variables)
    optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
  return model


@pytest.fixture(scope="module")
def model(data):
  return _trained_model(data)


def test_evaluate_writes_metrics_and_results(data, model, tmp_path):
  dataset = pipeline.build_dataset(data["instances"]["val"], mode="eval", batch_size=3, **DATA)
  out_dir = str(tmp_path / "eval")
  metrics = runner.evaluate(model, dataset,
                            annotations_file=data["annotations"]["val"]["instances"],
                            label_map_file=data["label_map"]["instances"], output_dir=out_dir,
                            convention="detectron", step=7)
  for name in ("bbox/AP", "bbox/AP50", "segm/AP", "proposals/AR@100", "proposals/AR@1000",
               "proposals/ARs@100"):
    assert name in metrics and 0.0 <= metrics[name] <= 1.0, name
  with open(os.path.join(out_dir, runner.METRICS_FILE)) as f:
    record = json.load(f)
  assert record["step"] == 7 and record["num_images"] == NUM_VAL  # padding (id -1) skipped
  gt = coco.load_ground_truth(data["annotations"]["val"]["instances"])
  categories = set(gt.getCatIds())
  for iou_type in ("bbox", "segm"):
    with open(os.path.join(out_dir, f"{iou_type}_results.json")) as f:
      results = json.load(f)
    assert results and {r["category_id"] for r in results} <= categories
    assert {r["image_id"] for r in results} <= set(gt.getImgIds())
    gt.loadRes(os.path.join(out_dir, f"{iou_type}_results.json"))  # pycocotools loads them
  assert any(name.startswith("events.out.tfevents") for name in os.listdir(out_dir))
  # An untrained RPN on these images still recalls something at IoU 0.5 among 1000... or 100.
  assert metrics["proposals/AR@100"] <= metrics["proposals/AR@1000"] + 1e-9


def _oracle(shift=0.0):
  """A `run_model`-like function whose detections are the eval batches' ground truth.

  Each non-crowd gt box becomes a detection of its class (score 1), mapped back to
  original pixels (/ scale) and moved right by `shift` times its (+1) width; the
  proposals are the same boxes in resized pixels. The whole path -- TFRecords, the
  pipeline's scaling, collect_batch's conversion, the COCO json and pycocotools -- must
  be right for the exact boxes to score AP 1.
  """

  def run(model, dataset, *, class_to_category, convention):
    del model
    results = runner.new_results()  # boxes only: the outputs hold no masks
    for batch in dataset:
      scale = np.maximum(batch[keys.IMAGE_INFO][:, 2].numpy(), 1e-6)[:, None, None]  # 0: padding
      keep = batch[keys.GT_VALID].numpy() & ~batch[keys.GT_IS_CROWD].numpy()  # [B, M]
      order = np.argsort(~keep, axis=1, kind="stable")  # kept rows first
      boxes = np.take_along_axis(batch[keys.GT_BOXES].numpy(), order[..., None], axis=1) / scale
      width = boxes[..., 2] - boxes[..., 0] + 1.0
      boxes[..., 0] += shift * width
      boxes[..., 2] += shift * width
      outputs = {
          out.PROPOSALS: boxes * scale, out.NUM_PROPOSALS: keep.sum(1),
          out.DETECTION_BOXES: boxes, out.DETECTION_SCORES: np.ones(boxes.shape[:2]),
          out.DETECTION_CLASSES: np.take_along_axis(batch[keys.GT_CLASSES].numpy(), order, 1),
          out.NUM_DETECTIONS: keep.sum(1),
      }
      runner.collect_batch(results, outputs, batch[keys.IMAGE_ID], batch[keys.IMAGE_INFO],
                           class_to_category=class_to_category, convention=convention)
    return results

  return run


def test_evaluate_scores_ground_truth_boxes_ap_1_and_shifted_ones_by_hand(data, tmp_path):
  batches = list(pipeline.build_dataset(data["instances"]["val"], mode="eval", batch_size=3,
                                        **DATA))
  def evaluate(name, shift):
    return runner.evaluate(None, batches, run_fn=_oracle(shift),
                           annotations_file=data["annotations"]["val"]["instances"],
                           label_map_file=data["label_map"]["instances"],
                           output_dir=str(tmp_path / name), convention="detectron")

  exact = evaluate("exact", 0.0)
  gt = coco.load_ground_truth(data["annotations"]["val"]["instances"])
  with open(tmp_path / "exact" / "bbox_results.json") as f:
    results = json.load(f)
  # Every non-crowd annotation came through the pipeline and back as one detection.
  assert len(results) == len([a for a in gt.anns.values() if not a["iscrowd"]]) >= 10
  for name in ("AP", "AP50", "AP75", "AR100"):
    assert exact[f"bbox/{name}"] == pytest.approx(1.0), name
  assert exact["proposals/AR@100"] == pytest.approx(1.0)
  assert "segm/AP" not in exact  # no masks in the outputs
  # Moving a box right by a fraction s of its width w leaves IoU
  # (1 - s) w h / ((1 + s) w h) = (1 - s) / (1 + s); s = 0.28 / 1.72 gives IoU 0.72:
  # every detection is a true positive at the thresholds 0.50, 0.55, ..., 0.70 (AP 1
  # there) and a false positive at 0.75, ..., 0.95 (AP 0): AP = 5 / 10.
  shifted = evaluate("shifted", 0.28 / 1.72)
  assert shifted["bbox/AP"] == pytest.approx(0.5)
  assert shifted["bbox/AP50"] == pytest.approx(1.0)
  assert shifted["bbox/AP75"] == pytest.approx(0.0)
  # Recall is 1 at the same 5 thresholds and 0 at the others: COCO's AR is 0.5.
  assert shifted["bbox/AR100"] == pytest.approx(0.5)
  # Detectron's proposal AR reads the proposals back clipped to the image first, so the
  # boxes moved past the right edge lose their overhang (and IoU changes): it is the AR of
  # the moved gt boxes clipped to [0, W - 1] (+1 widths equal COCO's w), here by numpy.
  images = []
  for image_id in sorted(gt.getImgIds()):
    boxes, areas = recall.ground_truth_from_coco(gt, image_id, convention="detectron")
    moved = boxes + (boxes[:, 2:3] - boxes[:, 0:1] + 1.0) * (0.28 / 1.72) * [1, 0, 1, 0]
    moved[:, [0, 2]] = np.minimum(moved[:, [0, 2]], gt.imgs[image_id]["width"] - 1.0)
    images.append({"proposals": moved, "gt_boxes": boxes, "gt_areas": areas})
  expected = recall.proposal_metrics(images, limits=(100,), convention="detectron")["AR@100"]
  assert expected > 0.5  # some boxes were clipped, and clipping raised their IoU
  assert shifted["proposals/AR@100"] == pytest.approx(expected, abs=1e-3)
  # IoU 0.54 (s = 0.46 / 1.54) passes 0.50 only: AP = 1 / 10.
  far = evaluate("far", 0.46 / 1.54)
  assert far["bbox/AP"] == pytest.approx(0.1)
  assert far["bbox/AP50"] == pytest.approx(1.0)


def test_label_map_layout(data):
  class_to_category, names = runner.load_label_map(data["label_map"]["instances"])
  assert class_to_category == {i + 1: c for i, (c, _) in enumerate(synthetic.CATEGORIES)}
  assert names[1] == "person"


def test_evaluate_command_line_watches_checkpoints(data, model, tmp_path):
  ckpt = tf.train.Checkpoint(model=model, step=tf.Variable(3, dtype=tf.int64))
  tf.train.CheckpointManager(ckpt, str(tmp_path / "model"), max_to_keep=2).save()
  (tmp_path / "tiny.gin").write_text(GIN)
  env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="2")
  proc = subprocess.run(
      [sys.executable, "-m", "tfdet.evaluate", f"--gin_file={tmp_path / 'tiny.gin'}",
       f"--model_dir={tmp_path / 'model'}", f"--file_pattern={data['instances']['val']}",
       f"--annotations_file={data['annotations']['val']['instances']}", "--batch_size=2",
       "--watch", "--watch_timeout=1"],
      capture_output=True, text=True, cwd=REPO, env=env, timeout=240, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  with open(tmp_path / "model" / "eval" / "metrics-3.json") as f:
    record = json.load(f)
  assert record["step"] == 3 and record["num_images"] == NUM_VAL and "segm/AP" in record


def test_eval_dataset_of_a_shipped_model_file(data):
  # A model file binds nothing of the eval pipeline: Detectron's TEST.SCALE 800, MAX_SIZE 1333.
  gin.clear_config()
  try:
    gin_files.parse(["models/mask_rcnn_fpn.gin"])
    batch = next(iter(evaluate.build_eval_dataset(data["instances"]["val"], 2)))
  finally:
    gin.clear_config()
  height, width = batch[keys.IMAGES].shape[1:3]
  assert min(height, width) >= 800 and max(height, width) <= 1344
