"""Training checkpoints: model, optimizer, step and (optionally) the input iterator.

Layout: ``tf.train.Checkpoint(model=..., optimizer=..., step=..[, iterator=..])``
managed by a `tf.train.CheckpointManager` in ``model_dir`` (``ckpt-<step>``),
keeping the last ``max_to_keep``. Rerunning with the same ``model_dir``
restores the latest one (resume).

Input iterators: a plain ``tf.data`` iterator is checkpointable (its state
holds every buffer of the pipeline -- with the training pipeline's
1024-record shuffle buffer about 1024 encoded images per checkpoint), but in
TF 2.21 the iterator of ``strategy.distribute_datasets_from_function``
(``input_lib.DistributedIterator``) is not a ``Trackable``: ``tf.train.Checkpoint``
refuses it. `make_checkpoint` takes an iterator when there is a trackable one;
the `Trainer` offers it (``checkpoint_iterator``) and otherwise warns. A resumed
run therefore starts a fresh input stream, as Detectron's did (its roidb
loader restarted too); the model, optimizer and step are exact.
"""

import os

import tensorflow as tf
from absl import logging


def make_checkpoint(*, model, optimizer, step, iterator=None):
  """The training `tf.train.Checkpoint` (objects must already be built)."""
  objects = {"model": model, "optimizer": optimizer, "step": step}
  if iterator is not None:
    objects["iterator"] = iterator
  return tf.train.Checkpoint(**objects)


def make_manager(checkpoint, directory, *, step_counter, max_to_keep=5):
  """`tf.train.CheckpointManager` writing ``directory/ckpt-<step>``."""
  return tf.train.CheckpointManager(checkpoint, directory, max_to_keep=max_to_keep,
                                    step_counter=step_counter, checkpoint_name="ckpt")


def restore_latest(manager):
  """Restores the manager's latest checkpoint; returns its path or None."""
  path = manager.latest_checkpoint
  if path:
    manager.checkpoint.restore(path).assert_existing_objects_matched()
    logging.info("restored %s", path)
  return path


def init_backbone(model, path):
  """Loads only ``model.backbone``'s variables from a checkpoint.

  Accepts a training checkpoint of this package (``model/backbone/...``) or a
  directory holding one (its latest), or a checkpoint written as
  ``tf.train.Checkpoint(backbone=...)`` (``backbone/...``, e.g. converted
  ImageNet weights). Everything else in the file is ignored.

  Returns:
    the path read.
  """
  if tf.io.gfile.isdir(path):
    latest = tf.train.latest_checkpoint(path)
    if latest is None:
      raise FileNotFoundError(f"no checkpoint in {path}")
    path = latest
  names = {name for name, _ in tf.train.list_variables(path)}
  if any(n.startswith("model/backbone/") for n in names):
    root = tf.train.Checkpoint(model=tf.train.Checkpoint(backbone=model.backbone))
  elif any(n.startswith("backbone/") for n in names):
    root = tf.train.Checkpoint(backbone=model.backbone)
  else:
    raise ValueError(f"{path} holds no backbone variables (model/backbone/ or backbone/)")
  status = root.read(path)
  status.expect_partial()
  status.assert_existing_objects_matched()
  logging.info("initialized the backbone from %s", path)
  return path


def temporary_dir_for_worker(model_dir, task_type, task_id):
  """Where a multi-worker non-chief writes (its copy is deleted afterwards)."""
  return os.path.join(model_dir, "workers_tmp", f"{task_type}_{task_id}")
