"""The distributed training loop.

`Trainer` runs a model's losses through a tf.function train step under a
`tf.distribute` strategy:

* inputs come from ``strategy.distribute_datasets_from_function``;
  ``dataset_fn(input_context, seed)`` batches
  ``input_context.get_per_replica_batch_size(global)`` images, so one step
  sees the global batch;
* each replica's total loss (a mean over its own images) is divided by the
  number of replicas and the optimizer sums the gradients over replicas, so
  the update uses the mean over the global batch (independent of the number
  of replicas);
* one call of the tf.function runs ``steps_per_loop`` steps (a ``tf.range``
  loop); everything below happens on the host between calls, at loop
  boundaries;
* the reduced losses are checked on the host (`loss_monitor.LossMonitor`): a
  NaN or Inf stops the run with `NonFiniteLossError` naming the step, the
  losses and the last safe checkpoint (inside a loop the first non-finite
  step ends it); a checkpoint is written only after a step whose losses are
  finite and whose total is within `loss_explosion_factor` of the running
  median of the healthy ones, so every checkpoint in ``model_dir`` is safe to
  resume from; a loss that stays exploded stops the run
  (`LossExplosionError`);
* SIGINT (Ctrl-C) and SIGTERM (preemption) end the run after the current
  step with a checkpoint of it (when safe) and `TrainingInterrupted` naming
  it; under several workers (where saving is collective) they end it without
  one, the last periodic checkpoint being the safe one;
* a resume whose latest checkpoint is unreadable (truncated, empty) names the
  file and falls back to the previous one, with a warning;
* TensorBoard scalars (each loss, learning rate, images/s, step time) go to
  ``model_dir/train``, and optionally images of the model's predictions on a
  fixed batch (`tfdet.training.summaries`); console lines with an ETA go to
  absl logging;
* checkpoints every ``checkpoint_interval`` steps and at the end; a rerun
  with the same ``model_dir`` resumes from the latest one, with a new input
  stream (`Trainer`'s docstring).

Under MultiWorkerMirroredStrategy (TF_CONFIG set) the chief writes
checkpoints and summaries to ``model_dir``; other workers save to a
temporary folder (saving is collective) that is deleted at the end.
"""

import json
import math
import os
import shutil
import signal
import time

import keras
import tensorflow as tf
from absl import logging

from tfdet.modeling.losses import TOTAL_LOSS
from tfdet.training import checkpoints, summaries
from tfdet.training.loss_monitor import LossExplosionError, LossMonitor, NonFiniteLossError

STRATEGIES = ("auto", "mirrored", "multi_worker", "one_device")
__all__ = ["LossExplosionError", "NonFiniteLossError", "Trainer", "TrainingInterrupted",
           "is_chief", "make_strategy"]


