"""Detectron's two-stage recipe through the model-zoo configs and the command lines, on the
synthetic person-keypoint data: rpn_person_only_R-50-FPN_1x trains a few steps, its
evaluation on the train and val splits writes their proposals, data_prep.add_proposals
puts them into copies of the shards, and keypoint_rcnn_R-50-FPN_1x (which has no RPN)
trains a few steps and is evaluated on them. Tiny models: the zoo configs with a shrunk
trunk, few proposals and small images."""

import glob
import json
import os
import subprocess
import sys

import pytest

from tests.export import tiny

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _tiny_gin(extra=""):
  lines = ["from __gin__ import dynamic_registration", "from tfdet import train",
           "from tfdet.data import pipeline", "from tfdet.training import inputs",
           "from tfdet.modeling.detectors import builders",
           "from tfdet.modeling.detectors import config",
           "builders.build_rcnn:", "  stage_blocks = (1, 1, 1, 1)", "  width_divisor = 8",
           '  norm = "bn"', "  freeze_at = 0", "  fpn_channels = 32", "  mlp_dim = 128",
           *(f"  {k} = {v}" for k, v in tiny.KEYPOINT_HEAD.items())]
  lines += [f"config.RpnSettings.{k} = {v}" for k, v in tiny.RPN.items()]
  lines += [f"config.RoiHeadSettings.{k} = {v}" for k, v in tiny.ROI.items()]
  lines += ["train.run:", "  max_iter = 3", "  lr_steps = (2,)", "  warmup_iters = 1",
            "  base_lr = 0.005", "  global_batch_size = 2", "  reference_batch_size = 2",
            "  checkpoint_interval = 3", "  deterministic = True", "  seed = 1",
            "train/inputs.build_input:", "  scales = (128,)", "  max_size = 160",
            "  max_instances = 16", "  max_polygon_vertices = 64", "  shuffle_buffer = 4",
            "eval/pipeline.build_dataset:", "  scales = (128,)", "  max_size = 160"]
  return "\n".join(lines) + "\n" + extra


def test_rpn_person_only_proposals_train_and_evaluate_a_keypoint_rcnn(synthetic_data, tmp_path):
  shards = synthetic_data["person_keypoints"]
  annotations = {s: synthetic_data["annotations"][s]["person_keypoints"] for s in ("train",
                                                                                     "val")}
  env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
  env.pop("TF_CONFIG", None)

  def run(module, config, model_dir, *args):
    result = subprocess.run(
        [sys.executable, "-m", module, f"--gin_file=12_2017_baselines/{config}.gin",
         f"--gin_file={tmp_path / 'tiny.gin'}", f"--model_dir={model_dir}", *args],
        capture_output=True, text=True, cwd=REPO, env=env, timeout=400, check=False)
    assert result.returncode == 0, (module, config, result.stderr[-3000:])
    return result

  (tmp_path / "tiny.gin").write_text(_tiny_gin(
      f'train/inputs.build_input.file_pattern = "{shards["train"]}"\n'))
  rpn_dir = tmp_path / "rpn"
  run("tfdet.train", "rpn_person_only_R-50-FPN_1x", rpn_dir)
  rpn_metrics, prop_shards = {}, {}
  for split in ("train", "val"):
    out = tmp_path / f"rpn_eval_{split}"
    run("tfdet.evaluate", "rpn_person_only_R-50-FPN_1x", rpn_dir,
        f"--file_pattern={shards[split]}", f"--annotations_file={annotations[split]}",
        f"--output_dir={out}")
    rpn_metrics[split] = json.loads((out / "metrics.json").read_text())
    added = subprocess.run(
        [sys.executable, "-m", "data_prep.add_proposals", f"--proposals_file={out}/proposals.npz",
         f"--input_pattern={shards[split]}", f"--output_dir={tmp_path / f'props_{split}'}"],
        capture_output=True, text=True, cwd=REPO, env=env, timeout=300, check=False)
    assert added.returncode == 0, added.stderr[-3000:]
    prop_shards[split] = str(tmp_path / f"props_{split}" / "*.tfrecord")
    assert len(glob.glob(prop_shards[split])) == len(glob.glob(shards[split]))
  assert "proposals/AR@1000" in rpn_metrics["val"]

  # The keypoint row reads the RPN's proposals from the shards; it has no RPN of its own.
  (tmp_path / "tiny.gin").write_text(_tiny_gin(
      f'train/inputs.build_input.file_pattern = "{prop_shards["train"]}"\n'
      "config.KeypointSettings.min_visible_keypoints = 0\n"))
  kp_dir = tmp_path / "keypoint"
  run("tfdet.train", "keypoint_rcnn_R-50-FPN_1x", kp_dir)
  run("tfdet.evaluate", "keypoint_rcnn_R-50-FPN_1x", kp_dir, f"--file_pattern={prop_shards['val']}",
      f"--annotations_file={annotations['val']}")
  metrics = json.loads((kp_dir / "eval" / "metrics.json").read_text())
  assert {"bbox/AP", "keypoints/AP"} <= set(metrics)
  # Its proposals are the RPN's as written for the val split, read back: the same AR.
  for name in ("proposals/AR@100", "proposals/AR@1000"):
    assert metrics[name] == pytest.approx(rpn_metrics["val"][name], abs=1e-6), name
