"""Builds the model zoo's detectors from plain arguments.

`build_rcnn` and `build_retinanet` are what gin binds (gin_configs/, through
`spec.DetectorSpec`): every argument is a number, a string or a settings
dataclass, and the parts are built here and handed to `GeneralizedRCNN` or
`RetinaNet`. Anchors follow Detectron: R-CNN FPN levels P2..P6 with one size
each (32 * 2**(l - 2)) and three aspect ratios; C4 one level at stride 16
with sizes 32..512 and three ratios (15 anchors); RetinaNet P3..P7 with
three octave scales of 4 x stride and three ratios (9 anchors,
`anchors.retinanet_cell_anchors`).
"""

import keras

from tfdet.modeling.backbones import fpn as fpn_lib
from tfdet.modeling.backbones import resnet
from tfdet.modeling.detectors.config import (
    KeypointSettings,
    RetinaNetSettings,
    RoiHeadSettings,
    RpnSettings,
    c4_roi_settings,
    c4_rpn_settings,
)
from tfdet.modeling.detectors.rcnn import GeneralizedRCNN
from tfdet.modeling.detectors.rcnn_box import BoxPart
from tfdet.modeling.detectors.rcnn_keypoint import KeypointPart
from tfdet.modeling.detectors.rcnn_mask import MaskPart
from tfdet.modeling.detectors.rcnn_pooling import RoiPooler
from tfdet.modeling.detectors.rcnn_proposals import PrecomputedProposals, RpnProposals
from tfdet.modeling.detectors.retinanet import RetinaNet
from tfdet.modeling.heads import box_heads, keypoint_heads, mask_heads
from tfdet.modeling.heads.retinanet import build_retinanet_head
from tfdet.modeling.heads.rpn import build_rpn_head
from tfdet.ops import anchors as anchor_ops

HEADS = ("rpn", "faster", "mask", "keypoint")
PROPOSAL_SOURCES = ("rpn", "precomputed")

# The model zoo's trunks as `build_rcnn` arguments (Detectron's RESNETS keys;
# gin_configs/backbones/ binds the same values).
BACKBONES = {
    "R-50": dict(depth=50),
    "R-101": dict(depth=101),
    "X-101-32x8d": dict(depth=101, num_groups=32, width_per_group=8, stride_in_1x1=False),
    "X-101-64x4d": dict(depth=101, num_groups=64, width_per_group=4, stride_in_1x1=False),
    "X-152-32x8d": dict(depth=152, num_groups=32, width_per_group=8, stride_in_1x1=False),
}


def _backbone(*, depth, num_groups, width_per_group, stride_in_1x1, norm, freeze_at, use_fpn,
              fpn_channels, min_level=2, max_level, extra="maxpool", stage_blocks,
              width_divisor):
  """The trunk and, with `use_fpn`, its FPN levels min_level..max_level (else res4)."""
  images = keras.Input((None, None, 3), name="images")
  stages = resnet.resnet_features(
      images, depth=depth, num_groups=num_groups, width_per_group=width_per_group,
      stride_in_1x1=stride_in_1x1, norm=norm, freeze_at=freeze_at,
      last_stage="res5" if use_fpn else "res4", stage_blocks=stage_blocks,
      width_divisor=width_divisor)
  if use_fpn:
    feats = fpn_lib.fpn_features(stages, min_level=min_level, max_level=max_level,
                                 channels=fpn_channels, extra=extra)
  else:
    feats = {"res4": stages["res4"]}
  return keras.Model(images, feats, name="backbone")


