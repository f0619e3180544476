"""Detectron's config keys and the tfdet gin settings they become: the one table.

Every key of a Detectron config (``detectron/core/config.py``, merged with a
12_2017_baselines yaml) is in exactly one of three places:

* `MAPPED`: the key has a tfdet counterpart. Each `Mapping` names the gin
  selectors (`gin_values.value`) or derived quantities (`DERIVED`) that must
  hold the key's value, converted to tfdet's units by ``convert``, in the rows
  where the key means something (``applies``: e.g. the RPN's test settings in
  rows with an RPN, the keypoint settings in keypoint rows).
* `FIXED`: tfdet builds one behaviour only (e.g. a bottleneck ResNet, RoIAlign,
  class-specific masks); the key's value in every row it applies to must be
  that one, or the row would need something tfdet does not have.
* `UNMAPPED`: keys deliberately left aside, each with the reason (logging,
  Caffe2 execution details, dataset names that are shards in tfdet, ...).

`compare` checks a parsed gin configuration against one Detectron config;
tests/model_zoo/test_detectron_configs.py runs it for the 74 rows of
gin_configs/12_2017_baselines/ against a copy of Detectron's merged configs.
"""

import dataclasses
from collections.abc import Callable
from typing import Any

from tfdet.model_zoo import gin_values
from tfdet.model_zoo.derived_values import DERIVED, EVAL_IN, RCNN, RETINA, RUN, TRAIN_IN, TTA, M


@dataclasses.dataclass(frozen=True)
class Row:
  """What a Detectron config builds, from its MODEL / FPN / RETINANET / TEST keys."""
  retinanet: bool
  rpn_only: bool
  e2e: bool  # MODEL.FASTER_RCNN: RPN and RoI heads trained together
  fpn: bool
  mask: bool
  keypoint: bool
  tta: bool
  box_voting: bool
  soft_nms: bool

  @classmethod
  def of(cls, cfg):
    model, test = cfg["MODEL"], cfg["TEST"]
    return cls(retinanet=cfg["RETINANET"]["RETINANET_ON"], rpn_only=model["RPN_ONLY"],
               e2e=model["FASTER_RCNN"], fpn=cfg["FPN"]["FPN_ON"], mask=model["MASK_ON"],
               keypoint=model["KEYPOINTS_ON"], tta=test["BBOX_AUG"]["ENABLED"],
               box_voting=test["BBOX_VOTE"]["ENABLED"], soft_nms=test["SOFT_NMS"]["ENABLED"])

  @property
  def rpn(self):
    return self.rpn_only or self.e2e

  @property
  def roi(self):
    return not (self.rpn_only or self.retinanet)

  @property
  def precomputed(self):
    return self.roi and not self.e2e


ALWAYS = lambda row: True  # noqa: E731
RPN = lambda row: row.rpn  # noqa: E731
E2E = lambda row: row.e2e  # noqa: E731  (RPN-only training generates no proposals)
ROI = lambda row: row.roi  # noqa: E731
FPN_ROI = lambda row: row.roi and row.fpn  # noqa: E731
FPN_RPN = lambda row: row.rpn and row.fpn  # noqa: E731
C4_RPN = lambda row: row.rpn and not row.fpn  # noqa: E731
RCNN_FPN = lambda row: row.fpn and not row.retinanet  # noqa: E731
PRECOMPUTED = lambda row: row.precomputed  # noqa: E731
MASK = lambda row: row.mask  # noqa: E731
KEYPOINT = lambda row: row.keypoint  # noqa: E731
RETINANET = lambda row: row.retinanet  # noqa: E731
DETECTOR = lambda row: not row.rpn_only  # noqa: E731
TTA_ROW = lambda row: row.tta  # noqa: E731
MASK_TTA = lambda row: row.tta and row.mask  # noqa: E731
KEYPOINT_TTA = lambda row: row.tta and row.keypoint  # noqa: E731
VOTING = lambda row: row.box_voting  # noqa: E731
SOFT_NMS = lambda row: row.soft_nms  # noqa: E731


def _floats(values):
  return tuple(float(v) for v in values)


