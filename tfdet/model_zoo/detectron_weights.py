"""Detectron's .pkl weight files (Caffe2) into tfdet checkpoints.

Three steps, each refusing bad input with a message that names the file,
blob or variable:

* `load_weights_file` unpickles a file with `tfdet.safe_pickle` (an
  allow-list: a pickle that names any other function is refused, nothing is
  imported or called). Detectron's trained models are ``{"blobs": {name:
  array}, "cfg": yaml}``; its ImageNet files are a plain ``{name: array}``.
* `convert` fills a built model's variables from the blobs. Which blob
  fills which variable is derived by rule from the model's layers
  (`detectron_blob_names`), how each is transposed by its layout
  (`detectron_layouts`). Every problem is collected before anything is
  assigned, and reported together: a blob the model needs that the file
  lacks (missing), a blob of the file that nothing maps (unknown, unless it
  is one of `IGNORED`, or a blob Detectron itself does not read), a blob of
  another shape than the variable's (both shapes named).
* `write_checkpoint` writes the model in the layout
  `tfdet.training.checkpoints` reads: a trained model as a training
  checkpoint ``ckpt-0`` (``tf.train.Checkpoint(model=..., step=...)``, no
  optimizer: `checkpoints.restore` and so evaluate, export and infer read
  it; it is not meant to resume training from), or with ``backbone_only`` an
  ImageNet backbone as ``tf.train.Checkpoint(**checkpoints.imagenet_parts(model))``
  (``backbone-0``: the backbone, and a C4 box head's res5), what ``train.run.init_checkpoint`` reads
  (`checkpoints.init_backbone`). The files go to a temporary folder beside
  the output, renamed to it at the end; an existing non-empty output is
  refused.

``backbone_only``: the trunk's blobs are required; other layers of
``model.backbone`` (the FPN, which ImageNet files do not have) take the
file's blobs when it has them and otherwise keep their initialization; the
blobs of the heads are ignored. A C4 model's res5 stage is its box head's, not
``model.backbone``'s; its ImageNet res5 blobs are required as well and written
as the checkpoint's ``res5`` part, which `checkpoints.init_backbone` reads into
a C4 model (Detectron starts C4's res5 head from ImageNet too).

Conventions that need no conversion (tfdet follows Detectron's):

* Inputs are BGR minus Detectron's pixel means, unscaled
  (`tfdet.data.transforms.normalize_image`'s defaults), so conv1's input
  channels keep their order (``python -m tfdet.import_detectron`` refuses a
  configuration that normalizes otherwise).
* Background is class 0 of ``cls_score`` (K + 1 logits), of ``bbox_pred``
  (class c's (dx, dy, dw, dh) at rows 4c..4c+3; 2 classes when
  class-agnostic) and of ``mask_fcn_logits`` (channel c is class c);
  keypoint heatmap j is keypoint j. RPN and RetinaNet outputs are
  anchor-major (channel a K + k) with Detectron's anchor order.
"""

import collections
import dataclasses
import os
import re
import shutil
import tempfile

import numpy as np
import tensorflow as tf

from tfdet import safe_pickle
from tfdet.model_zoo import detectron_blob_names as names
from tfdet.training import checkpoints


class DetectronWeightsError(ValueError):
  """A weight file does not fit the model (missing, unknown or misshapen blobs, named)."""


class OutputExistsError(FileExistsError):
  """The output folder already holds files."""


@dataclasses.dataclass(frozen=True)
class IgnoreRule:
  """Blobs a converter may skip: `pattern` (a regular expression) and why."""
  pattern: str
  reason: str

  def matches(self, blob):
    return re.fullmatch(self.pattern, blob) is not None


# Blobs of Detectron's files that no tfdet variable takes (besides the rule-derived unread
# conv biases and, with backbone_only, the heads' blobs).
IGNORED = (
    IgnoreRule(r".+_momentum", "Detectron's SGD momentum of a trained blob (training state; "
               "the checkpoint holds no optimizer)"),
    IgnoreRule(r"(fc1000|pred)_[wb]", "the ImageNet classifier of a pretraining file (no "
               "detector uses it)"),
    IgnoreRule(r".+_bn_(rm|riv)", "BatchNorm running statistics: Detectron's AffineChannel "
               "reads only _bn_s and _bn_b"),
)
NONE_BLOB = "None in the file (Detectron skips such blobs)"
OUTSIDE_BACKBONE = ("a blob of the {part} head (outside model.backbone: --backbone_only writes "
                    "the backbone only)")
KEPT_AT_INIT = "not in the file: kept at its initialization (--backbone_only)"
_LIST_LIMIT = 40


