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


class CheckpointError(RuntimeError):
  """No checkpoint of a model_dir can be restored (the message names each and why)."""


def _first_line(error):
  text = str(error).strip()
  return text.splitlines()[0] if text else type(error).__name__


def training_checkpoints(model_dir):
  """The training checkpoints of `model_dir`, newest first (file prefixes).

  From the CheckpointManager's state file when it is there, else from the
  ``ckpt-<step>.index`` files themselves.
  """
  state = tf.train.get_checkpoint_state(model_dir)
  if state is not None and state.all_model_checkpoint_paths:
    paths = [p if os.path.isabs(p) else os.path.join(model_dir, p)
             for p in state.all_model_checkpoint_paths]
    return paths[::-1]
  steps = []
  for name in tf.io.gfile.listdir(model_dir) if tf.io.gfile.isdir(model_dir) else []:
    stem, ext = os.path.splitext(name)
    if ext == ".index" and stem.startswith("ckpt-") and stem[5:].isdigit():
      steps.append(int(stem[5:]))
  return [os.path.join(model_dir, f"ckpt-{s}") for s in sorted(steps, reverse=True)]


def restore_newest_readable(checkpoint, model_dir):
  """Restores the newest training checkpoint of `model_dir` that can be read.

  A checkpoint that cannot be read (truncated or empty files, a missing
  shard) is named in a warning with the reason, and the previous one is
  tried, so a run killed while it wrote resumes from the one before. A
  checkpoint that reads but does not fit the model (another configuration
  wrote it) is not skipped: that is an error.

  Returns:
    the restored checkpoint's path, or None when `model_dir` has none.

  Raises:
    CheckpointError: a checkpoint does not fit the model, or checkpoints
      exist but none can be read.
  """
  failures = []
  for path in training_checkpoints(model_dir):
    try:
      checkpoint.restore(path).assert_existing_objects_matched()
    except (ValueError, AssertionError) as e:
      raise CheckpointError(
          f"{path} does not fit the model ({_first_line(e)}): the configuration differs from "
          f"the one that wrote it (its config is in {model_dir}/config-<step>.gin); use "
          "another --model_dir, or the same configuration") from None
    except (tf.errors.OpError, IndexError, OSError) as e:  # IndexError: "Read less bytes"
      reason = _first_line(e)
      failures.append(f"{path}: {reason}")
      logging.warning("cannot restore %s (%s); trying the checkpoint before it", path, reason)
      continue
    if failures:
      logging.warning("resumed from %s instead of the newer, unreadable checkpoint(s): %s", path,
                      "; ".join(failures))
    return path
  if failures:
    raise CheckpointError(f"no checkpoint of {model_dir} can be restored: " + "; ".join(failures)
                          + ". Move the unreadable files aside (or use another --model_dir).")
  return None


def imagenet_parts(model):
  """What an ImageNet checkpoint initializes: {"backbone": ..., ["res5": ...]}.

  The backbone, and for a C4 R-CNN the res5 stage of its box head (Detectron
  starts C4's res5 head from the ImageNet res5 weights too): the head's
  ``res5_*`` layers that have weights, tracked by layer name.
  """
  parts = {"backbone": model.backbone}
  head = getattr(model, "box_head", None)
  res5 = [layer for layer in (head.layers if head is not None else ())
          if layer.name.startswith("res5_") and layer.weights]
  if res5:
    parts["res5"] = tf.train.Checkpoint(**{layer.name: layer for layer in res5})
  return parts


def init_backbone(model, path):
  """Loads only ``model.backbone``'s variables (and a C4 head's res5) from a checkpoint.

  Accepts a training checkpoint of this package (``model/backbone/...``) or a
  directory holding one (its latest), or an ImageNet checkpoint written as
  ``tf.train.Checkpoint(**imagenet_parts(model))`` (``backbone/...`` and, for
  C4 models, ``res5/...``: ``python -m tfdet.import_detectron --backbone_only``).
  Everything else in the file is ignored. A C4 model needs the res5 part of
  an ImageNet checkpoint (one written from a C4 config); from a training
  checkpoint it takes the backbone only.

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
    parts = imagenet_parts(model)
    if "res5" in parts and not any(n.startswith("res5/") for n in names):
      raise ValueError(f"{path} holds no res5 weights for this C4 model's box head: write the "
                       "ImageNet checkpoint from a C4 config (python -m tfdet.import_detectron "
                       "--backbone_only)")
    root = tf.train.Checkpoint(**parts)
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
