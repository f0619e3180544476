"""`tfdet.train`'s command line end to end: a tiny Mask R-CNN on synthetic shards for 3 steps."""

import glob
import json
import os
import signal
import socket
import subprocess
import sys

import pytest
import tensorflow as tf

from tests.export import tiny
from tfdet.data import keys
from tfdet.training import inputs, run_lock

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = tiny.tiny_gin(num_classes=8, imports=("from tfdet import train",
                                             "from tfdet.training import inputs")) + """
train.run:
  max_iter = 3
  lr_steps = (2,)
  warmup_iters = 1
  base_lr = 0.005
  global_batch_size = 2
  reference_batch_size = 2  # no linear scaling: exactly max_iter steps
  checkpoint_interval = 2
  summary_interval = 1
  log_interval = 1
  image_summary_interval = 2
  summary_score_threshold = 0.0
  strategy = "auto"
  deterministic = True
  seed = 1
train/inputs.build_input:
  scales = (128,)
  max_size = 160
  max_instances = 16
  max_polygon_vertices = 64
  shuffle_buffer = 4
"""


def _train(args, timeout=240, module="tfdet.train"):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
  env.pop("TF_CONFIG", None)
  return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def train_data(synthetic_data):
  return synthetic_data["instances"]["train"], synthetic_data["label_map"]["instances"]


@pytest.fixture(scope="module")
def tiny_gin(train_data, tmp_path_factory):
  pattern, label_map = train_data
  path = tmp_path_factory.mktemp("gin") / "tiny.gin"
  path.write_text(TINY + f'train/inputs.build_input.file_pattern = "{pattern}"\n'
                  f'train.run.label_map = "{label_map}"\n')
  return str(path)


def _events(model_dir):
  """{tag: [(step, value proto)]} of the train/ event files."""
  tags = {}
  for path in sorted(glob.glob(os.path.join(model_dir, "train", "events.out.tfevents.*"))):
    for event in tf.compat.v1.train.summary_iterator(path):
      for value in event.summary.value:
        tags.setdefault(value.tag, []).append((event.step, value))
  return tags


def test_two_replicas_loops_checkpoints_and_summaries(tiny_gin, train_data, tmp_path):
  model_dir = str(tmp_path / "run")
  result = _train(["--gin_file=models/mask_rcnn_fpn.gin",
                   "--gin_file=training/detectron_solver.gin", f"--gin_file={tiny_gin}",
                   "--gin_param=train.run.steps_per_loop = 2", f"--model_dir={model_dir}"],
                  module="tests.training.train_two_cpus", timeout=480)
  assert result.returncode == 0, result.stderr[-4000:]
  assert "step 3/3" in result.stderr and "eta" in result.stderr
  assert "2 replicas, global batch 2" in result.stderr
  assert "input pipeline seed 1 (base seed 1, start step 0)" in result.stderr
  assert tf.train.latest_checkpoint(model_dir).endswith("ckpt-3")
  assert os.path.exists(os.path.join(model_dir, "ckpt-2.index"))
  # The run's config, kept per run; the lock is released.
  config = open(os.path.join(model_dir, "config-0.gin")).read()
  assert open(os.path.join(model_dir, "config.gin")).read() == config
  assert "steps_per_loop = 2" in config and not os.path.exists(
      os.path.join(model_dir, run_lock.LOCK_FILE))
  # A resume whose configuration does not fit the checkpoint fails naming it, and keeps
  # the configs that match the checkpoints.
  failed = _train(["--gin_file=models/mask_rcnn_fpn.gin",
                   "--gin_file=training/detectron_solver.gin", f"--gin_file={tiny_gin}",
                   "--gin_param=builders.build_rcnn.num_classes = 5",
                   "--gin_param=train.run.max_iter = 5", f"--model_dir={model_dir}"])
  assert failed.returncode == 1
  assert "ckpt-3 does not fit the model" in failed.stderr and "Traceback" not in failed.stderr
  assert open(os.path.join(model_dir, "config.gin")).read() == config
  assert sorted(os.path.basename(p) for p in glob.glob(os.path.join(model_dir, "config*"))) \
      == ["config-0.gin", "config.gin"]
  events = _events(model_dir)
  assert {"losses/total_loss", "losses/loss_mask", "learning_rate", "step_time",
          "images_per_second"} <= set(events), set(events)
  # Loops of 2 steps: everything happens at steps 2 and 3 (the end).
  assert [s for s, _ in events["losses/total_loss"]] == [2, 3]
  # The prediction images show the first images of the training input (base seed 1),
  # resized and without the canvas padding. Neither the training process nor this one
  # (tests/conftest.py clears it around every test) has a global TF seed, on which
  # tf.data's seeded shuffles depend: the same stream.
  first = next(iter(inputs.build_input(
      batch_size=2, file_pattern=train_data[0], scales=(128,), max_size=160, max_instances=16,
      max_polygon_vertices=64, shuffle_buffer=4, deterministic=True, seed=1)))
  for i in range(2):
    written = events[f"predictions/{i}"]
    assert [s for s, _ in written] == [2, 3]
    height, width = (int(v) for v in first[keys.IMAGE_INFO][i, :2].numpy())
    for _, value in written:
      assert value.metadata.plugin_data.plugin_name == "images"
      assert [int(v) for v in value.tensor.string_val[:2]] == [width, height]
      assert tf.io.decode_png(value.tensor.string_val[2]).shape == (height, width, 3)