@dataclasses.dataclass
class Report:
  """What `convert` did.

  Attributes:
    source: the file (or a description of the blobs).
    converted: [(blob, variable, part)] assigned from the file.
    checked: [(blob, reason)] blobs of fixed computations, found equal.
    derived: [(variable, reason)] set without a blob.
    kept: [(variable, reason)] left as they were.
    ignored: {reason: [blob]} blobs of the file not used.
  """
  source: str
  converted: list = dataclasses.field(default_factory=list)
  checked: list = dataclasses.field(default_factory=list)
  derived: list = dataclasses.field(default_factory=list)
  kept: list = dataclasses.field(default_factory=list)
  ignored: dict = dataclasses.field(default_factory=dict)

  def summary(self):
    """A few lines: the count per part, then each group of checked / derived / kept /
    ignored names with its reason."""
    parts = collections.Counter(part for _, _, part in self.converted)
    lines = [f"{self.source}: converted {len(self.converted)} blobs ("
             + ", ".join(f"{p} {parts[p]}" for p in names.PARTS if parts[p]) + ")"]
    ignored = [(blob, reason) for reason, blobs in self.ignored.items() for blob in blobs]
    derived = [(v.path, reason) for v, reason in self.derived]
    kept = [(v.path, reason) for v, reason in self.kept]
    for title, what, pairs in (("checked", "blobs", self.checked),
                               ("derived", "variables", derived), ("kept", "variables", kept),
                               ("ignored", "blobs", ignored)):
      grouped = collections.defaultdict(list)
      for name, reason in pairs:
        grouped[reason].append(name)
      for reason, items in grouped.items():
        lines.append(f"{title} {len(items)} {what} ({reason}): {_names(items, 6)}")
    return "\n".join(lines)


def _names(items, limit=_LIST_LIMIT):
  items = list(items)
  text = ", ".join(items[:limit])
  return text + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")


def load_weights_file(path):
  """Reads a Detectron weight file.

  Returns:
    (blobs, cfg): {name: numpy array or None}, and the file's config yaml
    (str) or None.

  Raises:
    FileNotFoundError: no such file.
    safe_pickle.UnsafePickleError, safe_pickle.CorruptPickleError: not a
      plain data pickle.
    DetectronWeightsError: not a dict of blobs (the message names the file
      and the first offending key).
  """
  if not os.path.isfile(path):
    raise FileNotFoundError(f"no weight file {path}")
  data = safe_pickle.load(path)
  if not isinstance(data, dict):
    raise DetectronWeightsError(f"{path}: a Detectron weight file is a dict (of blobs, or with "
                                f"'blobs'), this one holds a {type(data).__name__}")
  cfg = data.get("cfg")
  blobs = data["blobs"] if "blobs" in data else {k: v for k, v in data.items() if k != "cfg"}
  if not isinstance(blobs, dict):
    raise DetectronWeightsError(f"{path}: 'blobs' is a {type(blobs).__name__}, not a dict")
  for name, value in blobs.items():
    if not isinstance(name, str):
      raise DetectronWeightsError(f"{path}: blob name {name!r} is not a string")
    if value is not None and not (isinstance(value, np.ndarray)
                                  and np.issubdtype(value.dtype, np.number)):
      raise DetectronWeightsError(f"{path}: blob {name} is a {type(value).__name__} "
                                  f"{getattr(value, 'dtype', '')}, not a numeric array")
  if isinstance(cfg, bytes):
    cfg = cfg.decode("latin-1")
  return blobs, cfg if isinstance(cfg, str) else None


def _in_scope(target, backbone_only):
  """'required', 'optional' or None (not written) for a target under the mode.

  With backbone_only the trunk is required, wherever it lives: a C4 model's
  res5 stage is its box head's, and an ImageNet checkpoint carries it too
  (`checkpoints.imagenet_parts`).
  """
  if not backbone_only or target.part == names.TRUNK:
    return "required"
  return "optional" if target.in_backbone else None


def _ignore_reason(blob, blob_map, outside):
  if blob in outside:
    return outside[blob]
  if blob in blob_map.unread_blobs:
    return blob_map.unread_blobs[blob]
  for rule in IGNORED:
    if rule.matches(blob):
      return rule.reason
  return None


