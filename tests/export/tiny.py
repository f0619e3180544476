"""The tiny R-CNN every test that trains, evaluates, exports or infers shares (the overfit
tests, export, eval, TTA, infer, the command lines): its settings live here only."""

from tfdet.modeling.detectors import builders, spec
from tfdet.modeling.detectors.config import (
    KeypointSettings,
    RoiHeadSettings,
    RpnSettings,
    c4_roi_settings,
    c4_rpn_settings,
)

RPN = dict(pre_nms_top_n_train=300, post_nms_top_n_train=200, collect_top_n_train=200,
           pre_nms_top_n_test=300, post_nms_top_n_test=100, collect_top_n_test=100,
           batch_size_per_image=64)
ROI = dict(batch_size_per_image=32, detections_per_image=20)
PREPROCESSING = dict(scale=96, max_size=160)
# The keypoint head: two convs of 32 (Detectron: eight of 512), Detectron's RoIs and heatmaps.
KEYPOINT_HEAD = dict(keypoint_num_convs=2, keypoint_conv_dim=32)


def tiny_gin(*, num_classes=3, imports=()):
  """Gin bindings (over models/mask_rcnn_fpn.gin) of the same tiny model, for the CLIs.

  `imports`: extra gin import lines for what the caller binds after this text
  (dynamic registration resolves names per file).
  """
  lines = ["from __gin__ import dynamic_registration", "from tfdet.data import pipeline",
           "from tfdet.modeling.detectors import builders",
           "from tfdet.modeling.detectors import config", *imports,
           "include 'models/mask_rcnn_fpn.gin'", "builders.build_rcnn:",
           f"  num_classes = {num_classes}", "  stage_blocks = (1, 1, 1, 1)",
           "  width_divisor = 8", '  norm = "bn"', "  freeze_at = 0", "  fpn_channels = 32",
           "  mlp_dim = 128", "  mask_conv_dim = 32"]
  lines += [f"config.RpnSettings.{k} = {v}" for k, v in RPN.items()]
  lines += [f"config.RoiHeadSettings.{k} = {v}" for k, v in ROI.items()]
  return "\n".join(lines) + "\n"


def tiny_model(*, heads="mask", num_classes=3, implementation="reference", roi=None,
               use_fpn=True, build=True, proposals="rpn", keypoints=None):
  """The tiny model: one block per stage at 1/8 width, trainable BatchNorm, few proposals.

  Args:
    heads, num_classes, implementation, use_fpn, proposals: `builders.build_rcnn`'s.
    roi: RoiHeadSettings overrides (default `ROI`).
    build: create the variables (one inference on a dummy batch).
    keypoints: KeypointSettings overrides (heads="keypoint").
  """
  rpn = (RpnSettings if use_fpn else c4_rpn_settings)(**RPN)
  roi = (RoiHeadSettings if use_fpn else c4_roi_settings)(**(roi or ROI))
  model = builders.build_rcnn(
      heads=heads, use_fpn=use_fpn, num_classes=num_classes, stage_blocks=(1, 1, 1, 1),
      width_divisor=8, norm="bn", freeze_at=0, fpn_channels=32, mlp_dim=128, mask_conv_dim=32,
      rpn_settings=rpn, roi_settings=roi, implementation=implementation, proposals=proposals,
      keypoint_settings=KeypointSettings(**(keypoints or {})), **KEYPOINT_HEAD)
  if build:
    model(spec.dummy_batch(), training=False)
  return model
