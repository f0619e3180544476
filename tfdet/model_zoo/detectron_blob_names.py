"""Detectron's blob name of every weight of a built tfdet model, derived by rule.

`blob_map` walks the model's parts (the backbone, the RPN head, the box,
mask and keypoint heads, RetinaNet's head) layer by layer and names each
weight as Detectron's model-building code names the blob of the same
computation. tfdet's layers are named after Detectron's blob prefixes where
the two agree, and the rules below add what differs (FPN's stage-block names,
the level suffix of heads shared across levels, the mask head's scope):

* Trunk (ResNet/ResNeXt, and C4's res5 box head): the layer names are
  Detectron's. Convs ``conv1``, ``res{s}_{b}_branch1``,
  ``res{s}_{b}_branch2{a,b,c}`` have a weight ``<name>_w`` and no bias;
  Detectron's AffineChannel after each, ``res_conv1_bn`` and
  ``<conv>_bn``, has ``_bn_s`` (scale) and ``_bn_b`` (bias).
* FPN: Detectron names a level after the last block of its stage
  (``res4_5_sum`` in R-50, ``res4_22_sum`` in R-101; taken here from the
  built trunk). The coarsest lateral is ``fpn_inner_res5_{last}_sum``, the
  others ``fpn_inner_res{s}_{last}_sum_lateral``; the 3x3 outputs are
  ``fpn_res{s}_{last}_sum``; RetinaNet's P6 and P7 convs are ``fpn_6`` and
  ``fpn_7``. (P6 of the R-CNN FPN is a max-pool: no weights.)
* RPN: ``conv_rpn``, ``rpn_cls_logits``, ``rpn_bbox_pred``. With FPN,
  Detectron creates them on the lowest level with the suffix ``_fpn2`` and
  the other levels share those blobs (there are no ``_fpn3``.. blobs), as
  tfdet shares one head.
* Box head: ``fc6``, ``fc7`` (FPN) or the res5 stage (C4), then
  ``cls_score`` and ``bbox_pred``.
* Mask head: ``_[mask]_fcn{i}`` (FPN), ``conv5_mask`` (the deconv; C4 on the
  res5 output), ``mask_fcn_logits``.
* Keypoint head: ``conv_fcn{i}``, ``kps_score_lowres`` (the deconv), and
  ``kps_score``, Detectron's bilinear x2 upsampling: a ConvTranspose whose
  blobs are saved but never trained, which tfdet computes with a fixed kernel
  (`tfdet.layers.upsampling`); its blobs, when in a file, must equal it.
* RetinaNet: ``retnet_{cls,bbox}_conv_n{i}``, ``retnet_cls_pred``,
  ``retnet_bbox_pred``, suffixed with the lowest level (``_fpn3``) and
  shared by every level, as the RPN's.

Weights per layer: Conv2D ``_w`` (and ``_b`` with a bias; a conv without
one is a trunk conv, whose ``_b`` blob, which Caffe's converter adds as
zeros, Detectron never reads), Conv2DTranspose ``_w`` and ``_b``, Dense ``_w``
and ``_b``, AffineChannel ``_s`` (scale) and ``_b`` (bias). A trainable
BatchNormalization (norm "bn"/"sync_bn") takes ``_s`` as gamma and ``_b``
as beta, with moving mean 0 and moving variance 1 - epsilon, so that its
inference computes Detectron's ``x * s + b``. A layer with weights that no
rule names (GroupNorm, a head Detectron does not have) is refused, naming it.
"""

import collections
import dataclasses
import re
from typing import NamedTuple

import keras
import numpy as np

from tfdet.layers.normalization import AffineChannel
from tfdet.layers.upsampling import BilinearUpsampling, bilinear_filter
from tfdet.model_zoo import detectron_layouts as layouts

TRUNK = "trunk"
FPN = "fpn"
RPN = "rpn"
BOX = "box"
MASK = "mask"
KEYPOINT = "keypoint"
RETINANET = "retinanet"
PARTS = (TRUNK, FPN, RPN, BOX, MASK, KEYPOINT, RETINANET)