@pytest.mark.parametrize("param,message,before_model_dir", [
    ("train.run.no_such_knob = 1", "no_such_knob", True),  # gin's own error, at parsing
    # The seed is train.run's: one bound on the input function would be silently overridden.
    ("train/inputs.build_input.seed = 3", "bind train.run.seed instead", True),
    # Wrong types are named before anything is built.
    ('train.run.max_iter = "thirty"',
     "gin binding train.run.max_iter = 'thirty' (str): max_iter takes int", True),
    ("config.RpnSettings.nms_threshold = (0.7,)",
     "config.RpnSettings.nms_threshold = (0.7,) (tuple): nms_threshold takes float", True),
    ("train.run.checkpoint_interval = 0", "train.run.checkpoint_interval must be at least 1",
     True),
])
def test_bad_gin_param_fails_before_training(tiny_gin, tmp_path, param, message,
                                             before_model_dir):
  model_dir = str(tmp_path / "bad")
  result = _train(["--gin_file=models/mask_rcnn_fpn.gin",
                   "--gin_file=training/detectron_solver.gin", f"--gin_file={tiny_gin}",
                   f"--gin_param={param}", f"--model_dir={model_dir}"], timeout=120)
  assert result.returncode != 0
  assert message in result.stderr
  if before_model_dir:
    assert not os.path.exists(model_dir)


def test_a_second_training_into_a_locked_model_dir_is_refused(tiny_gin, tmp_path):
  model_dir = tmp_path / "locked"
  model_dir.mkdir()
  owner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
  try:
    (model_dir / run_lock.LOCK_FILE).write_text(json.dumps(
        {"host": socket.gethostname(), "pid": owner.pid, "started": 0}))
    result = _train(["--gin_file=models/mask_rcnn_fpn.gin",
                     "--gin_file=training/detectron_solver.gin", f"--gin_file={tiny_gin}",
                     f"--model_dir={model_dir}"])
  finally:
    owner.kill()
  assert result.returncode == 1
  assert f"in use by another training run (host {socket.gethostname()}, pid {owner.pid}" \
      in result.stderr
  assert sorted(os.listdir(model_dir)) == [run_lock.LOCK_FILE]  # nothing written


def test_sigterm_saves_a_checkpoint_and_exits_cleanly(tiny_gin, tmp_path):
  model_dir = str(tmp_path / "preempted")
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
  proc = subprocess.Popen(
      [sys.executable, "-m", "tfdet.train", "--gin_file=models/mask_rcnn_fpn.gin",
       "--gin_file=training/detectron_solver.gin", f"--gin_file={tiny_gin}",
       "--gin_param=train.run.max_iter = 1000", "--gin_param=train.run.lr_steps = (900,)",
       "--gin_param=train.run.checkpoint_interval = 500", f"--model_dir={model_dir}"],
      cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
  lines = []
  try:
    for line in proc.stderr:  # wait for the first steps, then preempt
      lines.append(line)
      if "step 2/1000" in line:
        proc.send_signal(signal.SIGTERM)
        break
    lines += proc.stderr.readlines()
    proc.wait(timeout=120)
  finally:
    proc.kill()
  stderr = "".join(lines)
  assert proc.returncode == 128 + signal.SIGTERM, stderr[-3000:]
  assert "SIGTERM at step" in stderr and "Traceback" not in stderr
  step = int(stderr.split("SIGTERM at step ")[1].split("/")[0])
  assert step >= 2 and tf.train.latest_checkpoint(model_dir).endswith(f"ckpt-{step}")
  assert f"saved in {model_dir}/ckpt-{step}" in stderr
  assert not os.path.exists(os.path.join(model_dir, run_lock.LOCK_FILE))


@pytest.mark.parametrize("tf_logs", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_the_console_shows_progress_and_hides_tensorflows_own_lines(tiny_gin, tmp_path, tf_logs):
  env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
  env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # as a user's shell has it
  args = ["--gin_file=models/mask_rcnn_fpn.gin", "--gin_file=training/detectron_solver.gin",
          f"--gin_file={tiny_gin}", "--gin_param=train.run.max_iter = 2",
          f"--model_dir={tmp_path / 'run'}"] + (["--tf_logs"] if tf_logs else [])
  result = subprocess.run([sys.executable, "-m", "tfdet.train", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=240)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "step 2/2" in result.stderr and "eta" in result.stderr
  # TensorFlow's strategy set-up and checkpoint-sharding info lines.
  tf_lines = [line for line in result.stderr.splitlines()
              if "Sharding callback" in line or "Using MirroredStrategy" in line]
  assert bool(tf_lines) == tf_logs, result.stderr[-3000:]