class TrainingInterrupted(KeyboardInterrupt):
  """SIGINT or SIGTERM ended the run (the message names the checkpoint to resume from).

  Attributes:
    signum: the signal's number.
    checkpoint: the checkpoint that holds the interrupted run's state, or None.
  """

  def __init__(self, message, *, signum, checkpoint):
    super().__init__(message)
    self.signum = signum
    self.checkpoint = checkpoint


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

  Resuming and the input stream: the input iterator is not checkpointed (see
  `tfdet.training.checkpoints`). A run that starts at step S (S = 0 fresh,
  else the restored checkpoint's step) calls ``dataset_fn(ctx, seed)`` with
  ``seed = checkpoints.input_seed(self.seed, S)`` and logs it: a fresh run
  gets ``seed`` itself, a resumed one a seed hashed from (seed, S), so it does
  not replay the first images of the original run. With a deterministic input
  pipeline the resumed run's input is therefore a pure function of
  (seed, S); it is not the continuation of the interrupted stream. With
  ``seed=None`` the pipeline is unseeded and every start draws a random
  stream.

  Args:
    model_fn: () -> keras.Model, called in the strategy's scope; its
      variables must exist after the call (functional parts).
    loss_fn: (model, batch) -> dict of float32 scalar losses, each a mean
      over the replica's batch, with the sum under `total_loss_key`.
    dataset_fn: (tf.distribute.InputContext, seed) -> tf.data.Dataset of
      per-replica batches; `seed` (None or int) seeds the pipeline.
    optimizer_fn: () -> keras optimizer (possibly a LossScaleOptimizer),
      called in the strategy's scope.
    model_dir: checkpoints and ``train/`` summaries.
    total_steps: train until the step counter reaches this.
    global_batch_size: images per step over all replicas (for images/s).
    strategy: a `tf.distribute.Strategy` or a name for `make_strategy`.
    seed: None or the base seed of the input pipeline (see above).
    steps_per_loop: training steps per tf.function call; summaries, console
      lines, checkpoints and the NaN check happen between calls, at the first
      boundary at or after each interval's multiple.
    checkpoint_interval: save every this many steps (and at the end).
    max_to_keep: checkpoints kept.
    summary_interval, log_interval: steps between TensorBoard writes and
      console lines.
    image_summary_interval: steps between image summaries (and at the end);
      0: none.
    image_summary_fn: (model, batch) -> list of [H, W, 3] uint8 images (e.g.
      `summaries.PredictionImages`), written as ``predictions/<i>``. Called on
      the chief only, outside `strategy.run`, with the plain model and the
      fixed batch.
    image_summary_dataset_fn: None or (seed) -> tf.data.Dataset whose first
      batch is the fixed batch (taken once at construction); None: the first
      batch of ``dataset_fn(tf.distribute.InputContext(), seed)``. `seed` is
      the fresh run's ``input_seed(seed, 0)``, so a resumed run draws on the
      same images when the input is seeded.
    init_checkpoint: None, or a checkpoint (file prefix or folder) whose
      backbone variables initialize ``model.backbone`` on a fresh start.
    total_loss_key: the key of the loss that is minimized.
    distributed_input: "auto": with one replica in one process, the plain
      data set of ``dataset_fn(InputContext(), seed)`` (on the 2-core CPU the
      quickstart's step takes 0.41 s fed so against 0.73 s fed by
      ``distribute_datasets_from_function``'s DistributedIterator; see
      ``benchmarks/bench_train_step.py``), else the distributed data set;
      "always": the distributed data set in every case.
    loss_explosion_factor, loss_explosion_patience: `LossMonitor`'s factor
      and patience (None disables each).
    heartbeat: None, or a callable run at every log interval (the run lock's
      refresh).
  """

  def __init__(self, *, model_fn, loss_fn, dataset_fn, optimizer_fn, model_dir, total_steps,
               global_batch_size, strategy="auto", seed=None, steps_per_loop=1,
               checkpoint_interval=1000, max_to_keep=5, summary_interval=20, log_interval=20,
               image_summary_interval=0, image_summary_fn=None, image_summary_dataset_fn=None,
               init_checkpoint=None, total_loss_key=TOTAL_LOSS, distributed_input="auto",
               loss_explosion_factor=10.0, loss_explosion_patience=20, heartbeat=None):
    self.strategy = make_strategy(strategy) if isinstance(strategy, str) else strategy
    self.model_dir = model_dir
    self.total_steps = int(total_steps)
    self.global_batch_size = int(global_batch_size)
    self.seed = seed
    self.steps_per_loop = int(steps_per_loop)
    if self.steps_per_loop < 1:
      raise ValueError(f"steps_per_loop must be >= 1, got {steps_per_loop}")
    self.checkpoint_interval = max(int(checkpoint_interval), 1)
    self.summary_interval = max(int(summary_interval), 1)
    self.log_interval = max(int(log_interval), 1)
    self.image_summary_interval = int(image_summary_interval)
    if self.image_summary_interval > 0 and image_summary_fn is None:
      raise ValueError("image_summary_interval > 0 needs an image_summary_fn")
    self.image_summary_fn = image_summary_fn
    self.loss_fn = loss_fn
    self.total_loss_key = total_loss_key
    self.chief = is_chief(self.strategy)
    # Several workers save collectively: a signal that reaches one cannot make all save.
    self.multi_worker = getattr(self.strategy, "cluster_resolver", None) is not None
    with self.strategy.scope():
      self.model = model_fn()
      self.optimizer = optimizer_fn()
      self.optimizer.build(self.model.trainable_variables)
      self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step",
                              aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
    self.checkpoint = checkpoints.make_checkpoint(model=self.model, optimizer=self.optimizer,
                                                  step=self.step)
    self._save_dir = model_dir
    if not self.chief:
      resolver = self.strategy.cluster_resolver
      self._save_dir = checkpoints.temporary_dir_for_worker(model_dir, resolver.task_type,
                                                            resolver.task_id)
    self.manager = checkpoints.make_manager(self.checkpoint, self._save_dir,
                                            step_counter=self.step, max_to_keep=max_to_keep)
    latest = checkpoints.restore_newest_readable(self.checkpoint, model_dir)
    if latest:
      logging.info("resumed from %s at step %d", latest, int(self.step.numpy()))
    elif init_checkpoint:
      checkpoints.init_backbone(self.model, init_checkpoint)
    self.restored_from = latest
    self.monitor = LossMonitor(factor=loss_explosion_factor, patience=loss_explosion_patience)
    self.heartbeat = heartbeat
    self.start_step = int(self.step.numpy())
    self.input_seed = checkpoints.input_seed(seed, self.start_step)
    logging.info("input pipeline seed %s (base seed %s, start step %d)%s", self.input_seed, seed,
                 self.start_step, ": a new stream, the input position is not restored"
                 if self.start_step else "")
    if distributed_input not in ("auto", "always"):
      raise ValueError(f"distributed_input must be 'auto' or 'always', got {distributed_input!r}")
    if (distributed_input == "auto" and self.strategy.num_replicas_in_sync == 1
        and not self.multi_worker):
      # The step function reads a plain iterator just as it reads a distributed one.
      self.dataset = dataset_fn(tf.distribute.InputContext(), self.input_seed)
    else:
      self.dataset = self.strategy.distribute_datasets_from_function(
          lambda ctx: dataset_fn(ctx, self.input_seed))
    self.iterator = iter(self.dataset)
    self.image_batch = None
    if self.chief and self.image_summary_interval > 0:
      fixed_seed = checkpoints.input_seed(seed, 0)
      if image_summary_dataset_fn is None:
        images = dataset_fn(tf.distribute.InputContext(), fixed_seed)
      else:
        images = image_summary_dataset_fn(fixed_seed)
      self.image_batch = next(iter(images))
    self._train_step = tf.function(self._distributed_step)
    self._train_loop = tf.function(self._distributed_loop)

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

  def _distributed_loop(self, iterator, num_steps):
    """Runs up to `num_steps` (int32 scalar) steps; stops after a non-finite loss.

    Both calls of the `_train_step` tf.function share one trace. The loop's
    condition holds the NaN check: with a ``break`` (a `tf.cond` around the
    step inside the loop) the tiny Mask R-CNN on 2 mirrored replicas failed
    in TF 2.21 ("You must feed a value for placeholder tensor").

    Returns:
      the losses of the last step run.
    """
    def body(i, finite, losses):
      del finite, losses
      losses = self._train_step(iterator)
      return i + 1, _all_finite(losses), losses

    losses = self._train_step(iterator)
    _, _, losses = tf.while_loop(lambda i, finite, _: (i < num_steps) & finite, body,
                                 (tf.constant(1), _all_finite(losses), losses))
    return losses

  def learning_rate(self, iteration=None):
    """The LR of an optimizer iteration (float); None: the one the next step uses."""
    lr = self.optimizer.learning_rate
    if not callable(lr):
      return float(lr)
    return float(lr(self.optimizer.iterations if iteration is None else iteration))

  # ----------------------------------------------------------------- loop
  def _save(self, step):
    path = self.manager.save(checkpoint_number=step)
    if self.chief:
      logging.info("saved %s", path)
    return path

  def _write_images(self, step):
    for i, pixels in enumerate(self.image_summary_fn(self.model, self.image_batch)):
      summaries.image(f"predictions/{i}", pixels, step)

  def _safe_checkpoint(self):
    """The newest checkpoint this run or its predecessors saved (all are safe)."""
    return self.manager.latest_checkpoint or self.restored_from

  def _run_steps(self, step):
    """One call of the step function: up to steps_per_loop steps; returns the losses."""
    if self.steps_per_loop == 1:
      result = self._train_step(self.iterator)
    else:
      num_steps = min(self.steps_per_loop, self.total_steps - step)
      result = self._train_loop(self.iterator, tf.constant(num_steps, tf.int32))
    return {k: float(v) for k, v in result.items()}

  def train(self):
    """Runs until `total_steps`; returns the last step's losses (floats).

    Raises:
      NonFiniteLossError, LossExplosionError: the losses went bad (module docstring).
      TrainingInterrupted: SIGINT or SIGTERM; the run's state is in its `checkpoint`.
    """
    step = int(self.step.numpy())
    if step >= self.total_steps:
      logging.info("nothing to do: step %d >= total_steps %d", step, self.total_steps)
      return {}
    if self.chief:
      writer = tf.summary.create_file_writer(os.path.join(self.model_dir, "train"))
    else:
      writer = tf.summary.create_noop_writer()
    start_step = step
    # Rates leave out the first call (it traces): step time sums, wall clock since it ended.
    timed_steps, timed_seconds, wall_start = 0, 0.0, None
    losses = {}
    signals = _SignalCatcher()
    try:
      while step < self.total_steps:
        prev = step
        t = time.time()
        losses = self._run_steps(step)
        step = int(self.step.numpy())
        safe, unsafe_reason = self.monitor.check(losses, self.total_loss_key, step=step,
                                                 safe_checkpoint=self._safe_checkpoint())
        step_time = (time.time() - t) / (step - prev)
        if wall_start is None:
          wall_start = time.time()
        else:
          timed_steps += step - prev
          timed_seconds += step_time * (step - prev)
        avg = timed_seconds / timed_steps if timed_steps else step_time
        images_per_second = self.global_batch_size / avg
        lr = self.learning_rate(int(self.optimizer.iterations.numpy()) - 1)  # the last step's
        done = step == self.total_steps
        if _crossed(prev, step, self.summary_interval) or done:
          with writer.as_default():
            for name, value in losses.items():
              summaries.scalar(f"losses/{name}", value, step)
            summaries.scalar("learning_rate", lr, step)
            summaries.scalar("step_time", step_time, step)
            if timed_steps:
              summaries.scalar("images_per_second", images_per_second, step)
          writer.flush()
        if self.image_batch is not None and (
            _crossed(prev, step, self.image_summary_interval) or done):
          with writer.as_default():
            self._write_images(step)
          writer.flush()
        if _crossed(prev, step, self.log_interval) or done or prev == start_step:
          wall = (time.time() - wall_start) / timed_steps if timed_steps else float("nan")
          logging.info("step %d/%d  %s  lr %.6g  %.3fs/step  %.1f img/s  eta %s", step,
                       self.total_steps, "  ".join(f"{k} {v:.4f}" for k, v in losses.items()),
                       lr, avg, images_per_second, _format_eta(wall * (self.total_steps - step)))
          if self.heartbeat is not None:
            self.heartbeat()
        on_signal = signals.received is not None and not self.multi_worker
        if _crossed(prev, step, self.checkpoint_interval) or done or on_signal:
          if safe:
            self._save(step)
          else:
            logging.warning("no checkpoint at step %d: %s; the last safe one is %s", step,
                            unsafe_reason, self._safe_checkpoint())
        if signals.received and not done:
          self._interrupted(signals.received, step, safe)
    finally:
      signals.restore()
      writer.close()
      if not self.chief:
        shutil.rmtree(self._save_dir, ignore_errors=True)
    return losses

  def _interrupted(self, signum, step, saved):
    """Raises `TrainingInterrupted` after a signal (the checkpoint was just written if safe)."""
    name = signal.Signals(signum).name
    path = self._safe_checkpoint()
    if saved and not self.multi_worker:
      what = f"the state after step {step} is saved in {path}"
    else:
      what = f"the last safe checkpoint is {path}" if path else "no checkpoint was saved"
    raise TrainingInterrupted(
        f"{name} at step {step}/{self.total_steps}: {what}; rerun the same command to resume",
        signum=signum, checkpoint=path)


class _SignalCatcher:
  """Catches SIGINT and SIGTERM (main thread only) until `restore`; `received` is the first."""

  def __init__(self):
    self.received = None
    self._previous = {}
    for signum in (signal.SIGINT, signal.SIGTERM):
      try:
        self._previous[signum] = signal.signal(signum, self._handle)
      except ValueError:  # not the main thread: signals stay as they are
        break

  def _handle(self, signum, frame):
    del frame
    if self.received is None:
      logging.warning("%s received: stopping after the current step",
                      signal.Signals(signum).name)
      self.received = signum

  def restore(self):
    for signum, handler in self._previous.items():
      signal.signal(signum, handler)
    self._previous = {}


def _all_finite(losses):
  """A bool scalar: every loss in the dict is finite."""
  return tf.reduce_all(tf.stack([tf.reduce_all(tf.math.is_finite(v)) for v in losses.values()]))


def _crossed(prev, step, interval):
  """Whether a multiple of `interval` lies in (prev, step]; never for interval <= 0."""
  return interval > 0 and step // interval > prev // interval


def _format_eta(seconds):
  if not math.isfinite(seconds):
    return "?"
  seconds = int(seconds)
  return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