def _ints(values):
  return tuple(int(v) for v in values)


@dataclasses.dataclass(frozen=True)
class Mapping:
  """A Detectron key and the tfdet settings that must hold its value.

  Attributes:
    key: "SECTION.KEY" as in Detectron's config.
    tfdet: gin selectors (`gin_values.value`) or names in `DERIVED`; each must
      equal ``convert(detectron value)``.
    applies: (Row) -> whether the key means something in that row.
    convert: Detectron's value -> tfdet's (lists become tuples, ...).
  """
  key: str
  tfdet: tuple[str, ...]
  applies: Callable[[Row], bool] = ALWAYS
  convert: Callable[[Any], Any] = lambda v: v


_ROI = f"{RCNN}.roi_settings"
_RPN = f"{RCNN}.rpn_settings"
_KP = f"{RCNN}.keypoint_settings"
_RS = f"{RETINA}.settings"
_BOX_HEADS = {"fast_rcnn_heads.add_roi_2mlp_head": "2mlp", "head_builder.add_roi_2mlp_head": "2mlp",
              "ResNet.add_ResNet_roi_conv5_head": "res5"}
_MASK_HEADS = {"mask_rcnn_heads.mask_rcnn_fcn_head_v1up4convs": "v1up4convs",
               "mask_rcnn_heads.mask_rcnn_fcn_head_v0upshare": "v0upshare"}


def _m(key, tfdet, applies=ALWAYS, convert=lambda v: v):
  return Mapping(key, (tfdet,) if isinstance(tfdet, str) else tuple(tfdet), applies, convert)


