"""`python -m tfdet.train` end to end: a tiny Mask R-CNN on synthetic shards for 3 steps."""

import glob
import os
import subprocess
import sys

import pytest
import tensorflow as tf

from tests.export import tiny
from tfdet.data import synthetic

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = tiny.tiny_gin(num_classes=8, imports=("from tfdet import train",
                                             "from tfdet.training import inputs")) + """
train.run:
  max_iter = 3
  lr_steps = (2,)
  warmup_iters = 1
  base_lr = 0.005
  images_per_replica = 2
  reference_batch_size = 2  # no linear scaling: exactly max_iter steps
  checkpoint_interval = 2
  summary_interval = 1
  log_interval = 1
  strategy = "auto"
train/inputs.build_input:
  scales = (128,)
  max_size = 160
  max_instances = 16
  max_polygon_vertices = 64
  shuffle_buffer = 4
  deterministic = True
  seed = 1
"""


def _train(args, timeout=240):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
  env.pop("TF_CONFIG", None)
  return subprocess.run([sys.executable, "-m", "tfdet.train", *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def tiny_gin(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("e2e")
  data = synthetic.ensure_synthetic_tfrecords(str(tmp / "data"), num_train_images=4,
                                              num_val_images=1, image_size=(96, 128),
                                              num_train_shards=1)
  path = tmp / "tiny.gin"
  path.write_text(TINY + f'train/inputs.build_input.file_pattern = "{data["instances"]["train"]}"\n')
  return str(path)


def test_trains_checkpoints_and_writes_summaries(tiny_gin, tmp_path):
  model_dir = str(tmp_path / "run")
  result = _train(["--gin_file=models/mask_rcnn_fpn.gin",
                   "--gin_file=training/detectron_solver.gin", f"--gin_file={tiny_gin}",
                   f"--model_dir={model_dir}"])
  assert result.returncode == 0, result.stderr[-4000:]
  assert "step 3/3" in result.stderr and "eta" in result.stderr
  assert "1 replicas, global batch 2" in result.stderr
  assert tf.train.latest_checkpoint(model_dir).endswith("ckpt-3")
  assert os.path.exists(os.path.join(model_dir, "ckpt-2.index"))
  assert os.path.exists(os.path.join(model_dir, "config.gin"))
  events = glob.glob(os.path.join(model_dir, "train", "events.out.tfevents.*"))
  assert events
  tags = set()
  for event in tf.compat.v1.train.summary_iterator(events[0]):
    tags.update(v.tag for v in event.summary.value)
  assert {"losses/total_loss", "losses/loss_mask", "learning_rate", "step_time",
          "images_per_second"} <= tags, tags


def test_bad_gin_param_fails_before_training(tiny_gin, tmp_path):
  model_dir = str(tmp_path / "bad")
  result = _train(["--gin_file=models/mask_rcnn_fpn.gin",
                   "--gin_file=training/detectron_solver.gin", f"--gin_file={tiny_gin}",
                   "--gin_param=train.run.no_such_knob = 1", f"--model_dir={model_dir}"],
                  timeout=120)
  assert result.returncode != 0
  assert "no_such_knob" in result.stderr
  assert not os.path.exists(model_dir)
