"""Detectron's two-stage recipe end to end on the synthetic data: proposals written into
shards (`data_prep.add_proposals`), a tiny Fast R-CNN and Mask R-CNN that read them (no
RPN in the model) trained a few steps and evaluated, and the errors of what cannot work."""

import glob
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from data_prep import add_proposals
from tests.export import tiny
from tfdet.data import keys, pipeline, proposal_files
from tfdet.evaluation import runner
from tfdet.export import serving
from tfdet.modeling.detectors import outputs as out
from tfdet.modeling.detectors import rcnn_losses

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PROPOSALS_PER_IMAGE = 40


def _proposals_for(annotations_file, seed):
  """Per-image proposals as an RPN would give them: each gt box jittered a few times, then
  random boxes; scores descending. Original pixels, (x1, y1, x2, y2)."""
  with open(annotations_file) as f:
    coco = json.load(f)
  rng = np.random.default_rng(seed)
  by_image = {image["id"]: (image, []) for image in coco["images"]}
  for ann in coco["annotations"]:
    by_image[ann["image_id"]][1].append(ann["bbox"])
  ids, boxes, scores = [], [], []
  for image_id, (image, gt) in sorted(by_image.items()):
    w, h = image["width"], image["height"]
    rows = []
    for x, y, bw, bh in gt:
      for _ in range(4):
        dx, dy = rng.normal(0, 0.08, 2) * (bw, bh)
        rows.append([x + dx, y + dy, x + bw - 1 + dx, y + bh - 1 + dy])
    while len(rows) < PROPOSALS_PER_IMAGE:
      x1, y1 = rng.uniform(0, w - 8), rng.uniform(0, h - 8)
      rows.append([x1, y1, rng.uniform(x1 + 4, w - 1), rng.uniform(y1 + 4, h - 1)])
    rows = np.clip(np.array(rows[:PROPOSALS_PER_IMAGE], np.float32), 0, [w - 1, h - 1] * 2)
    ids.append(image_id)
    boxes.append(rows)
    scores.append(np.linspace(1.0, 0.01, len(rows), dtype=np.float32))
  return boxes, scores, ids


@pytest.fixture(scope="module")
def shards_with_proposals(synthetic_data, tmp_path_factory):
  """{split: shard pattern with proposals}, the label map and the val annotations."""
  tmp = tmp_path_factory.mktemp("proposals")
  patterns = {}
  for split, seed in (("train", 1), ("val", 2)):
    npz = str(tmp / f"{split}.npz")
    proposal_files.save_proposals_npz(
        npz, *_proposals_for(synthetic_data["annotations"][split]["instances"], seed))
    out_dir = str(tmp / split)
    summary = add_proposals.add_proposals(npz, sorted(glob.glob(
        synthetic_data["instances"][split])), out_dir)
    assert summary["missing"] == 0
    patterns[split] = os.path.join(out_dir, "*.tfrecord")
  return (patterns, synthetic_data["label_map"]["instances"],
          synthetic_data["annotations"]["val"]["instances"])


def _dataset(pattern, mode, batch_size):
  return pipeline.build_dataset(pattern, mode=mode, batch_size=batch_size, scales=(128,),
                                max_size=160, max_instances=16, max_polygon_vertices=64,
                                with_proposals=True, max_proposals=PROPOSALS_PER_IMAGE,
                                deterministic=True, seed=0, shuffle_buffer=4)


