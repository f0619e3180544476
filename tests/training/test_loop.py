"""Trainer: checkpoints, resume, the NaN stop, backbone init (a tiny toy model, one replica)."""

import glob
import os

import numpy as np
import pytest
import tensorflow as tf

from tests.training import toy
from tfdet.training import checkpoints, loop
from tfdet.training import optimizer as opt_lib


def _trainer(model_dir, steps, nan_at=None, **kwargs):
  return loop.Trainer(
      model_fn=toy.model_fn, loss_fn=toy.loss_fn, dataset_fn=toy.dataset_fn_for(4, nan_at),
      optimizer_fn=lambda: opt_lib.build_optimizer(0.05), model_dir=str(model_dir),
      total_steps=steps, global_batch_size=4, strategy="one_device", checkpoint_interval=2,
      summary_interval=1, log_interval=1, **kwargs)


def test_resume_continues_from_the_latest_checkpoint(tmp_path):
  first = _trainer(tmp_path / "run", 3, checkpoint_iterator=True)
  first.train()
  assert int(first.step.numpy()) == 3
  assert sorted(os.path.basename(p) for p in glob.glob(str(tmp_path / "run/ckpt-*.index"))) \
      == ["ckpt-2.index", "ckpt-3.index"]
  assert glob.glob(str(tmp_path / "run/train/events.out.tfevents.*"))
  saved = toy.weights(first.model)
  # Rerun with the same model_dir: restored at step 3 with the same weights and optimizer state.
  again = _trainer(tmp_path / "run", 5, checkpoint_iterator=True)
  assert again.restored_from.endswith("ckpt-3") and int(again.step.numpy()) == 3
  assert int(again.optimizer.iterations.numpy()) == 3
  for a, b in zip(saved, toy.weights(again.model), strict=True):
    np.testing.assert_array_equal(a, b)
  again.train()
  assert int(again.step.numpy()) == 5 and tf.train.latest_checkpoint(
      str(tmp_path / "run")).endswith("ckpt-5")
  done = _trainer(tmp_path / "run", 5)
  assert done.train() == {}  # already at total_steps


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
  # Example 18 is NaN: batches of 4 in order -> step 5 (examples 16..19) has a NaN loss.
  trainer = _trainer(tmp_path, 10, nan_at=18)
  with pytest.raises(loop.NonFiniteLossError, match=r"step 5 .*total_loss=nan.*ckpt-4"):
    trainer.train()
  assert tf.train.latest_checkpoint(str(tmp_path)).endswith("ckpt-4")
  assert not glob.glob(str(tmp_path / "ckpt-5*"))
  reader = tf.train.load_checkpoint(str(tmp_path / "ckpt-4"))
  for name, _ in tf.train.list_variables(str(tmp_path / "ckpt-4")):
    value = reader.get_tensor(name)
    if isinstance(value, np.ndarray) and value.dtype.kind == "f":
      assert np.isfinite(value).all(), name


class _WithBackbone(tf.keras.Model):
  def __init__(self, backbone, head):
    super().__init__()
    self.backbone, self.head = backbone, head


def test_init_backbone_reads_only_the_backbone(tmp_path):
  source = _WithBackbone(toy.model_fn(), toy.model_fn())
  step = tf.Variable(7, dtype=tf.int64)
  path = checkpoints.make_checkpoint(model=source, optimizer=opt_lib.DetectronSGD(0.1),
                                     step=step).save(str(tmp_path / "ckpt"))
  target = _WithBackbone(toy.model_fn(), toy.model_fn())
  for v in target.backbone.trainable_variables + target.head.trainable_variables:
    v.assign(tf.zeros_like(v))
  checkpoints.init_backbone(target, path)
  for a, b in zip(toy.weights(source.backbone), toy.weights(target.backbone), strict=True):
    np.testing.assert_array_equal(a, b)
  assert all((w == 0).all() for w in toy.weights(target.head))
  assert checkpoints.init_backbone(target, str(tmp_path)) == path  # a folder: its latest
