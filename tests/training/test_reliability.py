"""Training runs that lose nothing: safe checkpoints only, unreadable checkpoints skipped with a
warning, one writer per model_dir, signals end a run with a checkpoint (a toy model)."""

import glob
import json
import logging
import math
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from tests.training import toy
from tfdet.training import checkpoints, loop, run_lock
from tfdet.training import optimizer as opt_lib
from tfdet.training.loss_monitor import LossExplosionError, LossMonitor, NonFiniteLossError


def _trainer(model_dir, steps, **kwargs):
  data = {k: kwargs.pop(k) for k in ("nan_at", "huge_at") if k in kwargs}
  return loop.Trainer(
      model_fn=toy.model_fn, loss_fn=toy.loss_fn, dataset_fn=toy.dataset_fn_for(4, **data),
      optimizer_fn=lambda: opt_lib.build_optimizer(0.05), model_dir=str(model_dir),
      total_steps=steps, global_batch_size=4, strategy="one_device",
      **{"checkpoint_interval": 2, "summary_interval": 1, "log_interval": 1, **kwargs})


def _steps(model_dir):
  return sorted(int(os.path.basename(p)[5:-6]) for p in glob.glob(str(model_dir / "ckpt-*.index")))


# ------------------------------------------------------------------ loss monitor
def test_monitor_accepts_anything_finite_until_it_has_a_history():
  monitor = LossMonitor(factor=10.0, min_history=3, patience=None)
  for total in (5.0, 80.0, 3.0):  # no median yet: all safe
    assert monitor.check({"total_loss": total}, "total_loss", step=1, safe_checkpoint=None)[0]
  # Median of (5, 80, 3) is 5: 49 is within 10x, 51 is not (and is not recorded).
  assert monitor.check({"total_loss": 49.0}, "total_loss", step=2, safe_checkpoint=None)[0]
  safe, reason = monitor.check({"total_loss": 51.0 * 10}, "total_loss", step=3,
                               safe_checkpoint=None)
  assert not safe and "more than 10x the median 27" in reason  # median of 5, 80, 3, 49
  assert list(monitor.history) == [5.0, 80.0, 3.0, 49.0]


def test_monitor_raises_on_nan_and_after_patience_naming_the_safe_checkpoint():
  monitor = LossMonitor(factor=2.0, min_history=1, patience=2)
  monitor.check({"total_loss": 1.0}, "total_loss", step=1, safe_checkpoint="/m/ckpt-1")
  with pytest.raises(NonFiniteLossError, match=r"step 4 .*total_loss=nan.*safe checkpoint is "
                                               r"/m/ckpt-2"):
    monitor.check({"total_loss": math.nan}, "total_loss", step=4, safe_checkpoint="/m/ckpt-2")
  assert not monitor.check({"total_loss": 9.0}, "total_loss", step=5, safe_checkpoint="c")[0]
  with pytest.raises(LossExplosionError, match=r"2 checks in a row up to step 6.*safe "
                                               r"checkpoint is c\b"):
    monitor.check({"total_loss": 9.0}, "total_loss", step=6, safe_checkpoint="c")
  with pytest.raises(ValueError, match="factor must be > 1"):
    LossMonitor(factor=1.0)


def test_an_exploded_loss_is_never_checkpointed(tmp_path):
  # Example 44 has a 1e15 target: step 12 (examples 44..47) has a finite loss near 1e29,
  # which wrecks the weights. Checkpoints every 2 steps: 2..10 are written, none after.
  trainer = _trainer(tmp_path, 30, huge_at=44, loss_explosion_patience=5)
  with pytest.raises(LossExplosionError, match=r"safe checkpoint is .*ckpt-10"):
    trainer.train()
  assert _steps(tmp_path) == [2, 4, 6, 8, 10]
  reader = tf.train.load_checkpoint(str(tmp_path / "ckpt-10"))
  for name, _ in tf.train.list_variables(str(tmp_path / "ckpt-10")):
    value = reader.get_tensor(name)
    if isinstance(value, np.ndarray) and value.dtype.kind == "f":
      assert np.all(np.abs(value) < 100.0), name  # the saved state is a healthy one
  # Resuming from it trains on (the same data) from step 10.
  again = _trainer(tmp_path, 11)
  assert again.restored_from.endswith("ckpt-10")
  assert np.isfinite(again.train()["total_loss"])


# ------------------------------------------------------------- unreadable checkpoints
def _data_file(path):
  return glob.glob(path + ".data-*")[0]


