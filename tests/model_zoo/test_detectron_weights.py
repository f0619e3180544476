"""Detectron .pkl weights into tfdet models (`tfdet.model_zoo.detectron_weights`).

Each family's tiny model (built from its shipped gin file, shrunk) is filled
from a file that `detectron_pkl` writes under Detectron's blob names for the
tiny shapes, independently of the converter's name rule. Every converted
weight, transposed back by the test's own layout rules, equals its blob, and
every variable of the model is accounted for. Numbers: a grouped strided conv,
conv1 with the AffineChannel, fc6 on NCHW-pooled features through the box
head, the mask and keypoint deconvolutions, computed as Caffe2 computes them.
"""

import os
import pickle
import subprocess
import sys

import gin
import keras
import numpy as np
import pytest

from tests.model_zoo import detectron_pkl
from tfdet import gin_files, import_detectron, safe_pickle
from tfdet.model_zoo import detectron_blob_names, detectron_weights
from tfdet.model_zoo.detectron_layouts import DECONV, FLATTEN_FC, Layout
from tfdet.modeling.detectors import outputs as out_keys
from tfdet.training import checkpoints

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
D = 8  # width divisor of the tiny models
RCNN = {"builders.build_rcnn.width_divisor": D, "builders.build_rcnn.fpn_channels": 16,
        "builders.build_rcnn.mlp_dim": 32, "builders.build_rcnn.mask_num_convs": 2,
        "builders.build_rcnn.mask_conv_dim": 16, "builders.build_rcnn.keypoint_num_convs": 2,
        "builders.build_rcnn.keypoint_conv_dim": 16}


def _params(values):
  return [f"{k} = {v!r}" for k, v in values.items()]


def build(gin_file, stage_blocks=(1, 1, 1, 1), **overrides):
  """The tiny model of a shipped config: its spec's build_model, pure-TF ops."""
  retina = "retinanet" in gin_file
  prefix = "builders.build_retinanet" if retina else "builders.build_rcnn"
  values = {f"{prefix}.stage_blocks": stage_blocks, f"{prefix}.width_divisor": D}
  if retina:
    values.update({f"{prefix}.fpn_channels": 16, f"{prefix}.num_convs": 2,
                   f"{prefix}.num_classes": 3})
  else:
    values.update(RCNN)
    if "keypoint" not in gin_file:
      values["builders.build_rcnn.num_classes"] = 3
  values.update(overrides)
  gin.clear_config()
  try:
    gin_files.parse([gin_file], _params(values))
    return gin_files.detector_spec().build_model(implementation="reference")
  finally:
    gin.clear_config()


def check_round_trip(model, blobs, report, *, variables=None):
  """Every converted variable is its blob transposed (the tests' own rule), every blob of
  the file is converted, checked or ignored, every variable (of `variables`, default the
  model's) is converted, derived or kept."""
  converted = {blob: variable for blob, variable, _ in report.converted}
  assert set(converted) == set(blobs.kinds)
  for blob, variable in converted.items():
    expected = detectron_pkl.to_keras(blobs.kinds[blob], blobs.arrays[blob], blobs.fc6_chw)
    np.testing.assert_array_equal(variable.numpy(), expected, err_msg=blob)
  # Back through the converter's own inverse layouts: every blob exactly.
  for target in detectron_blob_names.blob_map(model).targets:
    if target.blob in converted:
      np.testing.assert_array_equal(target.layout.to_caffe2(target.variable.numpy()),
                                    blobs.arrays[target.blob], err_msg=target.blob)
  accounted = {id(v) for v in converted.values()}
  accounted |= {id(v) for v, _ in report.derived + report.kept}
  variables = model.variables if variables is None else variables
  assert {id(v) for v in variables} == accounted
  checked = {b for b, _ in report.checked}
  ignored_blobs = {b for names in report.ignored.values() for b in names}
  assert set(blobs.arrays) == set(converted) | checked | ignored_blobs


def convert(model, blobs, **kwargs):
  return detectron_weights.convert(model, dict(blobs.arrays), **kwargs)


def assert_close(got, want):
  """float32 against float64 sums of random weights: relative to the largest magnitude."""
  want = np.asarray(want)
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4,
                             atol=1e-5 * max(1.0, float(np.abs(want).max())))