_TRUNK_LAYER = re.compile(r"^(conv1|res_conv1_bn|res[2-5]_\d+_branch(1|2[abc])(_bn)?)$")
_STAGE_SUM = re.compile(r"^(res[2-5])_(\d+)_sum$")
_FPN_LATERAL = re.compile(r"^fpn_inner_(res[2-5])_lateral$")
_FPN_OUTPUT = re.compile(r"^fpn_(res[2-5])$")
_FPN_EXTRA = re.compile(r"^fpn_([6-9])$")
_RPN_LAYER = re.compile(r"^(conv_rpn|rpn_cls_logits|rpn_bbox_pred)$")
_BOX_LAYER = re.compile(r"^(fc6|fc7|cls_score|bbox_pred)$")
_MASK_FCN = re.compile(r"^mask_fcn(\d+)$")
_MASK_LAYER = re.compile(r"^(conv5_mask|mask_fcn_logits)$")
_KEYPOINT_LAYER = re.compile(r"^(conv_fcn\d+|kps_score_lowres|kps_score)$")
_RETINANET_LAYER = re.compile(r"^retnet_(cls|bbox)_(conv_n\d+|pred)$")
_LEVEL = re.compile(r"^p(\d)$")


class UnsupportedModelError(ValueError):
  """The model has a weight no rule gives a Detectron name (the message names it)."""


@dataclasses.dataclass(frozen=True)
class Target:
  """A tfdet variable filled from one Detectron blob.

  Attributes:
    blob: Detectron's blob name.
    variable: the keras.Variable.
    layout: its `detectron_layouts.Layout`.
    part: one of `PARTS`.
    in_backbone: the variable belongs to ``model.backbone``.
    layer: the tfdet layer's name (for messages).
  """
  blob: str
  variable: object
  layout: layouts.Layout
  part: str
  in_backbone: bool
  layer: str


@dataclasses.dataclass(frozen=True)
class Derived:
  """A tfdet variable with no blob of its own, set to `value` (`reason` says why)."""
  variable: object
  value: np.ndarray
  reason: str
  part: str
  in_backbone: bool


@dataclasses.dataclass(frozen=True)
class FixedBlob:
  """A Detectron blob of a computation tfdet hard-codes: if a file has it, it must be `value`."""
  blob: str
  value: np.ndarray
  reason: str
  part: str


class BlobMap(NamedTuple):
  """What `blob_map` finds.

  Attributes:
    targets: [Target], one per blob-filled variable.
    derived: [Derived] (BatchNorm statistics).
    fixed: [FixedBlob] (the keypoint head's bilinear upsampling).
    unread_blobs: {blob name: reason}, blobs of this model that Detectron
      itself never reads (the biases of bias-free trunk convs).
    kept: [(variable, reason)], variables no Detectron file holds, left as
      they are (RetinaNet's running foreground count).
  """
  targets: list
  derived: list
  fixed: list
  unread_blobs: dict
  kept: list


UNREAD_CONV_BIAS = ("bias of a conv Detectron builds without one: Caffe's converter gave "
                    "every conv of the ImageNet models a zero bias, and Detectron never reads it")
BN_STATISTICS = ("Detectron's AffineChannel has no statistics: mean 0 and variance "
                 "1 - epsilon make this BatchNormalization's inference x * s + b")


def _last_blocks(backbone):
  """{stage: index of its last block} from the trunk's ``res{s}_{b}_sum`` layers."""
  last = {}
  for layer in backbone.layers:
    match = _STAGE_SUM.match(layer.name)
    if match:
      stage, block = match.group(1), int(match.group(2))
      last[stage] = max(last.get(stage, 0), block)
  return last


def _backbone_namer(backbone):
  """layer name -> (part, Detectron prefix) or None, for the trunk and FPN layers."""
  last = _last_blocks(backbone)
  laterals = [m.group(1) for m in (_FPN_LATERAL.match(x.name) for x in backbone.layers) if m]
  top = max(laterals) if laterals else None

  def stage_sum(stage):
    if stage not in last:
      raise UnsupportedModelError(f"the FPN reads {stage}, which the trunk does not build")
    return f"{stage}_{last[stage]}_sum"

  def name(layer_name):
    if _TRUNK_LAYER.match(layer_name):
      return TRUNK, layer_name
    match = _FPN_LATERAL.match(layer_name)
    if match:
      stage = match.group(1)
      return FPN, f"fpn_inner_{stage_sum(stage)}" + ("" if stage == top else "_lateral")
    match = _FPN_OUTPUT.match(layer_name)
    if match:
      return FPN, f"fpn_{stage_sum(match.group(1))}"
    match = _FPN_EXTRA.match(layer_name)
    if match:
      return FPN, f"fpn_{match.group(1)}"
    return None

  return name