MAPPED = (
    # The model: family, body, trunk.
    _m("MODEL.CONV_BODY", "conv body"),
    _m("MODEL.NUM_CLASSES", f"{M}.num_classes"),
    _m("MODEL.RPN_ONLY", "RPN only"),
    _m("MODEL.FASTER_RCNN", "RPN and RoI heads end to end"),
    _m("MODEL.MASK_ON", "has masks"),
    _m("MODEL.KEYPOINTS_ON", "has keypoints"),
    _m("RETINANET.RETINANET_ON", "is RetinaNet"),
    _m("FPN.FPN_ON", "uses FPN"),
    _m("FPN.MULTILEVEL_RPN", "uses FPN", RPN),
    _m("FPN.MULTILEVEL_ROIS", "uses FPN", ROI),
    _m("RESNETS.NUM_GROUPS", f"{M}.num_groups"),
    _m("RESNETS.WIDTH_PER_GROUP", f"{M}.width_per_group"),
    _m("RESNETS.STRIDE_1X1", f"{M}.stride_in_1x1"),
    _m("TRAIN.FREEZE_AT", f"{M}.freeze_at"),
    _m("PIXEL_MEANS", (f"{EVAL_IN}.pixel_means",), convert=lambda v: _floats(v[0][0])),
    # FPN.
    _m("FPN.DIM", f"{M}.fpn_channels", lambda row: row.fpn),
    _m("FPN.EXTRA_CONV_LEVELS", "P6/P7 from convs on C5", lambda row: row.fpn),
    _m("FPN.RPN_MIN_LEVEL", "FPN min level", lambda row: row.fpn),
    _m("FPN.RPN_MAX_LEVEL", "FPN max level", lambda row: row.fpn and not row.precomputed),
    _m("FPN.COARSEST_STRIDE", (f"{TRAIN_IN}.size_divisibility", f"{EVAL_IN}.size_divisibility"),
       lambda row: row.fpn),
    _m("FPN.RPN_ANCHOR_START_SIZE", f"{RCNN}.anchor_start_size", FPN_RPN),
    _m("FPN.RPN_ASPECT_RATIOS", f"{RCNN}.anchor_ratios", FPN_RPN, _floats),
    _m("FPN.ROI_MIN_LEVEL", f"{_ROI}.roi_min_level", FPN_ROI),
    _m("FPN.ROI_MAX_LEVEL", f"{_ROI}.roi_max_level", FPN_ROI),
    _m("FPN.ROI_CANONICAL_SCALE", f"{_ROI}.canonical_scale", FPN_ROI),
    _m("FPN.ROI_CANONICAL_LEVEL", f"{_ROI}.canonical_level", FPN_ROI),
    # RPN (C4 anchors; the FPN ones above).
    _m("RPN.SIZES", f"{RCNN}.c4_anchor_sizes", C4_RPN, _ints),
    _m("RPN.ASPECT_RATIOS", f"{RCNN}.anchor_ratios", C4_RPN, _floats),
    _m("TRAIN.RPN_BATCH_SIZE_PER_IM", f"{_RPN}.batch_size_per_image", RPN),
    _m("TRAIN.RPN_FG_FRACTION", f"{_RPN}.positive_fraction", RPN),
    _m("TRAIN.RPN_POSITIVE_OVERLAP", f"{_RPN}.positive_overlap", RPN),
    _m("TRAIN.RPN_NEGATIVE_OVERLAP", f"{_RPN}.negative_overlap", RPN),
    _m("TRAIN.RPN_STRADDLE_THRESH", f"{_RPN}.straddle_thresh", RPN),
    _m("TRAIN.RPN_PRE_NMS_TOP_N", f"{_RPN}.pre_nms_top_n_train", E2E),
    _m("TRAIN.RPN_POST_NMS_TOP_N", (f"{_RPN}.post_nms_top_n_train",
                                    f"{_RPN}.collect_top_n_train"), E2E),
    _m("TRAIN.RPN_NMS_THRESH", f"{_RPN}.nms_threshold", E2E),
    _m("TRAIN.RPN_MIN_SIZE", f"{_RPN}.min_size", E2E),
    _m("TEST.RPN_PRE_NMS_TOP_N", f"{_RPN}.pre_nms_top_n_test", RPN),
    _m("TEST.RPN_POST_NMS_TOP_N", (f"{_RPN}.post_nms_top_n_test",
                                   f"{_RPN}.collect_top_n_test"), RPN),
    _m("TEST.RPN_NMS_THRESH", f"{_RPN}.nms_threshold", RPN),
    _m("TEST.RPN_MIN_SIZE", f"{_RPN}.min_size", RPN),
    # Precomputed proposals (the two-stage rows).
    _m("TEST.PROPOSAL_LIMIT", f"{EVAL_IN}.max_proposals", PRECOMPUTED),
    _m("TEST.PRECOMPUTED_PROPOSALS", "reads precomputed proposals", PRECOMPUTED),
    # RoI heads: sampling, pooling, boxes.
    _m("TRAIN.BATCH_SIZE_PER_IM", f"{_ROI}.batch_size_per_image", ROI),
    _m("TRAIN.FG_FRACTION", f"{_ROI}.fg_fraction", ROI),
    _m("TRAIN.FG_THRESH", f"{_ROI}.fg_thresh", ROI),
    # Detectron regresses the RoIs with overlap >= BBOX_THRESH, which equals FG_THRESH in
    # every row: tfdet regresses the foreground RoIs.
    _m("TRAIN.BBOX_THRESH", f"{_ROI}.fg_thresh", ROI),
    _m("TRAIN.BG_THRESH_HI", f"{_ROI}.bg_thresh_hi", ROI),
    _m("TRAIN.BG_THRESH_LO", f"{_ROI}.bg_thresh_lo", ROI),
    _m("MODEL.BBOX_REG_WEIGHTS", f"{_ROI}.box_weights", ROI, _floats),
    _m("MODEL.CLS_AGNOSTIC_BBOX_REG", f"{_ROI}.class_agnostic_boxes", ROI),
    _m("FAST_RCNN.ROI_BOX_HEAD", "box head", ROI, _BOX_HEADS.get),
    _m("FAST_RCNN.MLP_HEAD_DIM", f"{RCNN}.mlp_dim", FPN_ROI),
    _m("FAST_RCNN.ROI_XFORM_RESOLUTION", f"{_ROI}.box_roi_size", ROI),
    _m("FAST_RCNN.ROI_XFORM_SAMPLING_RATIO", f"{_ROI}.sampling_ratio", ROI),
    _m("TEST.SCORE_THRESH", f"{_ROI}.score_threshold", ROI),
    _m("TEST.NMS", "test NMS", DETECTOR),
    _m("TEST.DETECTIONS_PER_IM", "detections per image", DETECTOR),
    _m("TEST.SOFT_NMS.ENABLED", "soft NMS on", ROI),
    _m("TEST.SOFT_NMS.METHOD", f"{_ROI}.soft_nms_method", SOFT_NMS),
    _m("TEST.SOFT_NMS.SIGMA", f"{_ROI}.soft_nms_sigma", SOFT_NMS),
    _m("TEST.BBOX_VOTE.ENABLED", "box voting on", ROI),
    _m("TEST.BBOX_VOTE.VOTE_TH", f"{_ROI}.box_voting_threshold", VOTING),
    _m("TEST.BBOX_VOTE.SCORING_METHOD", f"{_ROI}.box_voting_scoring", VOTING),
    # Masks.
    _m("MRCNN.ROI_MASK_HEAD", "mask head", MASK, _MASK_HEADS.get),
    _m("MRCNN.RESOLUTION", f"{_ROI}.mask_resolution", MASK),
    _m("MRCNN.ROI_XFORM_RESOLUTION", "mask RoI size", MASK),
    # The FPN mask head pools as the box head does; the C4 one shares the box head's res5
    # features, pooled with FAST_RCNN.ROI_XFORM_SAMPLING_RATIO (0 in those rows, as this).
    _m("MRCNN.ROI_XFORM_SAMPLING_RATIO", f"{_ROI}.sampling_ratio", MASK),
    _m("MRCNN.DIM_REDUCED", f"{RCNN}.mask_conv_dim", MASK),
    # Keypoints.
    _m("KRCNN.NUM_KEYPOINTS", f"{_KP}.num_keypoints", KEYPOINT),
    _m("KRCNN.NUM_STACKED_CONVS", f"{RCNN}.keypoint_num_convs", KEYPOINT),
    _m("KRCNN.CONV_HEAD_DIM", f"{RCNN}.keypoint_conv_dim", KEYPOINT),
    _m("KRCNN.ROI_XFORM_RESOLUTION", f"{_KP}.roi_size", KEYPOINT),
    _m("KRCNN.ROI_XFORM_SAMPLING_RATIO", f"{_KP}.sampling_ratio", KEYPOINT),
    _m("KRCNN.HEATMAP_SIZE", f"{_KP}.heatmap_size", KEYPOINT),
    _m("KRCNN.UP_SCALE", "keypoint upsampling", KEYPOINT),
    _m("KRCNN.LOSS_WEIGHT", f"{_KP}.loss_weight", KEYPOINT),
    _m("KRCNN.NORMALIZE_BY_VISIBLE_KEYPOINTS", f"{_KP}.normalize_by_visible", KEYPOINT),
    _m("KRCNN.MIN_KEYPOINT_COUNT_FOR_VALID_MINIBATCH", f"{_KP}.min_visible_keypoints",
       KEYPOINT),
    # RetinaNet.
    _m("RETINANET.NUM_CONVS", f"{RETINA}.num_convs", RETINANET),
    _m("RETINANET.ANCHOR_SCALE", f"{RETINA}.anchor_scale", RETINANET, float),
    _m("RETINANET.SCALES_PER_OCTAVE", f"{RETINA}.scales_per_octave", RETINANET),
    _m("RETINANET.ASPECT_RATIOS", f"{RETINA}.anchor_ratios", RETINANET, _floats),
    _m("RETINANET.POSITIVE_OVERLAP", f"{_RS}.positive_overlap", RETINANET),
    _m("RETINANET.NEGATIVE_OVERLAP", f"{_RS}.negative_overlap", RETINANET),
    _m("RETINANET.LOSS_ALPHA", f"{_RS}.focal_alpha", RETINANET),
    _m("RETINANET.LOSS_GAMMA", f"{_RS}.focal_gamma", RETINANET),
    _m("RETINANET.PRIOR_PROB", f"{_RS}.prior_prob", RETINANET),
    _m("RETINANET.BBOX_REG_BETA", f"{_RS}.box_loss_beta", RETINANET),
    _m("RETINANET.BBOX_REG_WEIGHT", f"{_RS}.box_loss_weight", RETINANET),
    _m("RETINANET.INFERENCE_TH", f"{_RS}.score_threshold", RETINANET),
    _m("RETINANET.PRE_NMS_TOP_N", f"{_RS}.pre_nms_top_n", RETINANET),
    # Solver, on NUM_GPUS replicas of TRAIN.IMS_PER_BATCH images.
    _m("TRAIN.IMS_PER_BATCH", f"{RUN}.images_per_replica"),
    _m("SOLVER.BASE_LR", "base_lr on NUM_GPUS replicas"),
    _m("SOLVER.MAX_ITER", "max_iter on NUM_GPUS replicas"),
    _m("SOLVER.STEPS", "lr_steps on NUM_GPUS replicas", convert=tuple),
    _m("SOLVER.GAMMA", f"{RUN}.gamma"),
    _m("SOLVER.MOMENTUM", f"{RUN}.momentum"),
    _m("SOLVER.WEIGHT_DECAY", f"{RUN}.weight_decay"),
    _m("SOLVER.WEIGHT_DECAY_GN", f"{RUN}.weight_decay_norm"),
    _m("SOLVER.WARM_UP_ITERS", f"{RUN}.warmup_iters"),
    _m("SOLVER.WARM_UP_FACTOR", f"{RUN}.warmup_factor"),
    # Inputs.
    _m("TRAIN.SCALES", f"{TRAIN_IN}.scales", convert=tuple),
    _m("TRAIN.MAX_SIZE", f"{TRAIN_IN}.max_size"),
    _m("TRAIN.USE_FLIPPED", "flips in training"),
    _m("TEST.SCALE", "test scale"),
    _m("TEST.MAX_SIZE", f"{EVAL_IN}.max_size"),
    # Test-time augmentation (tfdet.evaluation.tta).
    _m("TEST.BBOX_AUG.ENABLED", "TTA on", DETECTOR),
    _m("TEST.BBOX_AUG.H_FLIP", f"{TTA}.h_flip", TTA_ROW),
    _m("TEST.BBOX_AUG.SCALES", f"{TTA}.scales", TTA_ROW, tuple),
    _m("TEST.BBOX_AUG.MAX_SIZE", f"{TTA}.max_size", TTA_ROW),
    _m("TEST.BBOX_AUG.SCALE_H_FLIP", f"{TTA}.scale_h_flip", TTA_ROW),
    _m("TEST.BBOX_AUG.SCORE_HEUR", f"{TTA}.score_heur", TTA_ROW),
    _m("TEST.BBOX_AUG.COORD_HEUR", f"{TTA}.coord_heur", TTA_ROW),
    _m("TEST.MASK_AUG.ENABLED", "mask TTA on", MASK),
    _m("TEST.MASK_AUG.H_FLIP", "mask TTA h_flip", MASK_TTA),
    _m("TEST.MASK_AUG.SCALES", "mask TTA scales", MASK_TTA, tuple),
    _m("TEST.MASK_AUG.MAX_SIZE", "mask TTA max_size", MASK_TTA),
    _m("TEST.MASK_AUG.SCALE_H_FLIP", "mask TTA scale_h_flip", MASK_TTA),
    _m("TEST.MASK_AUG.HEUR", f"{TTA}.mask_heur", MASK_TTA),
    _m("TEST.KPS_AUG.ENABLED", "keypoint TTA on", KEYPOINT),
    _m("TEST.KPS_AUG.H_FLIP", "keypoint TTA h_flip", KEYPOINT_TTA),
    _m("TEST.KPS_AUG.SCALES", "keypoint TTA scales", KEYPOINT_TTA, tuple),
    _m("TEST.KPS_AUG.MAX_SIZE", "keypoint TTA max_size", KEYPOINT_TTA),
    _m("TEST.KPS_AUG.SCALE_H_FLIP", "keypoint TTA scale_h_flip", KEYPOINT_TTA),
    _m("TEST.KPS_AUG.HEUR", f"{TTA}.kps_heur", KEYPOINT_TTA),
    _m("TEST.KPS_AUG.SCALE_SIZE_DEP", f"{TTA}.kps_scale_size_dep", KEYPOINT_TTA),
    _m("TEST.KPS_AUG.AREA_TH", f"{TTA}.kps_area_th", KEYPOINT_TTA, float),
)