def test_fast_rcnn_trains_and_evaluates_on_the_shards_proposals(shards_with_proposals,
                                                                  tmp_path):
  (patterns, label_map, annotations) = shards_with_proposals
  tf.keras.utils.set_random_seed(0)
  model = tiny.tiny_model(heads="faster", num_classes=8, implementation="custom",
                          proposals="precomputed")
  assert model.rpn_head is None and model.reads_precomputed_proposals
  assert not [v.path for v in model.variables if "rpn" in v.path]
  batch = next(iter(_dataset(patterns["train"], "train", 2)))
  assert keys.PROPOSALS in batch
  optimizer = tf.keras.optimizers.SGD(learning_rate=0.005, momentum=0.9)
  totals = []
  for _ in range(3):
    with tf.GradientTape() as tape:
      losses = rcnn_losses.rcnn_losses(model, model(batch, training=True), batch,
                                       seed=tf.constant([0, 0]))
    grads = tape.gradient(losses[rcnn_losses.TOTAL_LOSS], model.trainable_variables)
    optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
    totals.append(float(losses[rcnn_losses.TOTAL_LOSS]))
  assert sorted(losses) == sorted([rcnn_losses.BOX_CLS_LOSS, rcnn_losses.BOX_REG_LOSS,
                                   rcnn_losses.TOTAL_LOSS])
  assert np.isfinite(totals).all() and totals[-1] < totals[0], totals
  # The RoIs it trained on are the gt boxes and the shards' proposals, nothing else.
  outputs = model(batch, training=True)
  n = int(outputs[out.NUM_PROPOSALS][0])
  assert 0 < n <= PROPOSALS_PER_IMAGE
  np.testing.assert_allclose(outputs[out.PROPOSALS][0, :n],
                             tf.boolean_mask(batch[keys.PROPOSALS][0],
                                             batch[keys.PROPOSALS_VALID][0]))
  metrics = runner.evaluate(model, _dataset(patterns["val"], "eval", 1),
                            annotations_file=annotations, label_map_file=label_map,
                            output_dir=str(tmp_path / "eval"), convention="detectron")
  assert 0.0 <= metrics["bbox/AP"] <= 1.0
  # Proposal recall is that of the shards' proposals: jittered gt boxes, so most objects.
  assert metrics["proposals/AR@100"] > 0.3
  with pytest.raises(ValueError, match="reads precomputed proposals"):
    serving.DetectionModule(model)


def test_a_batch_without_proposals_is_named(shards_with_proposals):
  model = tiny.tiny_model(heads="faster", num_classes=8, proposals="precomputed")
  batch = next(iter(pipeline.build_dataset(shards_with_proposals[0]["val"], mode="eval",
                                           batch_size=1, scales=(128,), max_size=160)))
  with pytest.raises(ValueError, match="with_proposals=True"):
    model(batch, training=False)


