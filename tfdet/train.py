r"""Trains a model of the zoo: ``python -m tfdet.train --gin_file=F ... --model_dir=DIR``.

Example (a tiny model on the synthetic data set)::

  python -m tfdet.train --gin_file=models/mask_rcnn_fpn.gin \
      --gin_file=training/detectron_solver.gin \
      --gin_param='train/inputs.build_input.file_pattern = "/data/train-*"' \
      --model_dir=/tmp/run

Gin binds `run` (solver, batch, strategy, intervals), the model config's
`spec.DetectorSpec` (the functions that build the detector and compute its
losses, whatever the family) and ``train/inputs.build_input`` (the input
pipeline). The
configuration is parsed and checked before anything is built: a bad binding
fails at once, naming it. The global batch is ``images_per_replica x
replicas`` unless ``global_batch_size`` is set; when it differs from the
solver's reference batch (16) the linear scaling rule
(`schedules.scale_solver`) adjusts the LR and the iteration counts.

The input's ``seed`` and ``deterministic`` are bound on `run`, which passes
them to the input function: a resumed run reads a new stream seeded from
(seed, the step it resumes at), see `loop.Trainer`. With
``image_summary_interval > 0`` TensorBoard also shows the model's detections
on a few fixed images (``predictions/<i>``).

Nothing is lost and nothing is written before the configuration is checked:
gin's own errors, the types of every bound argument (`gin_files.check_types`)
and the step counts are checked first, each error naming its binding; the
run then takes ``model_dir/train.lock`` (`run_lock`: a second run into the
same model_dir is refused, naming the first), restores the newest readable
checkpoint (an unreadable one is named and skipped; one that does not fit the
model is an error), and only then writes ``config-<start step>.gin`` and
``config.gin``. Checkpoints are written only after healthy steps (finite
losses within `loss_explosion_factor` of their running median); SIGINT and
SIGTERM end the run after the current step with a checkpoint of it. Exit
codes: 0 done, 1 a named error (bad configuration, locked model_dir,
unusable checkpoint, non-finite or exploding loss), 128 + the signal's number
after SIGINT / SIGTERM.
"""

import os
import sys

from tfdet import console

if __name__ == "__main__":  # before TensorFlow is imported
  console.hide_tf_cpp_logs()

import gin
from absl import app, flags, logging

from tfdet import gin_files
from tfdet.evaluation import runner
from tfdet.modeling.losses import TOTAL_LOSS
from tfdet.training import checkpoints, inputs, loop, run_lock, schedules, summaries
from tfdet.training import optimizer as opt_lib

FLAGS = flags.FLAGS
CONFIG_FILE = "config.gin"


