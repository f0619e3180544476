"""The quickstart runs end to end (a few steps on a few images) and says where things went:
the Mask R-CNN it trains by default, and a RetinaNet through the same command."""

import glob
import json
import os
import subprocess
import sys

import pytest
import tensorflow as tf

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
@pytest.mark.parametrize("gin_file,has_masks", [
    ("quickstart/mask_rcnn_tiny_fpn.gin", True),
    ("quickstart/retinanet_tiny.gin", False),
])
def test_quickstart_end_to_end(tmp_path, gin_file, has_masks):
  cmd = [sys.executable, "-m", "tfdet.quickstart", f"--work_dir={tmp_path}",
         f"--gin_file={gin_file}", "--num_train_images=4", "--num_val_images=2",
         "--num_infer_images=1", "--gin_param=train.run.max_iter = 2",
         "--gin_param=train.run.warmup_iters = 1", "--gin_param=train.run.lr_steps = (1,)"]
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  summary = json.loads((tmp_path / "quickstart_summary.json").read_text())
  assert summary["checkpoint step"] == 2
  assert 0.0 <= summary["box AP"] <= 1.0
  assert (summary["mask AP"] is not None) == has_masks  # evaluated as the outputs' keys say
  metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
  assert ("proposals/AR@100" in metrics) == has_masks  # RetinaNet has no proposals
  assert os.path.exists(os.path.join(summary["saved_model"], "saved_model.pb"))
  # TensorBoard's IMAGES tab shows the model's detections (at the end of training here).
  events = glob.glob(os.path.join(summary["model_dir"], "train", "events.out.tfevents.*"))
  tags = {v.tag for path in events for e in tf.compat.v1.train.summary_iterator(path)
          for v in e.summary.value}
  assert {"predictions/0", "predictions/1"} <= tags
  assert len(os.listdir(summary["annotated images"])) == 2  # one image + results.json
