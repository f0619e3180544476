"""Trainer: checkpoints, resume, the NaN stop, backbone init (a tiny toy model, one replica)."""

import glob
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

from tests.training import toy
from tfdet.training import checkpoints, loop
from tfdet.training import optimizer as opt_lib


def _trainer(model_dir, steps, nan_at=None, *, shuffle=False, seeds=None,
             loss_fn=toy.loss_fn, **kwargs):
  return loop.Trainer(
      model_fn=toy.model_fn, loss_fn=loss_fn,
      dataset_fn=toy.dataset_fn_for(4, nan_at, shuffle=shuffle, seeds=seeds),
      optimizer_fn=lambda: opt_lib.build_optimizer(0.05), model_dir=str(model_dir),
      total_steps=steps, global_batch_size=4, strategy="one_device",
      **{"checkpoint_interval": 2, "summary_interval": 1, "log_interval": 1, **kwargs})


def _events(model_dir):
  """{tag: [(step, value proto)]} of the train/ event files."""
  tags = {}
  for path in sorted(glob.glob(os.path.join(str(model_dir), "train", "events.out.tfevents.*"))):
    for event in tf.compat.v1.train.summary_iterator(path):
      for value in event.summary.value:
        tags.setdefault(value.tag, []).append((event.step, value))
  return tags


def test_resume_continues_from_the_latest_checkpoint(tmp_path):
  first = _trainer(tmp_path / "run", 3)
  first.train()
  assert int(first.step.numpy()) == 3
  assert sorted(os.path.basename(p) for p in glob.glob(str(tmp_path / "run/ckpt-*.index"))) \
      == ["ckpt-2.index", "ckpt-3.index"]
  assert glob.glob(str(tmp_path / "run/train/events.out.tfevents.*"))
  saved = toy.weights(first.model)
  # The optimizer's state at step 3 (what ckpt-3 holds): its iteration count, the LR and
  # one momentum slot per trainable variable (2 Dense layers: 4 slots), which training
  # moved. (Paths name the model's layers, which differ between model instances: the
  # restored variables are compared in order.)
  saved_opt = [(v.path.split("/")[-1], np.array(v)) for v in first.optimizer.variables]
  momentums = [value for name, value in saved_opt if name.endswith("_momentum")]
  assert len(saved_opt) == 6 and len(momentums) == len(saved) == 4
  assert saved_opt[0][0] == "iteration" and int(saved_opt[0][1]) == 3
  assert all(np.abs(m).max() > 0 for m in momentums)
  # Rerun with the same model_dir: restored at step 3 with the same weights and optimizer state.
  again = _trainer(tmp_path / "run", 5)
  assert again.restored_from.endswith("ckpt-3") and int(again.step.numpy()) == 3
  assert int(again.optimizer.iterations.numpy()) == 3
  for a, b in zip(saved, toy.weights(again.model), strict=True):
    np.testing.assert_array_equal(a, b)
  restored_opt = [np.array(v) for v in again.optimizer.variables]
  assert len(restored_opt) == len(saved_opt)
  for (name, value), restored in zip(saved_opt, restored_opt, strict=True):
    np.testing.assert_array_equal(restored, value, err_msg=name)
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


def test_input_seed_of_a_start_step():
  assert checkpoints.input_seed(None, 7) is None
  assert checkpoints.input_seed(5, 0) == 5  # a fresh run reads the input as configured
  resumed = {s: checkpoints.input_seed(5, s) for s in (1, 2, 3, 1000)}
  assert len(set(resumed.values()) | {5}) == 5
  assert all(0 <= v < 2**31 for v in resumed.values())
  assert checkpoints.input_seed(5, 3) == resumed[3]  # a pure function
  assert checkpoints.input_seed(6, 3) != resumed[3]


def test_resumed_runs_use_the_seed_of_their_start_step(tmp_path):
  seeds = []
  fresh = _trainer(tmp_path / "run", 1, shuffle=True, seeds=seeds, seed=5,
                   loss_fn=toy.fingerprint_loss_fn)
  first_sum = fresh.train()["input_sum"]
  fresh.total_steps = 2
  fresh.train()
  assert seeds == [5] and fresh.input_seed == 5
  runs = []
  for name in ("a", "b"):
    shutil.copytree(tmp_path / "run", tmp_path / name)
    seeds = []
    resumed = _trainer(tmp_path / name, 3, shuffle=True, seeds=seeds, seed=5,
                       loss_fn=toy.fingerprint_loss_fn)
    assert resumed.start_step == 2 and seeds == [checkpoints.input_seed(5, 2)]
    runs.append((resumed.train(), toy.weights(resumed.model)))
  (losses_a, weights_a), (losses_b, weights_b) = runs
  # Deterministic input: both resumed runs see the same first batch and end equal.
  assert losses_a == losses_b
  for a, b in zip(weights_a, weights_b, strict=True):
    np.testing.assert_array_equal(a, b)
  # A new stream: not a replay of the original run's first batch.
  assert losses_a["input_sum"] != pytest.approx(first_sum)