def run(*, model_dir, base_lr=0.02, max_iter=90000, lr_steps=(60000, 80000), gamma=0.1,
        warmup_iters=500, warmup_factor=1.0 / 3.0, reference_batch_size=16,
        images_per_replica=2, global_batch_size=None, linear_scaling=True, momentum=0.9,
        weight_decay=1e-4, weight_decay_norm=0.0, bias_lr_factor=2.0, bias_weight_decay=0.0,
        clipnorm=None, mixed_precision=None, strategy="auto", seed=None, deterministic=False,
        steps_per_loop=1, checkpoint_interval=2000, max_to_keep=5, summary_interval=20,
        log_interval=20, image_summary_interval=0, num_summary_images=2,
        summary_score_threshold=0.5, summary_input=None, label_map=None, init_checkpoint=None,
        train_input=inputs.build_input, model_fn, loss_fn, distributed_input="auto",
        loss_explosion_factor=10.0, loss_explosion_patience=20, config_text=None):
  """Builds everything from plain arguments (gin binds them) and trains.

  Args:
    model_dir: checkpoints and summaries.
    base_lr, max_iter, lr_steps, gamma, warmup_iters, warmup_factor: the
      solver at `reference_batch_size` images per step (`schedules.Solver`).
    images_per_replica: images per replica when `global_batch_size` is None.
    global_batch_size: None or the images per step over all replicas.
    linear_scaling: rescale the solver to the global batch (`schedules.scale_solver`).
    momentum ... clipnorm: `optimizer.DetectronSGD`.
    mixed_precision: None, "float16" (loss scaling) or "bfloat16".
    strategy: `loop.make_strategy` name.
    seed: None or the input pipeline's base seed; a resumed run uses a seed
      derived from (seed, its start step), see `loop.Trainer`.
    deterministic: a deterministic input pipeline (`pipeline.build_dataset`);
      with `seed` None the base seed is then 0. Both are passed to
      `train_input`: bind them here, not on the input function.
    steps_per_loop, checkpoint_interval, max_to_keep, summary_interval,
      log_interval, image_summary_interval, init_checkpoint: `loop.Trainer`.
    num_summary_images: images in the prediction summaries.
    summary_score_threshold: detections drawn in them score at least this.
    summary_input: None, or (input_context, batch_size=...) -> dataset of the
      images the prediction summaries show, e.g. ``@summary/inputs.build_input``
      with ``mode = "eval"`` and a validation file pattern; None: the first
      images of the training input.
    label_map: None or a label_map.json (class names in the image summaries).
    train_input: (input_context, batch_size=..., seed=..., deterministic=...)
      -> dataset, e.g. ``@train/inputs.build_input``.
    model_fn: () -> model (the config's `DetectorSpec.build`).
    loss_fn: (model, outputs, batch) -> dict of losses with `TOTAL_LOSS` (the
      config's `DetectorSpec.loss`).
    distributed_input: `loop.Trainer`'s ("auto": a plain tf.data input when
      there is one replica in one process; "always").
    loss_explosion_factor, loss_explosion_patience: checkpoints are written
      only after steps whose total loss is within this factor of the running
      median; this many unsafe checks in a row stop the run (`loop.Trainer`).
    config_text: None, or the run's configuration (gin.config_str()), written
      as ``config-<start step>.gin`` and ``config.gin`` once the run holds the
      model_dir and its checkpoint restored (a run that fails before keeps
      the configs of the runs before it).

  Returns:
    the last step's losses.
  """
  _check_input_bindings()
  _check_counts(max_iter=max_iter, checkpoint_interval=checkpoint_interval,
                log_interval=log_interval, summary_interval=summary_interval,
                images_per_replica=images_per_replica, steps_per_loop=steps_per_loop)
  opt_lib.set_mixed_precision(mixed_precision)
  dist = loop.make_strategy(strategy)
  replicas = dist.num_replicas_in_sync
  global_batch = global_batch_size or images_per_replica * replicas
  if global_batch % replicas:
    raise ValueError(f"global batch {global_batch} is not divisible by {replicas} replicas")
  solver = schedules.Solver(base_lr=base_lr, max_iter=max_iter, steps=tuple(lr_steps),
                            gamma=gamma, warmup_iters=warmup_iters,
                            warmup_factor=warmup_factor, batch_size=reference_batch_size)
  if linear_scaling:
    solver = schedules.scale_solver(solver, global_batch)
  logging.info("%d replicas, global batch %d, solver %s", replicas, global_batch, solver)
  schedule = schedules.WarmupStepDecay.from_solver(solver)

  if deterministic and seed is None:
    seed = 0  # build_dataset's rule, made explicit so that resumed runs derive from it

  def dataset_fn(ctx, input_seed):
    return train_input(ctx, batch_size=ctx.get_per_replica_batch_size(global_batch),
                       seed=input_seed, deterministic=deterministic)

  def image_dataset_fn(input_seed):
    if summary_input is not None:
      return summary_input(None, batch_size=num_summary_images)
    return train_input(None, batch_size=num_summary_images, seed=input_seed,
                       deterministic=deterministic)

  def batch_losses(model, batch):
    return loss_fn(model, model(batch, training=True), batch)

  def optimizer_fn():
    return opt_lib.build_optimizer(
        schedule, momentum=momentum, weight_decay=weight_decay,
        weight_decay_norm=weight_decay_norm, bias_lr_factor=bias_lr_factor,
        bias_weight_decay=bias_weight_decay, clipnorm=clipnorm,
        mixed_precision=mixed_precision)

  class_names = runner.load_label_map(label_map)[1] if label_map else None
  # One writer per model_dir (the chief; other workers write to temporary folders).
  lock = run_lock.RunLock(model_dir) if loop.is_chief(dist) else None
  if lock is not None:
    lock.acquire()
  try:
    trainer = loop.Trainer(
        model_fn=model_fn, loss_fn=batch_losses, dataset_fn=dataset_fn,
        optimizer_fn=optimizer_fn, model_dir=model_dir, total_steps=solver.max_iter,
        global_batch_size=global_batch, strategy=dist, seed=seed, steps_per_loop=steps_per_loop,
        checkpoint_interval=checkpoint_interval, max_to_keep=max_to_keep,
        summary_interval=summary_interval, log_interval=log_interval,
        image_summary_interval=image_summary_interval,
        image_summary_fn=summaries.PredictionImages(
            num_images=num_summary_images, class_names=class_names,
            score_threshold=summary_score_threshold),
        image_summary_dataset_fn=image_dataset_fn, init_checkpoint=init_checkpoint,
        total_loss_key=TOTAL_LOSS, distributed_input=distributed_input,
        loss_explosion_factor=loss_explosion_factor,
        loss_explosion_patience=loss_explosion_patience,
        heartbeat=lock.refresh if lock is not None else None)
    if lock is not None and config_text is not None:
      write_config(model_dir, config_text, trainer.start_step)
    return trainer.train()
  finally:
    if lock is not None:
      lock.release()