def _nhwc(x):
  return np.ascontiguousarray(x.transpose(0, 2, 3, 1))


def _nchw(x):
  return np.asarray(x).transpose(0, 3, 1, 2)


# ---------------------------------------------------------------- families
def test_rpn_fpn():
  model = build("models/rpn_fpn.gin", stage_blocks=(1, 2, 1, 2))
  blobs = detectron_pkl.Blobs(1)
  dims = blobs.resnet((1, 2, 1, 2), divisor=D)
  blobs.fpn(dims, {2: 0, 3: 1, 4: 0, 5: 1}, 16)
  blobs.rpn(16, 3, suffix="_fpn2")  # shared by P2..P6: only the level-2 blobs exist
  blobs.trained_extras(["conv1_w", "rpn_cls_logits_fpn2_w"])
  report = convert(model, blobs)
  check_round_trip(model, blobs, report)
  assert "fpn_inner_res5_1_sum_w" in blobs.arrays  # the coarsest lateral has no suffix
  assert any("momentum" in reason for reason in report.ignored)


@pytest.mark.parametrize("heads", ["faster", "mask"])
def test_c4(heads):
  model = build(f"models/{heads}_rcnn_c4.gin")
  blobs = detectron_pkl.Blobs(2)
  dims = blobs.resnet((1, 1, 1), divisor=D, last_stage=4)
  blobs.rpn(dims[4], 15)
  res5 = blobs.resnet_stage(5, 3, dims[4], 64 * 8 // D, divisor=D, groups=1)  # the box head
  blobs.fast_rcnn_outputs(res5, 3)
  if heads == "mask":
    blobs.mask_c4_head(res5, 16, 3)
  report = convert(model, blobs)
  check_round_trip(model, blobs, report)
  # Backbone only: the trunk, C4's res5 (in the box head) included, as Detectron starts
  # it from ImageNet; the box outputs are not touched.
  report = convert(model, blobs, backbone_only=True)
  assert {b for b, _, _ in report.converted} == {b for b in blobs.kinds
                                                  if b.startswith(("conv1", "res_", "res2",
                                                                   "res3", "res4", "res5"))}
  outside = detectron_weights.OUTSIDE_BACKBONE.format(part="box")
  assert "cls_score_w" in report.ignored[outside]
  if heads == "mask":
    _check_deconv(model.mask_head.get_layer("conv5_mask"), blobs, "conv5_mask", stride=2,
                  pad=0, relu=True)


def test_mask_fpn_numbers():
  model = build("models/mask_rcnn_fpn.gin", stage_blocks=(2, 1, 1, 1))
  blobs = detectron_pkl.Blobs(3)
  dims = blobs.resnet((2, 1, 1, 1), divisor=D)
  blobs.fpn(dims, {2: 1, 3: 0, 4: 0, 5: 0}, 16)
  blobs.rpn(16, 3, suffix="_fpn2")
  blobs.mlp_head(16, 7, 32)
  blobs.fast_rcnn_outputs(32, 3)
  blobs.mask_fpn_head(16, 16, 2, 3)
  blobs.trained_extras(["fc6_w", "_[mask]_fcn1_w"])
  blobs.extra("fc1000_w", (1000, 2048 // D))  # preserved from the ImageNet initialization
  report = convert(model, blobs)
  check_round_trip(model, blobs, report)

  # fc6 .. cls_score / bbox_pred on pooled features, flattened (C, H, W) as Caffe2 does.
  pooled = np.random.default_rng(0).standard_normal((5, 16, 7, 7)).astype(np.float32)
  a = blobs.arrays
  h = np.maximum(detectron_pkl.fc(pooled, a["fc6_w"], a["fc6_b"]), 0)
  h = np.maximum(detectron_pkl.fc(h, a["fc7_w"], a["fc7_b"]), 0)
  out = model.box_head(_nhwc(pooled))
  assert_close(out[out_keys.CLASS_LOGITS], detectron_pkl.fc(h, a["cls_score_w"], a["cls_score_b"]))
  assert_close(out[out_keys.BOX_DELTAS], detectron_pkl.fc(h, a["bbox_pred_w"], a["bbox_pred_b"]))
  _check_deconv(model.mask_head.get_layer("conv5_mask"), blobs, "conv5_mask", stride=2, pad=0,
                relu=True)
  # The mask head end to end: class c's logits are channel c, as Detectron's.
  x = np.random.default_rng(1).standard_normal((2, 16, 14, 14)).astype(np.float32)
  y = x
  for i in (1, 2):
    y = np.maximum(detectron_pkl.conv_nchw(y, a[f"_[mask]_fcn{i}_w"], a[f"_[mask]_fcn{i}_b"],
                                           pad=1), 0)
  y = np.maximum(detectron_pkl.conv_transpose_nchw(y, a["conv5_mask_w"], a["conv5_mask_b"],
                                                   stride=2, pad=0), 0)
  y = detectron_pkl.conv_nchw(y, a["mask_fcn_logits_w"], a["mask_fcn_logits_b"])
  logits = model.mask_head(_nhwc(x))[out_keys.MASK_LOGITS]
  assert_close(_nchw(logits), y)


def _check_deconv(layer, blobs, name, *, stride, pad, relu):
  """A Conv2DTranspose layer against Caffe2's ConvTranspose on the same input."""
  w, b = blobs.arrays[name + "_w"], blobs.arrays[name + "_b"]
  x = np.random.default_rng(2).standard_normal((2, w.shape[0], 5, 5)).astype(np.float32)
  want = detectron_pkl.conv_transpose_nchw(x, w, b, stride=stride, pad=pad)
  if relu:
    want = np.maximum(want, 0)
  assert_close(_nchw(layer(_nhwc(x))), want)


def test_keypoint_fpn():
  model = build("models/keypoint_rcnn_fpn.gin")
  blobs = detectron_pkl.Blobs(4)
  dims = blobs.resnet((1, 1, 1, 1), divisor=D)
  blobs.fpn(dims, {2: 0, 3: 0, 4: 0, 5: 0}, 16)
  blobs.rpn(16, 3, suffix="_fpn2")
  blobs.mlp_head(16, 7, 32)
  blobs.fast_rcnn_outputs(32, 2)  # person and background
  blobs.keypoint_head(16, 16, 2, 17)
  report = convert(model, blobs)
  check_round_trip(model, blobs, report)
  assert {b for b, _ in report.checked} == {"kps_score_w", "kps_score_b"}
  _check_deconv(model.keypoint_head.get_layer("kps_score_lowres"), blobs, "kps_score_lowres",
                stride=2, pad=1, relu=False)
  # tfdet's fixed upsampling is the saved ConvTranspose.
  x = np.random.default_rng(3).standard_normal((1, 17, 6, 6)).astype(np.float32)
  want = detectron_pkl.conv_transpose_nchw(x, blobs.arrays["kps_score_w"],
                                           blobs.arrays["kps_score_b"], stride=2, pad=1)
  got = model.keypoint_head.get_layer("kps_score")(_nhwc(x))
  assert_close(_nchw(got), want)

  # A trained (changed) upsampling cannot be represented: refused, naming the blob.
  blobs.arrays["kps_score_w"] = blobs.arrays["kps_score_w"] * 1.5
  with pytest.raises(detectron_weights.DetectronWeightsError, match="kps_score_w differs"):
    convert(model, blobs)


def test_retinanet():
  model = build("models/retinanet.gin", stage_blocks=(1, 1, 2, 1))
  blobs = detectron_pkl.Blobs(5)
  dims = blobs.resnet((1, 1, 2, 1), divisor=D)
  blobs.fpn(dims, {3: 0, 4: 1, 5: 0}, 16, min_level=3, retinanet=True)
  blobs.retinanet_head(16, 2, 9, 2)
  report = convert(model, blobs)
  check_round_trip(model, blobs, report)
  # One level through the class tower: Detectron's channels a * K + k are tfdet's.
  a = blobs.arrays
  x = np.random.default_rng(4).standard_normal((1, 16, 6, 6)).astype(np.float32)
  y = x
  for i in range(2):
    y = np.maximum(detectron_pkl.conv_nchw(y, a[f"retnet_cls_conv_n{i}_fpn3_w"],
                                           a[f"retnet_cls_conv_n{i}_fpn3_b"], pad=1), 0)
  y = detectron_pkl.conv_nchw(y, a["retnet_cls_pred_fpn3_w"], a["retnet_cls_pred_fpn3_b"], pad=1)
  got = model.head(_nhwc(x))[out_keys.RETINANET_LOGITS]
  assert_close(_nchw(got), y)


def test_fast_rcnn_precomputed_proposals():
  model = build("models/fast_rcnn_fpn.gin")
  blobs = detectron_pkl.Blobs(6)
  dims = blobs.resnet((1, 1, 1, 1), divisor=D)
  blobs.fpn(dims, {2: 0, 3: 0, 4: 0, 5: 0}, 16)  # no RPN
  blobs.mlp_head(16, 7, 32)
  blobs.fast_rcnn_outputs(32, 3)
  check_round_trip(model, blobs, convert(model, blobs))
  # An end-to-end model's file has RPN blobs this model has no place for.
  blobs.rpn(16, 3, suffix="_fpn2")
  with pytest.raises(detectron_weights.DetectronWeightsError, match="conv_rpn_fpn2_w"):
    convert(model, blobs)


# ---------------------------------------------------------------- ImageNet backbone
XLIKE = {"NUM_GROUPS": 4, "WIDTH_PER_GROUP": 16, "STRIDE_IN_1X1": False}


def imagenet_blobs(seed=7):
  """A ResNeXt-like ImageNet file as Detectron's pickle_caffe_blobs writes it: a flat
  dict, zero biases for every conv, the 1000-way classifier."""
  blobs = detectron_pkl.Blobs(seed)
  blobs.resnet((1, 1, 1, 1), divisor=D, groups=4, width_per_group=16)
  for name in [n for n in blobs.arrays if n.endswith("_w")]:
    blobs.arrays[name[:-2] + "_b"] = np.zeros(blobs.arrays[name].shape[0], np.float32)
  blobs.extra("fc1000_w", (1000, 2048 // D))
  blobs.extra("fc1000_b", (1000,))
  blobs.extra("res2_0_branch2a_bn_rm", (64 // D,))
  return blobs


def _backbone_model(**overrides):
  return build("models/mask_rcnn_fpn.gin", **{**XLIKE, **overrides})


def test_imagenet_backbone_numbers_and_init_backbone(tmp_path):
  model = _backbone_model()
  fpn_before = model.backbone.get_layer("fpn_res5").kernel.numpy()
  head_before = model.box_head.get_layer("fc6").kernel.numpy()
  blobs = imagenet_blobs()
  report = convert(model, blobs, backbone_only=True)
  zero_biases = [n for n in blobs.arrays if n.endswith("_b") and n[:-2] + "_w" in blobs.kinds]
  check_round_trip(model, blobs, report, variables=model.backbone.variables)
  assert set(report.ignored[detectron_blob_names.UNREAD_CONV_BIAS]) == set(zero_biases)
  # The FPN keeps its initialization, the heads are not touched.
  np.testing.assert_array_equal(model.backbone.get_layer("fpn_res5").kernel.numpy(), fpn_before)
  np.testing.assert_array_equal(model.box_head.get_layer("fc6").kernel.numpy(), head_before)

  a = blobs.arrays
  rng = np.random.default_rng(5)
  # conv1 (7x7/2, pad 3) and its AffineChannel.
  x = rng.standard_normal((1, 3, 20, 20)).astype(np.float32)
  stem = keras.Model(model.backbone.input, model.backbone.get_layer("res_conv1_bn").output)
  scale, bias = a["res_conv1_bn_s"][:, None, None], a["res_conv1_bn_b"][:, None, None]
  want = detectron_pkl.conv_nchw(x, a["conv1_w"], stride=2, pad=3) * scale + bias
  assert_close(_nchw(stem(_nhwc(x))), want)
  # A grouped, strided 3x3 (ResNeXt puts res3's stride in the 3x3).
  w = a["res3_0_branch2b_w"]
  x = rng.standard_normal((1, w.shape[0], 9, 9)).astype(np.float32)
  layer = model.backbone.get_layer("res3_0_branch2b")
  got = layer(model.backbone.get_layer("res3_0_branch2b_pad")(_nhwc(x)))
  want = detectron_pkl.conv_nchw(x, w, stride=2, pad=1, groups=4)
  assert_close(_nchw(got), want)

  # Written as tf.train.Checkpoint(backbone=...) (into an empty folder: replaced as a whole),
  # read by init_backbone into a fresh model.
  (tmp_path / "out").mkdir()
  path = detectron_weights.write_checkpoint(model, str(tmp_path / "out"), backbone_only=True)
  fresh = _backbone_model()
  checkpoints.init_backbone(fresh, str(tmp_path / "out"))
  for v, u in zip(model.backbone.variables, fresh.backbone.variables, strict=True):
    np.testing.assert_array_equal(v.numpy(), u.numpy(), err_msg=v.path)
  assert os.path.basename(path) == "backbone-0"


def test_c4_imagenet_checkpoint_starts_the_res5_head_too(tmp_path):
  # Detectron starts C4's res5 box head from the ImageNet res5 weights: the backbone-only
  # checkpoint of a C4 config carries them and init_backbone puts them in the head.
  model = build("models/faster_rcnn_c4.gin")
  blobs = detectron_pkl.Blobs(3)
  dims = blobs.resnet((1, 1, 1), divisor=D, last_stage=4)
  blobs.resnet_stage(5, 3, dims[4], 64 * 8 // D, divisor=D, groups=1)
  convert(model, blobs, backbone_only=True)
  (tmp_path / "c4").mkdir()
  detectron_weights.write_checkpoint(model, str(tmp_path / "c4"), backbone_only=True)
  fresh = build("models/faster_rcnn_c4.gin")
  cls_before = fresh.box_head.get_layer("cls_score").kernel.numpy()
  checkpoints.init_backbone(fresh, str(tmp_path / "c4"))
  res5 = [layer.name for layer in model.box_head.layers
          if layer.name.startswith("res5_") and layer.weights]
  assert len(res5) == 20  # 3 blocks x (3 convs, 3 affines) + the projection and its affine
  for name in res5:
    for v, u in zip(model.box_head.get_layer(name).weights,
                    fresh.box_head.get_layer(name).weights, strict=True):
      np.testing.assert_array_equal(v.numpy(), u.numpy(), err_msg=v.path)
  np.testing.assert_array_equal(fresh.box_head.get_layer("cls_score").kernel.numpy(), cls_before)
  for v, u in zip(model.backbone.variables, fresh.backbone.variables, strict=True):
    np.testing.assert_array_equal(v.numpy(), u.numpy(), err_msg=v.path)
  # An FPN config's ImageNet checkpoint has no res5 head part: refused for a C4 model.
  fpn = _backbone_model()
  (tmp_path / "fpn").mkdir()
  detectron_weights.write_checkpoint(fpn, str(tmp_path / "fpn"), backbone_only=True)
  with pytest.raises(ValueError, match="no res5 weights"):
    checkpoints.init_backbone(build("models/faster_rcnn_c4.gin"), str(tmp_path / "fpn"))


def test_batchnorm_takes_the_affine_exactly():
  model = _backbone_model(**{"builders.build_rcnn.norm": "bn",
                             "builders.build_rcnn.freeze_at": 0})
  blobs = imagenet_blobs().arrays
  report = detectron_weights.convert(model, blobs, backbone_only=True)
  assert any(reason == detectron_blob_names.BN_STATISTICS for _, reason in report.derived)
  layer = model.backbone.get_layer("res2_0_branch2b_bn")
  assert isinstance(layer, keras.layers.BatchNormalization)
  x = np.random.default_rng(6).standard_normal((2, 3, 3, layer.gamma.shape[0])).astype(np.float32)
  want = x * blobs["res2_0_branch2b_bn_s"] + blobs["res2_0_branch2b_bn_b"]
  np.testing.assert_allclose(layer(x, training=False), want, rtol=1e-6, atol=1e-6)


# ---------------------------------------------------------------- layouts
def test_layouts_invert_and_flatten_order():
  rng = np.random.default_rng(8)
  w = rng.standard_normal((5, 3 * 2 * 4)).astype(np.float32)  # [out, C*H*W], C=3, H=2, W=4
  layout = Layout(FLATTEN_FC, feature_shape=(2, 4, 3))
  kernel = layout.to_keras(w)
  feats = rng.standard_normal((1, 3, 2, 4)).astype(np.float32)  # NCHW
  np.testing.assert_allclose(_nhwc(feats).reshape(1, -1) @ kernel, feats.reshape(1, -1) @ w.T,
                             rtol=1e-5)
  np.testing.assert_array_equal(layout.to_caffe2(kernel), w)
  assert layout.caffe2_shape(kernel.shape) == w.shape
  d = Layout(DECONV)
  blob = rng.standard_normal((6, 4, 2, 2)).astype(np.float32)  # [in, out, kh, kw]
  assert d.to_keras(blob).shape == (2, 2, 4, 6)
  np.testing.assert_array_equal(d.to_caffe2(d.to_keras(blob)), blob)


# ---------------------------------------------------------------- bad input
@pytest.fixture(scope="module")
def rpn_model():
  return build("models/rpn_fpn.gin")


def rpn_blobs():
  blobs = detectron_pkl.Blobs(9)
  dims = blobs.resnet((1, 1, 1, 1), divisor=D)
  blobs.fpn(dims, {2: 0, 3: 0, 4: 0, 5: 0}, 16)
  blobs.rpn(16, 3, suffix="_fpn2")
  return dict(blobs.arrays)


def _refused(model, blobs, match):
  kernel = model.rpn_head.get_layer("conv_rpn").kernel
  before = kernel.numpy()
  with pytest.raises(detectron_weights.DetectronWeightsError, match=match) as info:
    detectron_weights.convert(model, blobs, source="model_final.pkl")
  np.testing.assert_array_equal(kernel.numpy(), before)  # nothing was assigned
  assert "model_final.pkl" in str(info.value)
  return str(info.value)


def test_unknown_blob_is_named(rpn_model):
  blobs = rpn_blobs()
  blobs["conv_rpn_fpn3_w"] = blobs["conv_rpn_fpn2_w"]  # Detectron shares level 2's: no such blob
  _refused(rpn_model, blobs, r"1 blobs of the file map to no variable of the model: "
                             r"conv_rpn_fpn3_w")


def test_missing_blob_is_named(rpn_model):
  blobs = rpn_blobs()
  del blobs["rpn_bbox_pred_fpn2_b"]
  del blobs["res3_0_branch2b_bn_s"]
  message = _refused(rpn_model, blobs, "2 blobs the model needs are not in the file")
  assert "rpn_bbox_pred_fpn2_b" in message and "res3_0_branch2b_bn_s" in message


def test_shape_mismatch_names_the_blob_and_both_shapes(rpn_model):
  blobs = rpn_blobs()
  blobs["fpn_res4_0_sum_w"] = np.zeros((16, 16, 1, 1), np.float32)
  _refused(rpn_model, blobs, r"blob fpn_res4_0_sum_w has shape \(16, 16, 1, 1\) in the file, "
                             r"the model needs \(16, 16, 3, 3\)")


def test_file_format_errors(tmp_path):
  path = tmp_path / "list.pkl"
  path.write_bytes(pickle.dumps([1, 2]))
  with pytest.raises(detectron_weights.DetectronWeightsError, match="list.pkl.*holds a list"):
    detectron_weights.load_weights_file(str(path))
  path = tmp_path / "text.pkl"
  path.write_bytes(pickle.dumps({"blobs": {"conv1_w": "not an array"}}))
  with pytest.raises(detectron_weights.DetectronWeightsError, match="blob conv1_w is a str"):
    detectron_weights.load_weights_file(str(path))
  path = tmp_path / "cut.pkl"
  path.write_bytes(pickle.dumps({"blobs": {"a": np.ones(3)}})[:20])
  with pytest.raises(safe_pickle.CorruptPickleError, match="cut.pkl"):
    detectron_weights.load_weights_file(str(path))
  blobs, cfg = detectron_weights.load_weights_file(
      detectron_pkl.Blobs().write(str(tmp_path / "ok.pkl"), cfg="MODEL:\n  NUM_CLASSES: 3\n"))
  assert blobs == {} and "NUM_CLASSES" in cfg


class _RunsACommand:
  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return os.system, (f"touch {self.marker}",)


def _run(tmp_path, pkl, output, *params):
  gin.clear_config()
  try:
    return import_detectron.run(gin_file=["models/rpn_fpn.gin"], gin_param=list(params),
                                pkl=str(pkl), output=str(output))
  finally:
    gin.clear_config()


def test_cli_refuses_a_pickle_that_runs_a_command(tmp_path):
  marker = tmp_path / "ran"
  pkl = tmp_path / "evil.pkl"
  pkl.write_bytes(pickle.dumps({"blobs": {"conv1_w": _RunsACommand(marker)}}, protocol=2))
  with pytest.raises(safe_pickle.UnsafePickleError, match="evil.pkl: refused .*system"):
    _run(tmp_path, pkl, tmp_path / "out")
  assert not marker.exists() and not (tmp_path / "out").exists()


def test_cli_keeps_what_is_there(tmp_path):
  out = tmp_path / "out"
  out.mkdir()
  (out / "keep.txt").write_text("mine")
  pkl = detectron_pkl.Blobs().write(str(tmp_path / "w.pkl"))
  with pytest.raises(detectron_weights.OutputExistsError, match="not empty"):
    _run(tmp_path, pkl, out)
  assert os.listdir(out) == ["keep.txt"] and (out / "keep.txt").read_text() == "mine"
  with pytest.raises(FileNotFoundError, match="--pkl .*nothing.pkl"):
    _run(tmp_path, tmp_path / "nothing.pkl", tmp_path / "new")
  with pytest.raises(ValueError, match=r"eval/pipeline.build_dataset.channel_order = 'rgb'"):
    _run(tmp_path, pkl, tmp_path / "new", 'eval/pipeline.build_dataset.channel_order = "rgb"')
  assert not (tmp_path / "new").exists()


def test_cli_end_to_end_restores_into_a_fresh_model(tmp_path):
  blobs = detectron_pkl.Blobs(10)
  dims = blobs.resnet((1, 1, 1, 1), divisor=D)
  blobs.fpn(dims, {2: 0, 3: 0, 4: 0, 5: 0}, 16)
  blobs.rpn(16, 3, suffix="_fpn2")
  blobs.mlp_head(16, 7, 32)
  blobs.fast_rcnn_outputs(32, 3)
  blobs.mask_fpn_head(16, 16, 2, 3)
  blobs.trained_extras(["conv1_w"])
  pkl = blobs.write(str(tmp_path / "model_final.pkl"))
  params = {"builders.build_rcnn.stage_blocks": (1, 1, 1, 1), "builders.build_rcnn.num_classes": 3,
            **RCNN}
  out = tmp_path / "converted"
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
  proc = subprocess.run(
      [sys.executable, "-m", "tfdet.import_detectron", "--gin_file=models/mask_rcnn_fpn.gin",
       *[f"--gin_param={p}" for p in _params(params)], f"--pkl={pkl}", f"--output={out}"],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert f"converted {len(blobs.kinds)} blobs" in proc.stdout and "ckpt-0" in proc.stdout
  assert {"checkpoint", "ckpt-0.index", "detectron_import.txt", "detectron_config.yaml"} <= set(
      os.listdir(out))
  gin.clear_config()
  try:
    gin_files.parse(["models/mask_rcnn_fpn.gin"], _params(params))
    model, step, _ = checkpoints.load_for_inference(gin_files.detector_spec(), str(out),
                                                    implementation="reference")
  finally:
    gin.clear_config()
  assert step == 0
  targets = detectron_blob_names.blob_map(model).targets
  assert {t.blob for t in targets} == set(blobs.kinds)
  for t in targets:
    np.testing.assert_array_equal(
        t.variable.numpy(), detectron_pkl.to_keras(blobs.kinds[t.blob], blobs.arrays[t.blob],
                                                   blobs.fc6_chw), err_msg=t.blob)