def build_rcnn(*, heads="mask", depth=50, num_groups=1, width_per_group=64, stride_in_1x1=True,
               norm="frozen_bn", freeze_at=2, use_fpn=True, fpn_channels=256, num_classes=81,
               convention="detectron", sampling="detectron", aligned_roi=False,
               anchor_start_size=32, anchor_ratios=(0.5, 1.0, 2.0),
               c4_anchor_sizes=(32, 64, 128, 256, 512), rpn_max_level=6, mlp_dim=1024,
               mask_num_convs=4, mask_conv_dim=256, rpn_settings=None, roi_settings=None,
               proposals="rpn", keypoint_settings=None, keypoint_num_convs=8,
               keypoint_conv_dim=512, implementation="custom", stage_blocks=None,
               width_divisor=1, backbone=None, jit_compile_inference=False):
  """An RPN, Fast/Faster R-CNN, Mask R-CNN or Keypoint R-CNN on a ResNet/ResNeXt C4 or FPN.

  Args:
    heads: "rpn" (RPN only), "faster" (boxes), "mask" (boxes and masks) or
      "keypoint" (boxes and keypoints; FPN only).
    depth, num_groups, width_per_group, stride_in_1x1, norm, freeze_at: the
      trunk (`resnet.resnet_features`).
    use_fpn: FPN (P2..P6) or C4 (res4 features, res5 as the box head).
    fpn_channels: FPN width.
    num_classes: K + 1 (81 for COCO, 2 for person keypoints).
    convention, sampling, aligned_roi: Detectron ("detectron", "detectron",
      False) or modern ("modern", "modern", True).
    anchor_start_size, anchor_ratios: FPN anchors (P2 size, ratios).
    c4_anchor_sizes: C4 anchor sizes.
    rpn_max_level: highest FPN level for the RPN (6).
    mlp_dim: FPN box head width.
    mask_num_convs, mask_conv_dim: FPN mask head.
    rpn_settings, roi_settings: None for Detectron's defaults (C4's differ:
      `config.c4_rpn_settings`, `config.c4_roi_settings`).
    proposals: "rpn", or "precomputed" (Detectron's two-stage recipe: the
      RoI heads read the batch's proposals; no RPN is built).
    keypoint_settings: `config.KeypointSettings`; None for Detectron's.
    keypoint_num_convs, keypoint_conv_dim: the keypoint head (8 convs of 512).
    implementation: "custom" ops or "reference".
    stage_blocks, width_divisor: shrink the trunk (tiny test models only).
    backbone: None to build one from the arguments above, or an already-built
      backbone model of the same shape (its weights are shared).
    jit_compile_inference: XLA for the backbone and RPN head at inference
      (`tfdet.modeling.xla`; off: on a CPU it speeds inference ~10% only).

  Returns:
    GeneralizedRCNN.
  """
  if heads not in HEADS:
    raise ValueError(f"heads must be one of {HEADS}, got {heads!r}")
  if proposals not in PROPOSAL_SOURCES:
    raise ValueError(f"proposals must be one of {PROPOSAL_SOURCES}, got {proposals!r}")
  if heads == "rpn" and proposals != "rpn":
    raise ValueError("an RPN-only model makes its own proposals: proposals must be 'rpn'")
  if heads == "keypoint" and not use_fpn:
    raise ValueError("the keypoint head is built on FPN (Detectron's keypoint configs)")
  with_rpn = proposals == "rpn"
  if backbone is None:
    backbone = _backbone(depth=depth, num_groups=num_groups, width_per_group=width_per_group,
                         stride_in_1x1=stride_in_1x1, norm=norm, freeze_at=freeze_at,
                         use_fpn=use_fpn, fpn_channels=fpn_channels,
                         max_level=rpn_max_level if with_rpn else 5,
                         stage_blocks=stage_blocks, width_divisor=width_divisor)
  roi_settings = roi_settings or (RoiHeadSettings() if use_fpn else c4_roi_settings())
  if use_fpn:
    rpn_levels = tuple(f"p{level}" for level in range(2, rpn_max_level + 1))
    rpn_strides = tuple(2 ** level for level in range(2, rpn_max_level + 1))
    cells = [anchor_ops.generate_cell_anchors(stride, (anchor_start_size * stride // 4,),
                                              anchor_ratios, convention=convention)
             for stride in rpn_strides]
    feat_channels = fpn_channels
    roi_range = range(roi_settings.roi_min_level, roi_settings.roi_max_level + 1)
    pooler = RoiPooler(levels=[f"p{level}" for level in roi_range],
                       strides=[2 ** level for level in roi_range],
                       min_level=roi_settings.roi_min_level,
                       max_level=roi_settings.roi_max_level,
                       canonical_scale=roi_settings.canonical_scale,
                       canonical_level=roi_settings.canonical_level, aligned=aligned_roi,
                       convention=convention, implementation=implementation)
    rpn_settings = rpn_settings or RpnSettings()
  else:
    rpn_levels, rpn_strides = ("res4",), (16,)
    cells = [anchor_ops.generate_cell_anchors(16, c4_anchor_sizes, anchor_ratios,
                                              convention=convention)]
    feat_channels = resnet.STAGE_CHANNELS["res4"] // width_divisor
    pooler = RoiPooler(levels=("res4",), strides=(16,), aligned=aligned_roi,
                       convention=convention, implementation=implementation)
    rpn_settings = rpn_settings or c4_rpn_settings()
  if with_rpn:
    source = RpnProposals(
        head=build_rpn_head(in_channels=feat_channels, num_anchors=len(cells[0])),
        levels=rpn_levels, strides=rpn_strides, cell_anchors=cells,
        settings=rpn_settings, convention=convention, sampling=sampling,
        implementation=implementation)
  else:
    source = PrecomputedProposals()
  common = dict(pooler=pooler, convention=convention, sampling=sampling)
  box = mask = keypoint = None
  if heads != "rpn":
    if use_fpn:
      box_head = box_heads.build_mlp_box_head(
          num_classes=num_classes, in_channels=feat_channels,
          roi_size=roi_settings.box_roi_size, hidden_dim=mlp_dim,
          class_agnostic=roi_settings.class_agnostic_boxes)
    else:
      box_head = box_heads.build_res5_box_head(
          num_classes=num_classes, num_groups=num_groups, width_per_group=width_per_group,
          stride_in_1x1=stride_in_1x1, norm=norm, roi_size=roi_settings.box_roi_size,
          class_agnostic=roi_settings.class_agnostic_boxes, width_divisor=width_divisor)
    box = BoxPart(head=box_head, settings=roi_settings, **common)
  if heads == "mask":
    if use_fpn:
      mask_head = mask_heads.build_fpn_mask_head(
          num_classes=num_classes, in_channels=feat_channels,
          roi_size=roi_settings.mask_roi_size, num_convs=mask_num_convs,
          conv_dim=mask_conv_dim)
    else:
      res5_size = roi_settings.box_roi_size // max(roi_settings.box_roi_size // 7, 1)
      mask_head = mask_heads.build_c4_mask_head(
          num_classes=num_classes, in_channels=resnet.STAGE_CHANNELS["res5"] // width_divisor,
          roi_size=res5_size, conv_dim=mask_conv_dim)
    mask = MaskPart(head=mask_head, settings=roi_settings, on_res5=not use_fpn, **common)
  if heads == "keypoint":
    keypoint_settings = keypoint_settings or KeypointSettings()
    keypoint_head = keypoint_heads.build_keypoint_head(
        num_keypoints=keypoint_settings.num_keypoints, in_channels=feat_channels,
        roi_size=keypoint_settings.roi_size, num_convs=keypoint_num_convs,
        conv_dim=keypoint_conv_dim,
        up_scale=keypoint_settings.heatmap_size // (2 * keypoint_settings.roi_size))
    keypoint = KeypointPart(head=keypoint_head, settings=keypoint_settings, **common)
  return GeneralizedRCNN(backbone=backbone, proposal_source=source, box=box, mask=mask,
                         keypoint=keypoint, num_classes=num_classes, convention=convention,
                         sampling=sampling, aligned_roi=aligned_roi,
                         implementation=implementation,
                         jit_compile_inference=jit_compile_inference)


def build_retinanet(*, depth=50, num_groups=1, width_per_group=64, stride_in_1x1=True,
                    norm="frozen_bn", freeze_at=2, fpn_channels=256, num_classes=81,
                    convention="detectron", min_level=3, max_level=7, anchor_scale=4.0,
                    scales_per_octave=3, anchor_ratios=(1.0, 2.0, 0.5), anchor_offset=0.0,
                    num_convs=4, head_dim=None, settings=None, implementation="custom",
                    stage_blocks=None, width_divisor=1, backbone=None,
                    jit_compile_inference=False):
  """A RetinaNet on a ResNet/ResNeXt FPN (Detectron's retinanet_* configs by default).

  Args:
    depth, num_groups, width_per_group, stride_in_1x1, norm, freeze_at: the
      trunk (`resnet.resnet_features`).
    fpn_channels: FPN width (256).
    num_classes: K + 1 (81 for COCO); the head predicts the K foreground classes.
    convention: "detectron" or "modern" box convention.
    min_level, max_level: pyramid levels (3, 7); P6 and P7 are stride-2 convs
      on C5 and ReLU(P6) (FPN.EXTRA_CONV_LEVELS).
    anchor_scale, scales_per_octave, anchor_ratios: RETINANET.ANCHOR_SCALE,
      SCALES_PER_OCTAVE, ASPECT_RATIOS (Detectron's order (1, 2, 0.5) is the
      order of the head's anchor channels).
    anchor_offset: detectron2's anchor offset (0).
    num_convs, head_dim: the head's towers (4 convs of fpn_channels).
    settings: `RetinaNetSettings`; None for Detectron's.
    implementation: recorded on the model (nothing in RetinaNet needs the
      compiled ops; export checks it).
    stage_blocks, width_divisor: shrink the trunk (tiny test models only).
    backbone: None, or an already-built backbone model of the same shape.
    jit_compile_inference: XLA for the backbone and head at inference
      (`tfdet.modeling.xla`).

  Returns:
    RetinaNet.
  """
  settings = settings or RetinaNetSettings()
  if backbone is None:
    backbone = _backbone(depth=depth, num_groups=num_groups, width_per_group=width_per_group,
                         stride_in_1x1=stride_in_1x1, norm=norm, freeze_at=freeze_at,
                         use_fpn=True, fpn_channels=fpn_channels, min_level=min_level,
                         max_level=max_level, extra="conv", stage_blocks=stage_blocks,
                         width_divisor=width_divisor)
  levels = tuple(range(min_level, max_level + 1))
  cells = [anchor_ops.retinanet_cell_anchors(2 ** level, anchor_scale=anchor_scale,
                                             scales_per_octave=scales_per_octave,
                                             aspect_ratios=anchor_ratios, convention=convention)
           for level in levels]
  head = build_retinanet_head(in_channels=fpn_channels, num_anchors=len(cells[0]),
                              num_classes=num_classes - 1, num_convs=num_convs,
                              conv_dim=head_dim, prior_prob=settings.prior_prob)
  return RetinaNet(backbone=backbone, head=head, levels=[f"p{level}" for level in levels],
                   strides=[2 ** level for level in levels], cell_anchors=cells,
                   num_classes=num_classes, convention=convention, settings=settings,
                   anchor_offset=anchor_offset, implementation=implementation,
                   jit_compile_inference=jit_compile_inference)