def write_config(model_dir, config_text, start_step):
  """Writes the run's config as ``config-<start_step>.gin`` and ``config.gin`` (atomically).

  Each run keeps its own; ``config.gin`` is the newest run's.
  """
  for name in (f"config-{start_step}.gin", CONFIG_FILE):
    path = os.path.join(model_dir, name)
    with open(path + ".tmp", "w") as f:
      f.write(config_text)
    os.replace(path + ".tmp", path)


_COUNTS = ("max_iter", "checkpoint_interval", "log_interval", "summary_interval",
           "images_per_replica", "steps_per_loop")


def _check_counts(**values):
  """Refuses non-positive step counts and intervals, naming the train.run binding."""
  for name, value in values.items():
    if int(value) < 1:
      raise ValueError(f"train.run.{name} must be at least 1, got {value}")


def _check_input_bindings():
  """Refuses seed/deterministic bound on the shipped input function (run passes its own)."""
  for param in ("seed", "deterministic"):
    try:
      gin.query_parameter(f"train/inputs.build_input.{param}")
    except ValueError:
      continue  # not bound
    raise ValueError(
        f"train/inputs.build_input.{param} is bound: bind train.run.{param} instead (run "
        "passes seed and deterministic to the input function and derives a resumed run's "
        "seed from them)")


def define_flags():
  flags.DEFINE_multi_string("gin_file", [], "Gin files (paths or relative to gin_configs/).")
  flags.DEFINE_multi_string("gin_param", [], "Gin bindings, e.g. 'run.max_iter = 10'.")
  flags.DEFINE_string("model_dir", None, "Checkpoints and summaries.", required=True)
  console.define_flags()


def check_config(run_fn, detector):
  """Checks what gin binds before any work: types of the entry point's, the model's, the
  input's and the settings' arguments (`gin_files.check_types`) and the input bindings."""
  from tfdet.data import pipeline
  from tfdet.modeling.detectors import config

  gin_files.check_types(run_fn, detector.build, (inputs.build_input, "train"),
                        (pipeline.build_dataset, "eval"), config.RpnSettings,
                        config.RoiHeadSettings, config.RetinaNetSettings)
  _check_input_bindings()
  bound = gin_files.bindings(run_fn)
  _check_counts(**{name: bound[name] for name in _COUNTS if name in bound})


def main(argv):
  del argv
  # `python -m tfdet.train` runs this file as __main__; the gin files import
  # `tfdet.train`, so bind and call that module's `run`.
  from tfdet import train as train_module
  console.configure(FLAGS.tf_logs)
  try:  # the whole configuration is checked before anything is built or written
    gin_files.parse(FLAGS.gin_file, FLAGS.gin_param)
    detector = gin_files.detector_spec()
    check_config(train_module.run, detector)
  except (ValueError, FileNotFoundError, NameError) as e:
    logging.error("bad configuration: %s", e)
    return 1
  try:
    gin.get_configurable(train_module.run)(model_dir=FLAGS.model_dir, model_fn=detector.build,
                                           loss_fn=detector.loss, config_text=gin.config_str())
  except loop.TrainingInterrupted as e:
    logging.warning("%s", e)
    return 128 + e.signum
  except (run_lock.ModelDirLockedError, checkpoints.CheckpointError, loop.NonFiniteLossError,
          loop.LossExplosionError) as e:
    logging.error("%s: %s", type(e).__name__, e)
    return 1
  return 0


if __name__ == "__main__":
  define_flags()
  sys.exit(app.run(main))