def _level_suffix(levels):
  """``_fpn<lowest level>`` for heads shared over pyramid levels ("p2".."p6"), else ""."""
  numbers = [int(m.group(1)) for m in (_LEVEL.match(str(level)) for level in levels) if m]
  return f"_fpn{min(numbers)}" if numbers else ""


def _same(match):
  return match.group(0)


def _head_namer(part, rules):
  """layer name -> (part, Detectron prefix) by the first matching rule.

  A rule is (pattern, rename) or (pattern, rename, part): the trunk layers of
  C4's box head (its res5 stage) are part of the trunk, as ImageNet files have
  them.
  """
  def name(layer_name):
    for pattern, rename, *own_part in rules:
      match = pattern.match(layer_name)
      if match:
        return (own_part[0] if own_part else part), rename(match)
    return None
  return name


def _flattened_input(layer):
  """(H, W, C) when a Dense reads a Flatten of an [H, W, C] map, else None."""
  history = getattr(layer.input, "_keras_history", None)
  source = history.operation if history is not None else None
  if isinstance(source, keras.layers.Flatten):
    shape = tuple(source.input.shape[1:])
    if len(shape) == 3:
      return tuple(int(d) for d in shape)
  return None


class _Walker:
  """Collects a `BlobMap` over the parts of one model."""

  def __init__(self):
    self.targets, self.derived, self.fixed, self.kept = [], [], [], []
    self.unread = {}

  def _target(self, blob, variable, kind, part, in_backbone, layer, feature_shape=None):
    self.targets.append(Target(blob, variable, layouts.Layout(kind, feature_shape), part,
                               in_backbone, layer.name))

  def walk(self, model, namer, *, what, in_backbone):
    for layer in model.layers:
      fixed = isinstance(layer, BilinearUpsampling)
      if not (layer.weights or fixed):
        continue
      named = namer(layer.name)
      if named is None:
        raise UnsupportedModelError(
            f"layer {layer.name!r} ({type(layer).__name__}) of the {what} has no Detectron blob "
            "name (no rule of tfdet.model_zoo.detectron_blob_names names it)")
      part, prefix = named
      if fixed:
        self._bilinear(layer, prefix, part)
      else:
        self._layer(layer, prefix, part, in_backbone)

  def _layer(self, layer, prefix, part, in_backbone):
    args = (part, in_backbone, layer)
    before = len(self.targets), len(self.derived)
    if isinstance(layer, keras.layers.Conv2DTranspose):
      self._target(prefix + "_w", layer.kernel, layouts.DECONV, *args)
      self._target(prefix + "_b", layer.bias, layouts.VECTOR, *args)
    elif isinstance(layer, keras.layers.Conv2D):
      self._target(prefix + "_w", layer.kernel, layouts.CONV, *args)
      if layer.use_bias:
        self._target(prefix + "_b", layer.bias, layouts.VECTOR, *args)
      else:
        self.unread[prefix + "_b"] = UNREAD_CONV_BIAS
    elif isinstance(layer, keras.layers.Dense):
      shape = _flattened_input(layer)
      kind = layouts.FC if shape is None else layouts.FLATTEN_FC
      self._target(prefix + "_w", layer.kernel, kind, *args, feature_shape=shape)
      self._target(prefix + "_b", layer.bias, layouts.VECTOR, *args)
    elif isinstance(layer, AffineChannel):
      self._target(prefix + "_s", layer.scale, layouts.VECTOR, *args)
      self._target(prefix + "_b", layer.bias, layouts.VECTOR, *args)
    elif type(layer) is keras.layers.BatchNormalization:
      self._target(prefix + "_s", layer.gamma, layouts.VECTOR, *args)
      self._target(prefix + "_b", layer.beta, layouts.VECTOR, *args)
      channels = tuple(layer.moving_mean.shape)
      self.derived.append(Derived(layer.moving_mean, np.zeros(channels, np.float32),
                                  BN_STATISTICS, part, in_backbone))
      self.derived.append(Derived(
          layer.moving_variance, np.full(channels, 1.0 - layer.epsilon, np.float32),
          BN_STATISTICS, part, in_backbone))
    else:
      raise UnsupportedModelError(
          f"layer {layer.name!r} is a {type(layer).__name__}: Detectron's {prefix} has no "
          "weights of that kind (supported: Conv2D, Conv2DTranspose, Dense, AffineChannel, "
          "BatchNormalization)")
    covered = {id(t.variable) for t in self.targets[before[0]:]}
    covered |= {id(d.variable) for d in self.derived[before[1]:]}
    if covered != {id(w) for w in layer.weights}:
      raise UnsupportedModelError(f"layer {layer.name!r} has weights the converter does not "
                                  f"know: {[w.path for w in layer.weights]}")

  def _bilinear(self, layer, prefix, part):
    """Detectron's BilinearInterpolation blobs: the filter on each channel's diagonal, no bias."""
    channels = int(layer.input.shape[-1])
    size = 2 * layer.scale
    kernel = np.zeros((channels, channels, size, size), np.float32)
    kernel[range(channels), range(channels)] = bilinear_filter(size)
    reason = ("Detectron's bilinear upsampling (a ConvTranspose it never trains); tfdet's "
              f"{layer.name!r} layer computes it with this fixed kernel")
    self.fixed.append(FixedBlob(prefix + "_w", kernel, reason, part))
    self.fixed.append(FixedBlob(prefix + "_b", np.zeros(channels, np.float32), reason, part))


