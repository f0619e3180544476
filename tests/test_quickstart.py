"""The quickstart runs end to end (a few steps on a few images) and says where things went."""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_quickstart_end_to_end(tmp_path):
  cmd = [sys.executable, "-m", "tfdet.quickstart", f"--work_dir={tmp_path}",
         "--num_train_images=4", "--num_val_images=2", "--num_infer_images=1",
         "--gin_param=train.run.max_iter = 2", "--gin_param=train.run.warmup_iters = 1",
         "--gin_param=train.run.lr_steps = (1,)"]
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  summary = json.loads((tmp_path / "quickstart_summary.json").read_text())
  assert summary["checkpoint step"] == 2
  assert 0.0 <= summary["box AP"] <= 1.0 and 0.0 <= summary["mask AP"] <= 1.0
  assert os.path.exists(os.path.join(summary["metrics"], "metrics.json"))
  assert os.path.exists(os.path.join(summary["saved_model"], "saved_model.pb"))
  assert len(os.listdir(summary["annotated images"])) == 2  # one image + results.json
