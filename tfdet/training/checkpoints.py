"""Training checkpoints: model, optimizer and step; the input seed of a resumed run.

Layout: ``tf.train.Checkpoint(model=..., optimizer=..., step=...)`` managed by
a `tf.train.CheckpointManager` in ``model_dir`` (``ckpt-<step>``), keeping the
last ``max_to_keep``. Rerunning with the same ``model_dir`` restores the
latest one (resume): the model, optimizer and step are exact.

The input position is not saved. In TF 2.21 the iterator of
``strategy.distribute_datasets_from_function`` (``input_lib.DistributedIterator``)
is not a ``Trackable``, and a plain ``tf.data`` iterator's state would hold
every buffer of the pipeline (the training shuffle buffer alone is about a
thousand encoded images). A resumed run starts a new input stream instead
(detectron2 does not save its data loader's position either), and makes the
choice explicit: the stream's seed is `input_seed` (base seed, start step),
so it does not replay the images the original run started with, and with a
deterministic pipeline it is a pure function of (base seed, start step).
"""

import hashlib
import os

import tensorflow as tf
from absl import logging


def make_checkpoint(*, model, optimizer, step):
  """The training `tf.train.Checkpoint` (objects must already be built)."""
  return tf.train.Checkpoint(model=model, optimizer=optimizer, step=step)


def input_seed(base_seed, start_step):
  """The input pipeline's seed for a run that starts (or resumes) at `start_step`.

  Args:
    base_seed: None (an unseeded, random input stream) or an int.
    start_step: the step the run starts at (0: a fresh run).

  Returns:
    None when `base_seed` is None; `base_seed` itself at step 0 (a fresh run
    reads the input as configured); otherwise a 31-bit integer hashed from
    (base_seed, start_step) (SHA-256, the same in every process and on every
    worker).
  """
  if base_seed is None:
    return None
  if int(start_step) == 0:
    return int(base_seed)
  digest = hashlib.sha256(f"tfdet-input:{int(base_seed)}:{int(start_step)}".encode()).digest()
  return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


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


def checkpoint_path(model_dir, checkpoint=None):
  """The checkpoint to restore: `checkpoint` if given, else the latest under model_dir."""
  path = checkpoint or tf.train.latest_checkpoint(model_dir)
  if not path:
    raise FileNotFoundError(f"no checkpoint under {model_dir}")
  return path


def restore(model, path):
  """Restores a built model's weights from a training checkpoint (model=... in it).

  Returns:
    the checkpoint's global step (its ``step=...`` object), or 0 if it has none.
  """
  tf.train.Checkpoint(model=model).restore(path).expect_partial()
  reader = tf.train.load_checkpoint(path)
  key = "step/.ATTRIBUTES/VARIABLE_VALUE"
  return int(reader.get_tensor(key)) if reader.has_tensor(key) else 0


def load_for_inference(spec, model_dir, checkpoint=None, **overrides):
  """Builds the detector a `DetectorSpec` names and restores a training checkpoint into it.

  What evaluate, export, infer and the quickstart all do: build (with
  ``overrides``, e.g. ``implementation="reference"``), create the variables
  with one inference on a dummy batch, restore.

  Args:
    spec: `tfdet.modeling.detectors.spec.DetectorSpec`.
    model_dir: the training directory.
    checkpoint: a checkpoint path, or None for the latest in model_dir.

  Returns:
    (model, step, path): the restored model, the checkpoint's step, its path.
  """
  path = checkpoint_path(model_dir, checkpoint)
  model = spec.build_model(**overrides)
  step = restore(model, path)
  logging.info("restored %s (step %d)", path, step)
  return model, step, path


def temporary_dir_for_worker(model_dir, task_type, task_id):
  """Where a multi-worker non-chief writes (its copy is deleted afterwards)."""
  return os.path.join(model_dir, "workers_tmp", f"{task_type}_{task_id}")