def _parts(model):
  """[(sub-model, namer, description, in_backbone)] of a GeneralizedRCNN or RetinaNet."""
  backbone = getattr(model, "backbone", None)
  if backbone is None:
    raise UnsupportedModelError(f"{type(model).__name__} has no backbone: not a tfdet detector")
  parts = [(backbone, _backbone_namer(backbone), "backbone", True)]
  rpn = getattr(model, "rpn_head", None)
  if rpn is not None:
    suffix = _level_suffix(model.rpn_levels)
    parts.append((rpn, _head_namer(RPN, [(_RPN_LAYER, lambda m: m.group(0) + suffix)]),
                  "RPN head", False))
  heads = (("box_head", BOX, [(_TRUNK_LAYER, _same, TRUNK), (_BOX_LAYER, _same)]),
           ("mask_head", MASK, [(_MASK_FCN, lambda m: f"_[mask]_fcn{m.group(1)}"),
                                (_MASK_LAYER, _same)]),
           ("keypoint_head", KEYPOINT, [(_KEYPOINT_LAYER, _same)]))
  for attr, part, rules in heads:
    head = getattr(model, attr, None)
    if head is not None:
      parts.append((head, _head_namer(part, rules), attr.replace("_", " "), False))
  head = getattr(model, "head", None)
  if head is not None and hasattr(model, "levels"):
    suffix = _level_suffix(model.levels)
    parts.append((head, _head_namer(RETINANET, [(_RETINANET_LAYER,
                                                 lambda m: m.group(0) + suffix)]),
                  "RetinaNet head", False))
  return parts


def blob_map(model):
  """The `BlobMap` of a built GeneralizedRCNN or RetinaNet (variables created).

  Every variable of the model is in exactly one of targets, derived and kept.

  Raises:
    UnsupportedModelError: a layer with weights that no rule names, a part
      the converter does not know, or a variable outside every part.
  """
  walker = _Walker()
  for sub_model, namer, what, in_backbone in _parts(model):
    walker.walk(sub_model, namer, what=what, in_backbone=in_backbone)
  covered = {id(t.variable) for t in walker.targets} | {id(d.variable) for d in walker.derived}
  for variable in model.variables:
    if id(variable) in covered:
      continue
    if variable.path.endswith("loss_normalizer"):
      walker.kept.append((variable, "detectron2's running foreground count (a training "
                                    "statistic Detectron does not have): kept as built"))
      continue
    raise UnsupportedModelError(
        f"variable {variable.path} belongs to no part the converter knows (backbone, RPN, "
        "box, mask, keypoint or RetinaNet head)")
  counts = collections.Counter([t.blob for t in walker.targets] + [f.blob for f in walker.fixed])
  duplicates = sorted(b for b, n in counts.items() if n > 1)
  if duplicates:
    raise UnsupportedModelError(f"two weights of the model map to the same blobs {duplicates}")
  return BlobMap(walker.targets, walker.derived, walker.fixed, walker.unread, walker.kept)