def convert(model, blobs, *, backbone_only=False, source="<blobs>"):
  """Fills `model`'s variables from Detectron blobs (module docstring).

  Args:
    model: a built GeneralizedRCNN or RetinaNet (variables created, e.g. by
      `spec.DetectorSpec.build_model`).
    blobs: {name: numpy array in Caffe2's layout (or None)}.
    backbone_only: convert only ``model.backbone`` (ImageNet files).
    source: names the blobs in messages (the file's path).

  Returns:
    `Report`.

  Raises:
    DetectronWeightsError: missing, unknown or misshapen blobs, or a blob of
      a fixed computation with other values; nothing has been assigned.
    detectron_blob_names.UnsupportedModelError: the model has a weight no
      rule names.
  """
  blob_map = names.blob_map(model)
  targets, outside = {}, {}
  for target in blob_map.targets:
    scope = _in_scope(target, backbone_only)
    if scope is None:
      outside[target.blob] = OUTSIDE_BACKBONE.format(part=target.part)
    else:
      targets[target.blob] = (target, scope)
  fixed = {} if backbone_only else {f.blob: f for f in blob_map.fixed}
  if backbone_only:
    outside.update({f.blob: OUTSIDE_BACKBONE.format(part=f.part) for f in blob_map.fixed})

  report = Report(source=source)
  problems, unknown = [], []
  for blob, value in blobs.items():
    if blob in targets:
      if value is None:
        continue  # a required one is reported missing below
      target = targets[blob][0]
      expected = target.layout.caffe2_shape(target.variable.shape)
      if tuple(value.shape) != expected:
        problems.append(f"blob {blob} has shape {tuple(value.shape)} in the file, the model "
                        f"needs {expected} (tfdet {target.variable.path} "
                        f"{tuple(target.variable.shape)})")
    elif blob in fixed:
      if value is None:
        continue
      want = fixed[blob].value
      if tuple(value.shape) != want.shape:
        problems.append(f"blob {blob} has shape {tuple(value.shape)} in the file, the model "
                        f"needs {want.shape}")
      elif not np.allclose(value, want, rtol=1e-6, atol=1e-7):
        problems.append(f"blob {blob} differs from the fixed values tfdet computes with ("
                        f"{fixed[blob].reason}; max difference "
                        f"{float(np.max(np.abs(value - want))):.3g})")
      else:
        report.checked.append((blob, fixed[blob].reason))
    else:
      reason = NONE_BLOB if value is None else _ignore_reason(blob, blob_map, outside)
      if reason is None:
        unknown.append(blob)
      else:
        report.ignored.setdefault(reason, []).append(blob)
  missing = [b for b, (_, scope) in targets.items()
             if scope == "required" and blobs.get(b) is None]
  named = []
  if missing:
    named.append(f"{len(missing)} blobs the model needs are not in the file: {_names(missing)}")
  if unknown:
    named.append(f"{len(unknown)} blobs of the file map to no variable of the model: "
                 f"{_names(unknown)}")
  if len(problems) > _LIST_LIMIT:
    problems = problems[:_LIST_LIMIT] + [f"... and {len(problems) - _LIST_LIMIT} more blobs "
                                         "of other shapes"]
  problems = named + problems
  if problems:
    raise DetectronWeightsError(f"{source} does not fit the model:\n  " + "\n  ".join(problems))

  for blob, (target, _) in targets.items():
    value = blobs.get(blob)
    if value is None:
      report.kept.append((target.variable, KEPT_AT_INIT))
      continue
    target.variable.assign(target.layout.to_keras(value).astype(target.variable.dtype))
    report.converted.append((blob, target.variable, target.part))
  for item in blob_map.derived:
    if not backbone_only or item.in_backbone or item.part == names.TRUNK:
      item.variable.assign(item.value.astype(item.variable.dtype))
      report.derived.append((item.variable, item.reason))
  if not backbone_only:
    report.kept.extend(blob_map.kept)
  return report


def check_output(output_dir):
  """Refuses an output that is a file or a non-empty folder (OutputExistsError)."""
  if os.path.isdir(output_dir):
    if os.listdir(output_dir):
      raise OutputExistsError(f"--output {output_dir} exists and is not empty: nothing is "
                              "overwritten; give a new folder")
  elif os.path.exists(output_dir):
    raise OutputExistsError(f"--output {output_dir} exists and is not a folder")


def write_checkpoint(model, output_dir, *, backbone_only=False, files=None):
  """Writes the converted model (module docstring) into a new folder, atomically.

  Args:
    model: the model `convert` filled.
    output_dir: a folder that does not exist or is empty.
    backbone_only: write ``tf.train.Checkpoint(backbone=model.backbone)``
      (``backbone-0``) instead of the training layout (``ckpt-0``).
    files: optional {file name: text} written beside the checkpoint.

  Returns:
    the checkpoint's path (file prefix) under `output_dir`.
  """
  check_output(output_dir)
  output_dir = os.path.abspath(output_dir)
  parent = os.path.dirname(output_dir)
  os.makedirs(parent, exist_ok=True)
  temporary = tempfile.mkdtemp(prefix=f".{os.path.basename(output_dir)}.tmp-", dir=parent)
  umask = os.umask(0)
  os.umask(umask)
  try:
    os.chmod(temporary, 0o777 & ~umask)  # mkdtemp's folder is private; the output is not
    if backbone_only:
      checkpoint, name = tf.train.Checkpoint(**checkpoints.imagenet_parts(model)), "backbone"
    else:
      step = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step")
      checkpoint, name = tf.train.Checkpoint(model=model, step=step), "ckpt"
    manager = tf.train.CheckpointManager(checkpoint, temporary, max_to_keep=1,
                                         checkpoint_name=name)
    written = manager.save(checkpoint_number=0)
    for file_name, text in (files or {}).items():
      with open(os.path.join(temporary, file_name), "w") as f:
        f.write(text)
    check_output(output_dir)  # nothing appeared there meanwhile
    os.replace(temporary, output_dir)  # an empty folder is replaced as a whole
  except BaseException:
    shutil.rmtree(temporary, ignore_errors=True)
    raise
  return os.path.join(output_dir, os.path.basename(written))