@dataclasses.dataclass(frozen=True)
class Fixed:
  """A key whose value tfdet builds in: every row it applies to must hold `value`."""
  key: str
  value: Any
  reason: str
  applies: Callable[[Row], bool] = ALWAYS


FIXED = (
    Fixed("RESNETS.TRANS_FUNC", "bottleneck_transformation", "tfdet's ResNet is bottleneck only"),
    Fixed("RESNETS.STEM_FUNC", "basic_bn_stem", "7x7 stride-2 conv, affine, ReLU, 3x3 max pool"),
    Fixed("RESNETS.SHORTCUT_FUNC", "basic_bn_shortcut", "projection shortcuts (1x1 conv, affine)"),
    Fixed("RESNETS.RES5_DILATION", 1, "res5 is strided, never dilated"),
    Fixed("TRAIN.FREEZE_CONV_BODY", False, "the trunk trains above freeze_at"),
    Fixed("FPN.USE_GN", False, "the 12_2017 FPNs have no normalization (GN rows came later)",
          lambda row: row.fpn),
    Fixed("FPN.ZERO_INIT_LATERAL", False, "lateral convs start from Xavier fill",
          lambda row: row.fpn),
    Fixed("FAST_RCNN.ROI_XFORM_METHOD", "RoIAlign", "the RoI transform is RoIAlign", ROI),
    Fixed("MRCNN.ROI_XFORM_METHOD", "RoIAlign", "the RoI transform is RoIAlign", MASK),
    Fixed("KRCNN.ROI_XFORM_METHOD", "RoIAlign", "the RoI transform is RoIAlign", KEYPOINT),
    Fixed("MRCNN.CLS_SPECIFIC_MASK", True, "a mask per class", MASK),
    Fixed("MRCNN.USE_FC_OUTPUT", False, "the mask logits are a 1x1 conv", MASK),
    Fixed("MRCNN.UPSAMPLE_RATIO", 1, "the mask head's deconv is its only upsampling", MASK),
    Fixed("MRCNN.DILATION", 1, "the mask head's convs are not dilated", MASK),
    Fixed("MRCNN.CONV_INIT", "MSRAFill", "the mask head's convs start from MSRA fill", MASK),
    Fixed("MRCNN.WEIGHT_LOSS_MASK", 1.0, "the mask loss has weight 1", MASK),
    Fixed("MRCNN.THRESH_BINARIZE", 0.5, "pasted masks are binarized at 0.5 (ops/masks.py)", MASK),
    Fixed("KRCNN.ROI_KEYPOINTS_HEAD", "keypoint_rcnn_heads.add_roi_pose_head_v1convX",
          "the keypoint head is 'v1convX': stacked 3x3 convs", KEYPOINT),
    Fixed("KRCNN.CONV_HEAD_KERNEL", 3, "3x3 convs", KEYPOINT),
    Fixed("KRCNN.CONV_INIT", "MSRAFill", "MSRA fill", KEYPOINT),
    Fixed("KRCNN.DILATION", 1, "no dilation", KEYPOINT),
    Fixed("KRCNN.USE_DECONV", False, "no deconv stack before the output", KEYPOINT),
    Fixed("KRCNN.USE_DECONV_OUTPUT", True, "the output is a 4x4 stride-2 deconv", KEYPOINT),
    Fixed("KRCNN.DECONV_KERNEL", 4, "the output deconv is 4x4", KEYPOINT),
    Fixed("KRCNN.KEYPOINT_CONFIDENCE", "bbox", "a person's keypoint score is its box score",
          KEYPOINT),
    Fixed("KRCNN.NMS_OKS", False, "detections go through box NMS only", KEYPOINT),
    Fixed("KRCNN.INFERENCE_MIN_SIZE", 0, "keypoints are predicted for every detection",
          KEYPOINT),
    Fixed("RETINANET.CLASS_SPECIFIC_BBOX", False, "one box per anchor", RETINANET),
    Fixed("RETINANET.SHARE_CLS_BBOX_TOWER", False, "separate class and box towers", RETINANET),
    Fixed("RETINANET.SOFTMAX", False, "sigmoid focal loss", RETINANET),
    Fixed("RPN.STRIDE", 16, "C4's anchors are at res4's stride", C4_RPN),
    Fixed("SOLVER.LR_POLICY", "steps_with_decay", "tfdet.training.schedules.WarmupStepDecay"),
    Fixed("SOLVER.WARM_UP_METHOD", "linear", "linear warm-up"),
    Fixed("SOLVER.SCALE_MOMENTUM", True,
          "DetectronSGD rescales its momentum buffer when the LR jumps"),
    Fixed("SOLVER.SCALE_MOMENTUM_THRESHOLD", 1.1, "DetectronSGD's default"),
    Fixed("TRAIN.ASPECT_GROUPING", True, "the input pipeline batches by orientation"),
    Fixed("TRAIN.GT_MIN_AREA", -1, "no ground truth is dropped for its area"),
    Fixed("TRAIN.CROWD_FILTER_THRESH", 0.7,
          "data_prep/add_proposals.py drops proposals covered by a crowd region above 0.7",
          PRECOMPUTED),
    Fixed("TRAIN.AUTO_RESUME", True, "train resumes from the model_dir's latest checkpoint"),
    Fixed("TEST.BBOX_REG", True, "detections are the regressed boxes", ROI),
    Fixed("TEST.CLASS_SPECIFIC_AR", False, "proposal AR is class-agnostic"),
    Fixed("TEST.BBOX_AUG.ASPECT_RATIOS", [], "TTA has no aspect-ratio transforms", TTA_ROW),
    Fixed("TEST.BBOX_AUG.ASPECT_RATIO_H_FLIP", False, "(none)", TTA_ROW),
    Fixed("TEST.BBOX_AUG.SCALE_SIZE_DEP", False, "box TTA keeps every scale's boxes", TTA_ROW),
    Fixed("TEST.MASK_AUG.ASPECT_RATIOS", [], "TTA has no aspect-ratio transforms", MASK_TTA),
    Fixed("TEST.MASK_AUG.ASPECT_RATIO_H_FLIP", False, "(none)", MASK_TTA),
    Fixed("TEST.MASK_AUG.SCALE_SIZE_DEP", False, "mask TTA averages every transform", MASK_TTA),
    Fixed("TEST.KPS_AUG.ASPECT_RATIOS", [], "TTA has no aspect-ratio transforms", KEYPOINT_TTA),
    Fixed("TEST.KPS_AUG.ASPECT_RATIO_H_FLIP", False, "(none)", KEYPOINT_TTA),
)

