"""The distributed training loop.

`Trainer` runs a model's losses through a tf.function train step under a
`tf.distribute` strategy:

* inputs come from ``strategy.distribute_datasets_from_function(dataset_fn)``;
  ``dataset_fn(input_context)`` batches ``input_context.get_per_replica_batch_size(global)``
  images, so one step sees the global batch;
* each replica's total loss (a mean over its own images) is divided by the
  number of replicas and the optimizer sums the gradients over replicas, so
  the update uses the mean over the global batch (independent of the number
  of replicas);
* after every step the reduced losses are checked on the host: a NaN or Inf
  stops the run with `NonFiniteLossError` naming the step and the losses;
  the bad state is never saved, so ``model_dir`` keeps the last good
  checkpoint;
* TensorBoard scalars (each loss, learning rate, images/s, step time) go to
  ``model_dir/train``; console lines with an ETA go to absl logging;
* checkpoints every ``checkpoint_interval`` steps and at the end; a rerun
  with the same ``model_dir`` resumes from the latest one.

Under MultiWorkerMirroredStrategy (TF_CONFIG set) the chief writes
checkpoints and summaries to ``model_dir``; other workers save to a
temporary folder (saving is collective) that is deleted at the end.
"""

import json
import math
import os
import shutil
import time

import keras
import tensorflow as tf
from absl import logging
from tensorflow.core.framework import summary_pb2

from tfdet.training import checkpoints

STRATEGIES = ("auto", "mirrored", "multi_worker", "one_device")
TOTAL_LOSS = "total_loss"


class NonFiniteLossError(FloatingPointError):
  """A loss became NaN or Inf (the message names the step and the losses)."""


def make_strategy(kind="auto"):
  """A `tf.distribute.Strategy` by name.

  Args:
    kind: "auto" (multi_worker when TF_CONFIG is set, else mirrored),
      "mirrored" (all local GPUs; without GPUs all logical CPU devices, one
      replica on an ordinary machine), "multi_worker"
      (MultiWorkerMirroredStrategy from TF_CONFIG) or "one_device".
  """
  if kind not in STRATEGIES:
    raise ValueError(f"strategy must be one of {STRATEGIES}, got {kind!r}")
  if kind == "auto":
    kind = "multi_worker" if os.environ.get("TF_CONFIG") else "mirrored"
  if kind == "multi_worker":
    return tf.distribute.MultiWorkerMirroredStrategy()
  gpus = tf.config.list_logical_devices("GPU")
  if kind == "one_device":
    return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
  devices = [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]
  return tf.distribute.MirroredStrategy(devices)


def is_chief(strategy):
  """Whether this task writes checkpoints and summaries."""
  resolver = getattr(strategy, "cluster_resolver", None)
  if resolver is None or not resolver.task_type:
    return True
  if resolver.task_type == "chief":
    return True
  cluster = json.loads(os.environ.get("TF_CONFIG", "{}")).get("cluster", {})
  return resolver.task_type == "worker" and resolver.task_id == 0 and "chief" not in cluster