@pytest.mark.parametrize("damage", ["truncate_data", "empty_index", "delete_data"])
def test_an_unreadable_latest_checkpoint_falls_back_to_the_previous(tmp_path, caplog, damage):
  _trainer(tmp_path, 4).train()  # ckpt-2, ckpt-4
  latest = str(tmp_path / "ckpt-4")
  if damage == "truncate_data":
    data = _data_file(latest)
    with open(data, "r+b") as f:
      f.truncate(os.path.getsize(data) // 2)
  elif damage == "empty_index":
    open(latest + ".index", "w").close()
  else:
    os.remove(_data_file(latest))
  caplog.set_level(logging.WARNING)
  resumed = _trainer(tmp_path, 6)
  assert resumed.restored_from.endswith("ckpt-2") and int(resumed.step.numpy()) == 2
  warned = " ".join(r.getMessage() for r in caplog.records)
  assert "cannot restore" in warned and "ckpt-4" in warned
  resumed.train()
  assert int(resumed.step.numpy()) == 6


def test_no_readable_checkpoint_names_every_file(tmp_path):
  _trainer(tmp_path, 4).train()
  for prefix in ("ckpt-2", "ckpt-4"):
    open(str(tmp_path / prefix) + ".index", "w").close()
  with pytest.raises(checkpoints.CheckpointError, match=r"ckpt-4: .*; .*ckpt-2: .*Move the "):
    _trainer(tmp_path, 6)


def test_a_checkpoint_of_another_model_is_not_skipped_but_named(tmp_path):
  _trainer(tmp_path, 2).train()
  wider = lambda: tf.keras.Sequential([  # noqa: E731
      tf.keras.Input((3,)), tf.keras.layers.Dense(5), tf.keras.layers.Dense(1)])
  with pytest.raises(checkpoints.CheckpointError, match=r"ckpt-2 does not fit the model"):
    loop.Trainer(model_fn=wider, loss_fn=toy.loss_fn, dataset_fn=toy.dataset_fn_for(4),
                 optimizer_fn=lambda: opt_lib.build_optimizer(0.05), model_dir=str(tmp_path),
                 total_steps=4, global_batch_size=4, strategy="one_device")


# --------------------------------------------------------------------------- signals
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_ends_the_run_with_a_checkpoint_of_its_last_step(tmp_path, signum):
  # What the run must restore (a background shell job inherits SIGINT ignored).
  before = signal.getsignal(signum)
  sent = []

  def heartbeat():  # runs at every log interval, between steps
    if len(sent) == 0:
      os.kill(os.getpid(), signum)
      sent.append(signum)

  trainer = _trainer(tmp_path, 50, checkpoint_interval=10, heartbeat=heartbeat)
  with pytest.raises(loop.TrainingInterrupted, match=r"at step 1/50: the state after step 1 "
                                                      r"is saved in .*ckpt-1; rerun"):
    trainer.train()
  assert _steps(tmp_path) == [1]
  assert signal.getsignal(signum) == before


# --------------------------------------------------------------------------- the lock
def test_a_second_writer_is_refused_naming_the_owner(tmp_path):
  with run_lock.RunLock(str(tmp_path)) as first:
    info = json.loads((tmp_path / run_lock.LOCK_FILE).read_text())
    assert info["pid"] == os.getpid() and info["host"] == socket.gethostname()
    with pytest.raises(run_lock.ModelDirLockedError,
                       match=rf"in use by another training run \(host .*, pid {os.getpid()}, "
                             rf"lock file .*{run_lock.LOCK_FILE}\)"):
      run_lock.RunLock(str(tmp_path)).acquire()
    first.refresh()
  assert not (tmp_path / run_lock.LOCK_FILE).exists()  # released


def test_stale_locks_are_taken_over(tmp_path, caplog):
  caplog.set_level(logging.WARNING)
  dead = subprocess.Popen([sys.executable, "-c", "pass"])
  dead.wait()
  path = tmp_path / run_lock.LOCK_FILE
  path.write_text(json.dumps({"host": socket.gethostname(), "pid": dead.pid, "started": 0}))
  with run_lock.RunLock(str(tmp_path)):
    assert json.loads(path.read_text())["pid"] == os.getpid()
  assert f"process {dead.pid} on this host is no longer running" in caplog.text
  # Another host's lock: alive while refreshed, stale once older than stale_after_s.
  path.write_text(json.dumps({"host": "elsewhere", "pid": 1, "started": 0}))
  with pytest.raises(run_lock.ModelDirLockedError, match="host elsewhere, pid 1"):
    run_lock.RunLock(str(tmp_path), stale_after_s=60).acquire()
  old = time.time() - 120
  os.utime(path, (old, old))
  with run_lock.RunLock(str(tmp_path), stale_after_s=60):
    pass
  assert "last refreshed 120 s ago" in caplog.text or "last refreshed 12" in caplog.text