# Keys left aside on purpose, with the reason.
UNMAPPED = {
    "NUM_GPUS": "the replicas are the run's (tf.distribute), not the config's; the solver "
                "keys above are compared on NUM_GPUS replicas",
    "MODEL.TYPE": "'rpn' (legacy) and 'generalized_rcnn' with RPN_ONLY build the same model; "
                  "the family is MODEL.RPN_ONLY / FASTER_RCNN / RETINANET_ON above",
    "MODEL.EXECUTION_TYPE": "Caffe2's net scheduling",
    "RPN.RPN_ON": "Detectron infers it at run time (RPN_ONLY or FASTER_RCNN, both mapped); "
                  "the merged yaml still holds the default",
    "EPS": "Detectron's guard in box-size logs; tfdet's box coder clips deltas instead",
    "RNG_SEED": "train.run.seed seeds tfdet's input pipeline; Caffe2's random streams "
                "cannot be reproduced in TF",
    "TRAIN.DATASETS": "the training data are the shards given to --file_pattern; "
                      "MODEL_ZOO.md names the COCO json each row converts",
    "TEST.DATASETS": "the evaluation data are the shards given to --file_pattern",
    "TRAIN.PROPOSAL_FILES": "Detectron's proposal pickles (URLs): tfdet writes proposals into "
                            "the shards (data_prep/add_proposals.py, which reads such files)",
    "TEST.PROPOSAL_FILES": "as TRAIN.PROPOSAL_FILES",
    "TRAIN.COPY_WEIGHTS": "Detectron's net-surgery option at initialization",
    "TRAIN.SNAPSHOT_ITERS": "tfdet checkpoints every train.run.checkpoint_interval (2000) steps",
    "TRAIN.GENERATE_PROPOSALS_ON_GPU": "the proposal op runs where TF places it (CPU or CUDA "
                                       "kernel)",
    "TEST.GENERATE_PROPOSALS_ON_GPU": "as TRAIN.GENERATE_PROPOSALS_ON_GPU",
    "TEST.COMPETITION_MODE": "pycocotools' naming of results for test-dev; no effect on AP",
    "TEST.FORCE_JSON_DATASET_EVAL": "tfdet always evaluates with pycocotools",
    "SOLVER.LOG_LR_CHANGE_THRESHOLD": "logging",
    "SOLVER.LRS": "read only by the steps_with_lrs policy, which no row uses",
    "SOLVER.STEP_SIZE": "read only by the step policy, which no row uses",
    "FAST_RCNN.CONV_HEAD_DIM": "read only by the Xconv box heads, which no 12_2017 row uses",
    "FAST_RCNN.NUM_STACKED_CONVS": "as FAST_RCNN.CONV_HEAD_DIM",
    "KRCNN.DECONV_DIM": "read only with KRCNN.USE_DECONV, false in every row",
    "TEST.BBOX_AUG.AREA_TH_HI": "read only with SCALE_SIZE_DEP, false in every row",
    "TEST.BBOX_AUG.AREA_TH_LO": "as TEST.BBOX_AUG.AREA_TH_HI",
    "TEST.MASK_AUG.AREA_TH": "as TEST.BBOX_AUG.AREA_TH_HI",
    "TEST.BBOX_VOTE.SCORING_METHOD_BETA": "Detectron's test path ignores it (box voting runs "
                                          "with beta 1.0, as tfdet)",
}