class Trainer:
  """Trains a model under a distribution strategy; see the module docstring.

  Args:
    model_fn: () -> keras.Model, called in the strategy's scope; its
      variables must exist after the call (functional parts).
    loss_fn: (model, batch) -> dict of float32 scalar losses, each a mean
      over the replica's batch, with the sum under `total_loss_key`.
    dataset_fn: (tf.distribute.InputContext) -> tf.data.Dataset of
      per-replica batches.
    optimizer_fn: () -> keras optimizer (possibly a LossScaleOptimizer),
      called in the strategy's scope.
    model_dir: checkpoints and ``train/`` summaries.
    total_steps: train until the step counter reaches this.
    global_batch_size: images per step over all replicas (for images/s).
    strategy: a `tf.distribute.Strategy` or a name for `make_strategy`.
    checkpoint_interval: save every this many steps (and at the end).
    max_to_keep: checkpoints kept.
    summary_interval, log_interval: steps between TensorBoard writes and
      console lines.
    checkpoint_iterator: also checkpoint the input iterator when it is
      trackable (see `tfdet.training.checkpoints`: in TF 2.21 the distributed
      iterator is not, and a warning says so).
    init_checkpoint: None, or a checkpoint (file prefix or folder) whose
      backbone variables initialize ``model.backbone`` on a fresh start.
    total_loss_key: the key of the loss that is minimized.
  """

  def __init__(self, *, model_fn, loss_fn, dataset_fn, optimizer_fn, model_dir, total_steps,
               global_batch_size, strategy="auto", checkpoint_interval=1000, max_to_keep=5,
               summary_interval=20, log_interval=20, checkpoint_iterator=False,
               init_checkpoint=None, total_loss_key=TOTAL_LOSS):
    self.strategy = make_strategy(strategy) if isinstance(strategy, str) else strategy
    self.model_dir = model_dir
    self.total_steps = int(total_steps)
    self.global_batch_size = int(global_batch_size)
    self.checkpoint_interval = max(int(checkpoint_interval), 1)
    self.summary_interval = max(int(summary_interval), 1)
    self.log_interval = max(int(log_interval), 1)
    self.loss_fn = loss_fn
    self.total_loss_key = total_loss_key
    self.chief = is_chief(self.strategy)
    with self.strategy.scope():
      self.model = model_fn()
      self.optimizer = optimizer_fn()
      self.optimizer.build(self.model.trainable_variables)
      self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step",
                              aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
    self.dataset = self.strategy.distribute_datasets_from_function(dataset_fn)
    self.iterator = iter(self.dataset)
    track_iterator = checkpoint_iterator and isinstance(self.iterator,
                                                        tf.__internal__.tracking.Trackable)
    if checkpoint_iterator and not track_iterator:
      # TF 2.21's DistributedIterator (distribute_datasets_from_function) is not Trackable.
      logging.warning("the input iterator (%s) is not checkpointable; a resumed run starts a "
                      "fresh input stream", type(self.iterator).__name__)
    self.checkpoint = checkpoints.make_checkpoint(
        model=self.model, optimizer=self.optimizer, step=self.step,
        iterator=self.iterator if track_iterator else None)
    self._save_dir = model_dir
    if not self.chief:
      resolver = self.strategy.cluster_resolver
      self._save_dir = checkpoints.temporary_dir_for_worker(model_dir, resolver.task_type,
                                                            resolver.task_id)
    self.manager = checkpoints.make_manager(self.checkpoint, self._save_dir,
                                            step_counter=self.step, max_to_keep=max_to_keep)
    latest = tf.train.latest_checkpoint(model_dir)
    if latest:
      self.checkpoint.restore(latest).assert_existing_objects_matched()
      logging.info("resumed from %s at step %d", latest, int(self.step.numpy()))
    elif init_checkpoint:
      checkpoints.init_backbone(self.model, init_checkpoint)
    self.restored_from = latest
    self._train_step = tf.function(self._distributed_step)

  # ----------------------------------------------------------------- step
  def _replica_step(self, batch):
    num_replicas = self.strategy.num_replicas_in_sync
    variables = self.model.trainable_variables
    with tf.GradientTape() as tape:
      losses = self.loss_fn(self.model, batch)
      loss = tf.cast(losses[self.total_loss_key], tf.float32) / num_replicas
      if isinstance(self.optimizer, keras.optimizers.LossScaleOptimizer):
        loss = self.optimizer.scale_loss(loss)
    grads = tape.gradient(loss, variables)
    pairs = [(g, v) for g, v in zip(grads, variables, strict=True) if g is not None]
    self.optimizer.apply_gradients(pairs)
    return {k: tf.cast(v, tf.float32) for k, v in losses.items()}

  def _distributed_step(self, iterator):
    per_replica = self.strategy.run(self._replica_step, args=(next(iterator),))
    self.step.assign_add(1)
    return {k: self.strategy.reduce(tf.distribute.ReduceOp.MEAN, v, axis=None)
            for k, v in per_replica.items()}

  def learning_rate(self):
    """The LR the next step uses (float)."""
    lr = self.optimizer.learning_rate
    return float(lr(self.optimizer.iterations) if callable(lr) else lr)

  # ----------------------------------------------------------------- loop
  def _save(self, step):
    path = self.manager.save(checkpoint_number=step)
    if self.chief:
      logging.info("saved %s", path)
    return path

  def train(self):
    """Runs until `total_steps`; returns the last step's losses (floats)."""
    step = int(self.step.numpy())
    if step >= self.total_steps:
      logging.info("nothing to do: step %d >= total_steps %d", step, self.total_steps)
      return {}
    if self.chief:
      writer = tf.summary.create_file_writer(os.path.join(self.model_dir, "train"))
    else:
      writer = tf.summary.create_noop_writer()
    start_step, window_start, window_steps = step, time.time(), 0
    first_step_time = None
    losses = {}
    try:
      while step < self.total_steps:
        lr = self.learning_rate()
        t = time.time()
        losses = {k: float(v) for k, v in self._train_step(self.iterator).items()}
        step += 1
        bad = {k: v for k, v in losses.items() if not math.isfinite(v)}
        if bad:
          last = self.manager.latest_checkpoint or tf.train.latest_checkpoint(self.model_dir)
          raise NonFiniteLossError(
              f"non-finite loss at step {step} (iteration {step - 1}): "
              + ", ".join(f"{k}={v}" for k, v in sorted(bad.items()))
              + f"; all losses: {losses}; the state after this step was not saved; "
              f"last good checkpoint: {last}")
        step_time = time.time() - t
        if first_step_time is None:
          first_step_time = step_time  # includes tracing; kept out of the rates
          window_start = time.time()
        else:
          window_steps += 1
        avg = (time.time() - window_start) / max(window_steps, 1)
        done = step == self.total_steps
        if step % self.summary_interval == 0 or done:
          with writer.as_default():
            for name, value in losses.items():
              _scalar_summary(f"losses/{name}", value, step)
            _scalar_summary("learning_rate", lr, step)
            _scalar_summary("step_time", step_time, step)
            if window_steps:
              _scalar_summary("images_per_second", self.global_batch_size / avg, step)
          writer.flush()
        if step % self.log_interval == 0 or done or step == start_step + 1:
          eta = avg * (self.total_steps - step) if window_steps else float("nan")
          logging.info("step %d/%d  %s  lr %.6g  %.3fs/step  %.1f img/s  eta %s", step,
                       self.total_steps, "  ".join(f"{k} {v:.4f}" for k, v in losses.items()),
                       lr, avg if window_steps else step_time,
                       self.global_batch_size / (avg if window_steps else step_time),
                       _format_eta(eta))
        if step % self.checkpoint_interval == 0 or done:
          self._save(step)
    finally:
      writer.close()
      if not self.chief:
        shutil.rmtree(self._save_dir, ignore_errors=True)
    return losses


def _scalar_summary(name, value, step):
  """A TensorBoard scalar via the core summary op (the tensorboard package is optional)."""
  metadata = summary_pb2.SummaryMetadata()
  metadata.plugin_data.plugin_name = "scalars"
  tf.summary.write(name, tf.constant(value, tf.float32), step=step, metadata=metadata)


def _format_eta(seconds):
  if not math.isfinite(seconds):
    return "?"
  seconds = int(seconds)
  return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