def test_mask_rcnn_command_line_trains_and_evaluates_without_an_rpn(shards_with_proposals,
                                                                     tmp_path):
  (patterns, label_map, annotations) = shards_with_proposals
  gin = tiny.tiny_gin(num_classes=8, imports=("from tfdet import train",
                                              "from tfdet.training import inputs")) + f"""
include 'models/precomputed_proposals.gin'
train.run:
  max_iter = 3
  lr_steps = (2,)
  warmup_iters = 1
  base_lr = 0.005
  global_batch_size = 2
  reference_batch_size = 2
  checkpoint_interval = 3
  deterministic = True
  seed = 1
  label_map = "{label_map}"
train/inputs.build_input:
  file_pattern = "{patterns['train']}"
  scales = (128,)
  max_size = 160
  max_instances = 16
  max_polygon_vertices = 64
  shuffle_buffer = 4
  max_proposals = {PROPOSALS_PER_IMAGE}
eval/pipeline.build_dataset:
  scales = (128,)
  max_size = 160
  max_proposals = {PROPOSALS_PER_IMAGE}
"""
  (tmp_path / "tiny.gin").write_text(gin)
  env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
  env.pop("TF_CONFIG", None)
  model_dir = tmp_path / "run"

  def run(module, *args):
    return subprocess.run([sys.executable, "-m", module, "--gin_file=models/mask_rcnn_fpn.gin",
                           f"--gin_file={tmp_path / 'tiny.gin'}", f"--model_dir={model_dir}",
                           *args], capture_output=True, text=True, cwd=REPO, env=env,
                          timeout=400, check=False)

  train = run("tfdet.train")
  assert train.returncode == 0, train.stderr[-3000:]
  # The checkpoint holds every weight of the tiny Mask R-CNN without an RPN, and none of
  # an RPN: restoring it into the same model with one leaves the RPN head unmatched.
  path = tf.train.latest_checkpoint(str(model_dir))
  without_rpn = tiny.tiny_model(heads="mask", num_classes=8, proposals="precomputed")
  tf.train.Checkpoint(model=without_rpn).restore(path).assert_existing_objects_matched()
  with_rpn = tiny.tiny_model(heads="mask", num_classes=8)
  with pytest.raises(AssertionError, match="6 of 6 unmatched objects") as unmatched:
    tf.train.Checkpoint(model=with_rpn).restore(path).assert_existing_objects_matched()
  paths = re.findall(r"<Variable path=([\w/]+)", str(unmatched.value))
  assert len(paths) == 6 and all("rpn" in p for p in paths), paths
  evaluate = run("tfdet.evaluate", f"--file_pattern={patterns['val']}",
                 f"--annotations_file={annotations}")
  assert evaluate.returncode == 0, evaluate.stderr[-3000:]
  with open(model_dir / "eval" / "metrics.json") as f:
    metrics = json.load(f)
  assert {"bbox/AP", "segm/AP", "proposals/AR@100"} <= set(metrics)
  export = subprocess.run(
      [sys.executable, "-m", "tfdet.export", "--gin_file=models/mask_rcnn_fpn.gin",
       f"--gin_file={tmp_path / 'tiny.gin'}", f"--model_dir={model_dir}",
       f"--export_dir={tmp_path / 'export'}"], capture_output=True, text=True, cwd=REPO,
      env=env, timeout=400, check=False)
  assert export.returncode != 0 and "reads precomputed proposals" in export.stderr
  assert "Traceback" not in export.stderr
  assert not os.path.exists(tmp_path / "export")


def test_an_rpn_evaluation_writes_the_proposals_a_fast_rcnn_reads(synthetic_data, tmp_path):
  # The two-stage chain, mechanically: a (tiny, untrained) RPN evaluated on the val split
  # writes proposals.npz; add_proposals puts them into copies of the val shards; a Fast
  # R-CNN evaluated on those reads exactly them (read back as Detectron's roidb does).
  tf.keras.utils.set_random_seed(0)
  val = synthetic_data["instances"]["val"]
  common = dict(annotations_file=synthetic_data["annotations"]["val"]["instances"],
                label_map_file=synthetic_data["label_map"]["instances"], convention="detectron")
  rpn = tiny.tiny_model(heads="rpn", num_classes=8)
  eval_data = pipeline.build_dataset(val, mode="eval", batch_size=2, scales=(128,),
                                     max_size=160)
  metrics = runner.evaluate(rpn, eval_data, output_dir=str(tmp_path / "rpn_eval"), **common)
  assert "proposals/AR@100" in metrics
  written = str(tmp_path / "rpn_eval" / runner.PROPOSALS_FILE)
  summary = add_proposals.add_proposals(written, sorted(glob.glob(val)),
                                        str(tmp_path / "val_props"))
  assert summary["missing"] == 0 and summary["records"] == len(runner.shard_image_ids(val))
  fast = tiny.tiny_model(heads="faster", num_classes=8, proposals="precomputed")
  batches = pipeline.build_dataset(str(tmp_path / "val_props" / "*.tfrecord"), mode="eval",
                                   batch_size=2, scales=(128,), max_size=160,
                                   with_proposals=True, max_proposals=1000)
  fast_metrics = runner.evaluate(fast, batches, output_dir=str(tmp_path / "fast_eval"),
                                 **common)
  # The Fast R-CNN's proposals are the RPN's as the file holds them, read back: the same AR.
  for name in ("proposals/AR@100", "proposals/AR@1000"):
    assert fast_metrics[name] == pytest.approx(metrics[name], abs=1e-6), name
  assert "bbox/AP" in fast_metrics