def test_steps_per_loop_matches_single_steps(tmp_path):
  single = _trainer(tmp_path / "one", 7, checkpoint_interval=2)
  losses_one = single.train()
  looped = _trainer(tmp_path / "three", 7, steps_per_loop=3, checkpoint_interval=2)
  losses_three = looped.train()
  assert losses_three == pytest.approx(losses_one, rel=1e-6)
  for a, b in zip(toy.weights(single.model), toy.weights(looped.model), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-6)
  # Summaries and checkpoints only at loop boundaries (3, 6, 7); multiples of 2 are late.
  assert [s for s, _ in _events(tmp_path / "three")["losses/total_loss"]] == [3, 6, 7]
  assert sorted(os.path.basename(p) for p in glob.glob(str(tmp_path / "three/ckpt-*.index"))) \
      == ["ckpt-3.index", "ckpt-6.index", "ckpt-7.index"]
  written = {s: float(tf.make_ndarray(v.tensor)) for s, v in _events(tmp_path / "one")["losses/total_loss"]}
  looped_written = _events(tmp_path / "three")["losses/total_loss"]
  for step, value in looped_written:  # each boundary writes its own step's losses
    assert float(tf.make_ndarray(value.tensor)) == pytest.approx(written[step], rel=1e-6)
  assert {"learning_rate", "step_time", "images_per_second"} <= set(_events(tmp_path / "three"))


def test_nan_inside_a_loop_stops_at_that_step(tmp_path):
  # Example 18 is NaN: step 5 (examples 16..19) is the second step of the second loop.
  trainer = _trainer(tmp_path, 12, nan_at=18, steps_per_loop=3)
  with pytest.raises(loop.NonFiniteLossError, match=r"step 5 .*total_loss=nan.*ckpt-3"):
    trainer.train()
  assert int(trainer.step.numpy()) == 5  # the loop stopped at the bad step
  assert tf.train.latest_checkpoint(str(tmp_path)).endswith("ckpt-3")
  assert not glob.glob(str(tmp_path / "ckpt-[456]*"))


def test_image_summaries_at_their_interval_and_the_end(tmp_path):
  calls = []

  def draw(model, batch):
    calls.append(batch["x"].shape[0])
    pred = model(batch["x"], training=False).numpy()  # [4, 1]
    level = np.clip(np.round(pred * 40 + 128), 0, 255).astype(np.uint8)
    return [np.broadcast_to(level[:, :, None], (4, 5, 3)).copy(), np.zeros((2, 3, 3), np.uint8)]

  seeds = []
  trainer = _trainer(tmp_path, 5, seeds=seeds, seed=3, image_summary_interval=2,
                     image_summary_fn=draw)
  assert seeds == [3, 3]  # the training input and the fixed image batch
  trainer.train()
  assert calls == [4, 4, 4]
  events = _events(tmp_path)
  assert [s for s, _ in events["predictions/0"]] == [2, 4, 5]
  assert [s for s, _ in events["predictions/1"]] == [2, 4, 5]
  step, value = events["predictions/0"][-1]
  width, height, png = value.tensor.string_val
  assert (int(width), int(height)) == (5, 4)
  pixels = tf.io.decode_png(png).numpy()
  pred = trainer.model(trainer.image_batch["x"], training=False).numpy()
  np.testing.assert_array_equal(pixels[:, 0, 0], np.clip(np.round(pred[:, 0] * 40 + 128), 0, 255))
  assert value.metadata.plugin_data.plugin_name == "images"
  assert tf.io.decode_png(events["predictions/1"][0][1].tensor.string_val[2]).shape == (2, 3, 3)
  with pytest.raises(ValueError, match="image_summary_fn"):
    _trainer(tmp_path / "x", 1, image_summary_interval=2)


def test_single_replica_input_is_plain_and_matches_the_distributed_one(tmp_path):
  plain = _trainer(tmp_path / "plain", 4, loss_fn=toy.fingerprint_loss_fn)
  assert isinstance(plain.dataset, tf.data.Dataset)  # "auto" with one replica
  distributed = _trainer(tmp_path / "dist", 4, loss_fn=toy.fingerprint_loss_fn,
                         distributed_input="always")
  assert not isinstance(distributed.dataset, tf.data.Dataset)
  for _ in range(4):  # the same batches, the same updates
    a = plain._train_step(plain.iterator)
    b = distributed._train_step(distributed.iterator)
    assert float(a["input_sum"]) == float(b["input_sum"])
    np.testing.assert_allclose(float(a["total_loss"]), float(b["total_loss"]), rtol=1e-6)
  for x, y in zip(toy.weights(plain.model), toy.weights(distributed.model), strict=True):
    np.testing.assert_allclose(x, y, rtol=1e-6)
  with pytest.raises(ValueError, match="distributed_input"):
    _trainer(tmp_path / "bad", 1, distributed_input="sometimes")