@dataclasses.dataclass(frozen=True)
class Mismatch:
  key: str
  tfdet: str
  detectron: Any
  got: Any

  def __str__(self):
    return f"{self.key} = {self.detectron!r}, but {self.tfdet} is {self.got!r}"


def flatten(cfg, prefix=""):
  """{"SECTION.KEY": value} of a nested Detectron config."""
  flat = {}
  for key, value in cfg.items():
    if isinstance(value, dict):
      flat.update(flatten(value, f"{prefix}{key}."))
    else:
      flat[f"{prefix}{key}"] = value
  return flat


def _same(a, b):
  if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
    return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
  if isinstance(a, bool) or isinstance(b, bool):
    return a is b or (isinstance(a, bool) and isinstance(b, bool) and a == b)
  return a == b


def compare(cfg):
  """Compares the parsed gin configuration with one Detectron config.

  Args:
    cfg: Detectron's merged config of the row (nested dicts, as json).

  Returns:
    (list of `Mismatch`, number of comparisons made).
  """
  row = Row.of(cfg)
  flat = flatten(cfg)
  mismatches, checked = [], 0
  for mapping in MAPPED:
    if not mapping.applies(row):
      continue
    expected = mapping.convert(flat[mapping.key])
    for target in mapping.tfdet:
      got = DERIVED[target](cfg) if target in DERIVED else gin_values.value(target)
      checked += 1
      if not _same(got, expected):
        mismatches.append(Mismatch(mapping.key, target, expected, got))
  for fixed in FIXED:
    if fixed.applies(row):
      checked += 1
      if not _same(flat[fixed.key], fixed.value):
        mismatches.append(Mismatch(fixed.key, f"built in: {fixed.reason}", flat[fixed.key],
                                   fixed.value))
  return mismatches, checked
