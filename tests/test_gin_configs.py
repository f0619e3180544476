"""Every shipped .gin file binds the settings it is written for (a table, one row per
file), and each file that describes a model builds it (tiny) and runs it."""

import inspect

import gin
import numpy as np
import pytest

from tfdet import gin_files
from tfdet.data import pipeline
from tfdet.modeling.detectors import builders, spec
from tfdet.modeling.detectors import outputs as out
from tfdet.training import inputs

TINY = ["builders.build_rcnn.stage_blocks = (1, 1, 1, 1)",
        "builders.build_rcnn.width_divisor = 2"]


@pytest.fixture(autouse=True)
def _clear_gin():
  gin.clear_config()
  yield
  gin.clear_config()


def test_there_are_gin_files():
  assert len(gin_files.shipped_gin_files()) >= 10


# ------------------------------------------------------------------ the table
# Settings shared by every R-CNN model file (models/rcnn_detectron.gin, R-50 by default).
DETECTRON = {
    "builders.build_rcnn.convention": "detectron",
    "builders.build_rcnn.sampling": "detectron",
    "builders.build_rcnn.aligned_roi": False,
    "builders.build_rcnn.num_classes": 81,
    "builders.build_rcnn.norm": "frozen_bn",
    "builders.build_rcnn.freeze_at": 2,
    "builders.build_rcnn.implementation": "custom",
    "builders.build_rcnn.depth": 50,
    "builders.build_rcnn.num_groups": 1,
    "builders.build_rcnn.width_per_group": 64,
    "builders.build_rcnn.stride_in_1x1": True,
    "train/inputs.build_input.convention": "detectron",
    "eval/pipeline.build_dataset.convention": "detectron",
}
# Detectron's FPN numbers (RPN 2000 / 1000 proposals, 7x7 box RoIs, 28x28 masks), inputs
# padded to a multiple of 32 (FPN.COARSEST_STRIDE).
FPN = {
    "builders.build_rcnn.use_fpn": True,
    "builders.build_rcnn.rpn_settings.pre_nms_top_n_train": 2000,
    "builders.build_rcnn.rpn_settings.post_nms_top_n_train": 2000,
    "builders.build_rcnn.rpn_settings.pre_nms_top_n_test": 1000,
    "builders.build_rcnn.rpn_settings.post_nms_top_n_test": 1000,
    "builders.build_rcnn.roi_settings.box_roi_size": 7,
    "builders.build_rcnn.roi_settings.mask_resolution": 28,
    "builders.build_rcnn.roi_settings.sampling_ratio": 2,
    "eval/pipeline.build_dataset.size_divisibility": 32,
    "train/inputs.build_input.size_divisibility": 32,
}
# Detectron's C4 numbers (12000 / 2000 train and 6000 / 1000 test proposals, 14x14 box
# RoIs into res5, 14x14 masks), inputs padded to the batch's largest image only.
C4 = {
    "builders.build_rcnn.use_fpn": False,
    "builders.build_rcnn.rpn_settings.pre_nms_top_n_train": 12000,
    "builders.build_rcnn.rpn_settings.post_nms_top_n_train": 2000,
    "builders.build_rcnn.rpn_settings.pre_nms_top_n_test": 6000,
    "builders.build_rcnn.rpn_settings.post_nms_top_n_test": 1000,
    "builders.build_rcnn.roi_settings.box_roi_size": 14,
    "builders.build_rcnn.roi_settings.mask_resolution": 14,
    "builders.build_rcnn.roi_settings.sampling_ratio": 0,  # adaptive, Detectron's default
    "eval/pipeline.build_dataset.size_divisibility": 1,
    "train/inputs.build_input.size_divisibility": 1,
}


def _model(heads, body):
  return {"builders.build_rcnn.heads": heads, **DETECTRON, **(FPN if body == "fpn" else C4)}


# Detectron's two-stage recipe: no RPN, the shards' proposals (TRAIN / TEST.PROPOSAL_LIMIT).
PRECOMPUTED = {
    "builders.build_rcnn.proposals": "precomputed",
    "train/inputs.build_input.with_proposals": True,
    "train/inputs.build_input.max_proposals": 2000,
    "eval/pipeline.build_dataset.with_proposals": True,
    "eval/pipeline.build_dataset.max_proposals": 1000,
}
# Detectron's e2e_keypoint_rcnn_R-50-FPN (KRCNN.*): person only, 8 convs of 512 on 14x14
# RoIs, 56x56 heatmaps, training on images with a visible keypoint.
KEYPOINT = {
    **_model("keypoint", "fpn"),
    "builders.build_rcnn.num_classes": 2,
    "builders.build_rcnn.keypoint_num_convs": 8,
    "builders.build_rcnn.keypoint_conv_dim": 512,
    "builders.build_rcnn.keypoint_settings.num_keypoints": 17,
    "builders.build_rcnn.keypoint_settings.roi_size": 14,
    "builders.build_rcnn.keypoint_settings.sampling_ratio": 2,
    "builders.build_rcnn.keypoint_settings.heatmap_size": 56,
    "builders.build_rcnn.keypoint_settings.rois_per_image": 128,
    "builders.build_rcnn.keypoint_settings.fg_thresh": 0.5,
    "builders.build_rcnn.keypoint_settings.loss_weight": 1.0,
    "builders.build_rcnn.keypoint_settings.normalize_by_visible": True,
    "builders.build_rcnn.keypoint_settings.min_visible_keypoints": 20,
    "train/inputs.build_input.keypoints_only": True,
}


def _backbone(depth, groups, width, stride_in_1x1):
  return {"builders.build_rcnn.depth": depth, "builders.build_rcnn.num_groups": groups,
          "builders.build_rcnn.width_per_group": width,
          "builders.build_rcnn.stride_in_1x1": stride_in_1x1}


def _schedule(max_iter, lr_steps):
  return {"train.run.max_iter": max_iter, "train.run.lr_steps": lr_steps}


# Detectron's rpn_* rows write 2000 proposals per test image for the two-stage rows (C4:
# the best 12000 anchors before NMS).
RPN_FPN_TEST = {"builders.build_rcnn.rpn_settings.post_nms_top_n_test": 2000,
                "builders.build_rcnn.rpn_settings.collect_top_n_test": 2000}
RPN_C4_TEST = {"builders.build_rcnn.rpn_settings.pre_nms_top_n_test": 12000,
               "builders.build_rcnn.rpn_settings.post_nms_top_n_test": 2000,
               "builders.build_rcnn.rpn_settings.collect_top_n_test": 2000}


# RetinaNet (Detectron's retinanet_R-50-FPN): P3..P7, 9 anchors per position, focal loss,
# inputs padded to a multiple of 128 (P7's stride).
RETINANET = {
    "builders.build_retinanet.convention": "detectron",
    "builders.build_retinanet.num_classes": 81,
    "builders.build_retinanet.norm": "frozen_bn",
    "builders.build_retinanet.freeze_at": 2,
    "builders.build_retinanet.fpn_channels": 256,
    "builders.build_retinanet.min_level": 3,
    "builders.build_retinanet.max_level": 7,
    "builders.build_retinanet.anchor_scale": 4.0,
    "builders.build_retinanet.scales_per_octave": 3,
    "builders.build_retinanet.anchor_ratios": (1.0, 2.0, 0.5),
    "builders.build_retinanet.num_convs": 4,
    "builders.build_retinanet.depth": 50,
    "builders.build_retinanet.num_groups": 1,
    "builders.build_retinanet.width_per_group": 64,
    "builders.build_retinanet.stride_in_1x1": True,
    "builders.build_retinanet.settings.positive_overlap": 0.5,
    "builders.build_retinanet.settings.negative_overlap": 0.4,
    "builders.build_retinanet.settings.matching": "detectron",
    "builders.build_retinanet.settings.focal_alpha": 0.25,
    "builders.build_retinanet.settings.focal_gamma": 2.0,
    "builders.build_retinanet.settings.prior_prob": 0.01,
    "builders.build_retinanet.settings.box_loss_beta": 0.11,
    "builders.build_retinanet.settings.loss_normalizer_momentum": None,
    "builders.build_retinanet.settings.top_level_score_threshold": 0.0,
    "builders.build_retinanet.settings.score_threshold": 0.05,
    "builders.build_retinanet.settings.pre_nms_top_n": 1000,
    "builders.build_retinanet.settings.nms_threshold": 0.5,
    "builders.build_retinanet.settings.detections_per_image": 100,
    "train/inputs.build_input.convention": "detectron",
    "train/inputs.build_input.size_divisibility": 128,
    "eval/pipeline.build_dataset.convention": "detectron",
    "eval/pipeline.build_dataset.size_divisibility": 128,
}

RCNN = "builders.build_rcnn"
RETINA = "builders.build_retinanet"

# path under gin_configs/ -> (files parsed before it, expected settings, the model it
# builds: (builder, heads, use_fpn), or None for a file that describes no model). A
# fragment (backbone, convention, TTA, input file) is parsed over the model file it
# completes.
MASK_FPN = ("models/mask_rcnn_fpn.gin",)
SETTINGS = {
    "backbones/R-50.gin": (MASK_FPN, _backbone(50, 1, 64, True), (RCNN, "mask", True)),
    "backbones/R-101.gin": (MASK_FPN, _backbone(101, 1, 64, True), (RCNN, "mask", True)),
    "backbones/X-101-32x8d.gin": (MASK_FPN, _backbone(101, 32, 8, False), (RCNN, "mask", True)),
    "backbones/X-101-64x4d.gin": (MASK_FPN, _backbone(101, 64, 4, False), (RCNN, "mask", True)),
    "backbones/X-152-32x8d.gin": (MASK_FPN, _backbone(152, 32, 8, False), (RCNN, "mask", True)),
    # The input pipelines follow the model's convention and canvas multiple (C4's: 1).
    "data/inputs.gin": (("models/faster_rcnn_c4.gin",), {
        "train.run.train_input": inputs.build_input,
        "train/inputs.build_input.mode": "train",
        "train/inputs.build_input.convention": "detectron",
        "train/inputs.build_input.size_divisibility": 1,
        "eval/pipeline.build_dataset.convention": "detectron",
        "eval/pipeline.build_dataset.size_divisibility": 1,
    }, (RCNN, "faster", False)),
    # Detectron's TTA row (e2e_mask_rcnn_X-152-32x8d-FPN-IN5k_1.44x): TEST.BBOX_AUG,
    # TEST.MASK_AUG and TEST.BBOX_VOTE at 0.9, which reaches the model's settings.
    "evaluation/detectron_tta.gin": (MASK_FPN, {
        "tta.TTAConfig.bbox_aug": True,
        "tta.TTAConfig.h_flip": True,
        "tta.TTAConfig.scales": (400, 500, 600, 700, 900, 1000, 1100, 1200),
        "tta.TTAConfig.max_size": 2000,
        "tta.TTAConfig.scale_h_flip": True,
        "tta.TTAConfig.score_heur": "UNION",
        "tta.TTAConfig.coord_heur": "UNION",
        "tta.TTAConfig.mask_aug": True,
        "tta.TTAConfig.mask_heur": "SOFT_AVG",
        "tta.TTAConfig.kps_aug": False,
        "builders.build_rcnn.roi_settings.box_voting_threshold": 0.9,
        "builders.build_rcnn.roi_settings.box_voting_scoring": "ID",
    }, (RCNN, "mask", True)),
    # Multi-scale training jitter (Detectron's keypoint rows), over the solver's 800.
    "data/train_scales_640-800.gin": (
        ("models/keypoint_rcnn_fpn.gin", "training/detectron_solver.gin"),
        {"train/inputs.build_input.scales": (640, 672, 704, 736, 768, 800),
         "train/inputs.build_input.max_size": 1333}, None),
    "models/fast_rcnn_c4.gin": ((), {**_model("faster", "c4"), **PRECOMPUTED},
                                (RCNN, "faster", False)),
    "models/fast_rcnn_fpn.gin": ((), {**_model("faster", "fpn"), **PRECOMPUTED},
                                 (RCNN, "faster", True)),
    "models/keypoint_rcnn_fpn.gin": ((), KEYPOINT, (RCNN, "keypoint", True)),
    # Over a model file: Mask R-CNN's two-stage rows (mask_rcnn_*), and keypoint_rcnn_*.
    "models/precomputed_proposals.gin": (MASK_FPN, {**_model("mask", "fpn"), **PRECOMPUTED},
                                         (RCNN, "mask", True)),
    "models/faster_rcnn_c4.gin": ((), _model("faster", "c4"), (RCNN, "faster", False)),
    "models/faster_rcnn_fpn.gin": ((), _model("faster", "fpn"), (RCNN, "faster", True)),
    "models/mask_rcnn_c4.gin": ((), _model("mask", "c4"), (RCNN, "mask", False)),
    "models/mask_rcnn_fpn.gin": ((), _model("mask", "fpn"), (RCNN, "mask", True)),
    "models/retinanet.gin": ((), RETINANET, (RETINA, "retinanet", True)),
    # detectron2's RetinaNet over the model file, the input pipelines included.
    "models/retinanet_modern.gin": (("models/retinanet.gin",), {
        "builders.build_retinanet.convention": "modern",
        "builders.build_retinanet.anchor_ratios": (0.5, 1.0, 2.0),
        "builders.build_retinanet.settings.matching": "modern",
        "builders.build_retinanet.settings.box_loss_beta": 0.1,
        "builders.build_retinanet.settings.loss_normalizer_momentum": 0.9,
        "builders.build_retinanet.settings.top_level_score_threshold": None,
        "train/inputs.build_input.convention": "modern",
        "eval/pipeline.build_dataset.convention": "modern",
    }, (RETINA, "retinanet", True)),
    "models/rpn_c4.gin": ((), {**_model("rpn", "c4"), **RPN_C4_TEST}, (RCNN, "rpn", False)),
    "models/rpn_fpn.gin": ((), {**_model("rpn", "fpn"), **RPN_FPN_TEST}, (RCNN, "rpn", True)),
    # rpn_person_only_*: the same RPN, on the keypoint rows' (person-only) data.
    "models/rpn_person_only_fpn.gin": ((), {**_model("rpn", "fpn"), **RPN_FPN_TEST,
                                            "builders.build_rcnn.num_classes": 2},
                                       (RCNN, "rpn", True)),
    # On its own: the conventions, and build_rcnn's defaults (Mask R-CNN, FPN).
    "models/rcnn_detectron.gin": ((), DETECTRON, (RCNN, "mask", True)),
    # detectron2's conventions over a model file, the input pipelines included.
    "models/rcnn_modern.gin": (("models/faster_rcnn_fpn.gin",), {
        "builders.build_rcnn.heads": "faster",
        "builders.build_rcnn.convention": "modern",
        "builders.build_rcnn.sampling": "modern",
        "builders.build_rcnn.aligned_roi": True,
        "train/inputs.build_input.convention": "modern",
        "eval/pipeline.build_dataset.convention": "modern",
    }, (RCNN, "faster", True)),
    "quickstart/mask_rcnn_tiny_fpn.gin": ((), {
        "builders.build_rcnn.heads": "mask",
        "builders.build_rcnn.use_fpn": True,
        "builders.build_rcnn.num_classes": 8,
        "builders.build_rcnn.stage_blocks": (1, 1, 1, 1),
        "builders.build_rcnn.width_divisor": 4,
        "builders.build_rcnn.norm": "bn",
        "builders.build_rcnn.freeze_at": 0,
        "builders.build_rcnn.fpn_channels": 48,
        "builders.build_rcnn.mlp_dim": 256,
        "builders.build_rcnn.mask_num_convs": 2,
        "builders.build_rcnn.mask_conv_dim": 32,
        "builders.build_rcnn.rpn_settings.pre_nms_top_n_train": 1000,
        "builders.build_rcnn.rpn_settings.post_nms_top_n_train": 500,
        "builders.build_rcnn.rpn_settings.pre_nms_top_n_test": 500,
        "builders.build_rcnn.rpn_settings.post_nms_top_n_test": 200,
        "builders.build_rcnn.rpn_settings.batch_size_per_image": 128,
        "builders.build_rcnn.roi_settings.batch_size_per_image": 64,
        "builders.build_rcnn.roi_settings.detections_per_image": 50,
        **_schedule(2500, (2180,)),
        "train.run.warmup_iters": 100,
        "train.run.images_per_replica": 4,
        "train.run.linear_scaling": False,
        "train.run.momentum": 0.9,  # Detectron's solver otherwise
        "train.run.checkpoint_interval": 100,
        "train/inputs.build_input.scales": (192,),
        "train/inputs.build_input.max_size": 320,
        "train/inputs.build_input.max_instances": 8,
        "train/inputs.build_input.max_polygon_vertices": 192,
        "eval/pipeline.build_dataset.scales": (192,),
        "eval/pipeline.build_dataset.max_size": 320,
    }, (RCNN, "mask", True)),
    "quickstart/retinanet_tiny.gin": ((), {
        "builders.build_retinanet.num_classes": 8,
        "builders.build_retinanet.stage_blocks": (1, 1, 1, 1),
        "builders.build_retinanet.width_divisor": 4,
        "builders.build_retinanet.norm": "bn",
        "builders.build_retinanet.freeze_at": 0,
        "builders.build_retinanet.fpn_channels": 48,
        "builders.build_retinanet.num_convs": 2,
        "builders.build_retinanet.settings.detections_per_image": 50,
        "train.run.base_lr": 0.01,
        "train.run.max_iter": 2500,
        "train.run.lr_steps": (2180,),
        "train.run.warmup_iters": 100,
        "train.run.images_per_replica": 4,
        "train.run.linear_scaling": False,
        "train.run.momentum": 0.9,
        "train/inputs.build_input.scales": (192,),
        "train/inputs.build_input.max_size": 320,
        "train/inputs.build_input.max_instances": 8,
        "train/inputs.build_input.max_polygon_vertices": 8,
        "train/inputs.build_input.size_divisibility": 128,
        "eval/pipeline.build_dataset.scales": (192,),
        "eval/pipeline.build_dataset.max_size": 320,
        "eval/pipeline.build_dataset.size_divisibility": 128,
    }, (RETINA, "retinanet", True)),
    # Detectron's solver: the 1x schedule, warm-up, SGD and its bias rule, 800 x 1333.
    "training/detectron_solver.gin": ((), {
        "train.run.base_lr": 0.02,
        **_schedule(90000, (60000, 80000)),
        "train.run.gamma": 0.1,
        "train.run.warmup_iters": 500,
        "train.run.warmup_factor": 1.0 / 3.0,
        "train.run.reference_batch_size": 16,
        "train.run.images_per_replica": 2,
        "train.run.linear_scaling": True,
        "train.run.momentum": 0.9,
        "train.run.weight_decay": 1e-4,
        "train.run.weight_decay_norm": 0.0,
        "train.run.bias_lr_factor": 2.0,
        "train.run.bias_weight_decay": 0.0,
        "train.run.mixed_precision": None,
        "train/inputs.build_input.scales": (800,),
        "train/inputs.build_input.max_size": 1333,
    }, None),
    # RetinaNet's: the same at half the LR (Detectron's retinanet configs: BASE_LR 0.01).
    "training/retinanet_solver.gin": ((), {
        "train.run.base_lr": 0.01,
        "train.run.max_iter": 90000,
        "train.run.lr_steps": (60000, 80000),
        "train.run.warmup_iters": 500,
        "train.run.momentum": 0.9,
    }, None),
    # Detectron's 8-image rows: one image per replica, the solver's 16-image numbers.
    "training/images_per_gpu_1.gin": (("training/detectron_solver.gin",), {
        "train.run.images_per_replica": 1, "train.run.base_lr": 0.02,
        "train.run.reference_batch_size": 16, "train.run.linear_scaling": True}, None),
    "training/schedule_1x.gin": ((), _schedule(90000, (60000, 80000)), None),
    "training/schedule_2x.gin": ((), _schedule(180000, (120000, 160000)), None),
    "training/schedule_s1x.gin": ((), _schedule(130000, (100000, 120000)), None),
}


def _relative(path):
  return path.split("gin_configs/")[-1]


def _bound(selector):
  """The value gin binds for "[scope/]module.function.parameter[.attribute...]"."""
  scope, _, name = selector.rpartition("/")
  module, function, parameter, *attributes = name.split(".")
  with gin.config_scope(scope or None):
    bound = gin.get_bindings(f"{module}.{function}")
  assert parameter in bound, f"{selector} is not bound"
  value = bound[parameter]
  for attribute in attributes:
    value = getattr(value, attribute)
  return value


def test_every_shipped_gin_file_has_a_row():
  # A new config needs a row in SETTINGS (what it must bind), a removed one loses its row.
  # The model zoo's rows (12_2017_baselines/) are checked against Detectron's configs by
  # tests/model_zoo/test_detectron_configs.py.
  shipped = [_relative(p) for p in gin_files.shipped_gin_files()]
  assert sorted(p for p in shipped if not p.startswith("12_2017_baselines/")) == sorted(SETTINGS)


@pytest.mark.parametrize("path", sorted(SETTINGS))
def test_every_gin_file_binds_its_settings(path):
  bases, expected, _ = SETTINGS[path]
  gin_files.parse([*bases, path])
  for selector, value in expected.items():
    got = _bound(selector)
    if callable(value):  # a @reference: gin hands over its configurable wrapper
      got = inspect.unwrap(got)
      assert got is value, (selector, got, value)
    else:
      assert got == value and type(got) is type(value), (selector, got, value)


@pytest.mark.parametrize("path", sorted(p for p, row in SETTINGS.items() if row[2]))
def test_every_model_config_builds_and_runs(path):
  bases, expected, (builder, heads, use_fpn) = SETTINGS[path]
  # Tiny: one block per stage at a quarter width (X-101-64x4d's 64 groups keep a channel
  # each), narrow FPN and heads (the keypoint head 32 wide), and C4's res5 head on 100
  # test proposals instead of 1000; the quickstarts' models are small already and are
  # built as shipped.
  tiny = []
  if not path.startswith("quickstart/"):
    tiny = [f"{builder}.{name} = {value}" for name, value in (
        ("stage_blocks", (1, 1, 1, 1)), ("width_divisor", 4), ("fpn_channels", 32))]
  if builder == RCNN and not path.startswith("quickstart/"):
    tiny += [f"{RCNN}.mlp_dim = 64", f"{RCNN}.mask_conv_dim = 32",
             f"{RCNN}.keypoint_conv_dim = 32"]
  if not use_fpn:
    tiny += ["config.c4_rpn_settings.post_nms_top_n_test = 100",
             "config.c4_rpn_settings.collect_top_n_test = 100"]
  gin_files.parse([*bases, path], tiny)
  model = gin.get_configurable(builder)()
  bound = gin.get_bindings(builder)
  assert model.convention == bound.get("convention", "detectron")
  assert model.backbone.get_layer("res2_0_branch2b").groups == bound.get("num_groups", 1)
  divisor = gin_files.bindings(pipeline.build_dataset, scope="eval").get("size_divisibility", 1)
  precomputed = bound.get("proposals", "rpn") == "precomputed"
  outputs = model(spec.dummy_batch(max(64, divisor)), training=False)
  assert (out.PROPOSALS in outputs) == (builder == RCNN)
  assert (out.DETECTION_BOXES in outputs) == (heads != "rpn")
  assert (out.DETECTION_MASKS in outputs) == (heads == "mask")
  assert (out.DETECTION_KEYPOINTS in outputs) == (heads == "keypoint")
  if heads != "rpn":
    n = int(outputs[out.NUM_DETECTIONS][0])
    assert np.isfinite(outputs[out.DETECTION_BOXES].numpy()[0, :n]).all()
  if builder != RCNN:
    return
  assert model.sampling == bound.get("sampling", "detectron")
  assert model.aligned_roi == bound.get("aligned_roi", False)
  assert (model.rpn_head is None) == precomputed == model.reads_precomputed_proposals
  assert (len(model.rpn_levels), model.num_classes) == (
      0 if precomputed else 5 if use_fpn else 1, bound.get("num_classes", 81))
  if "roi_settings" in bound:  # an RPN-only model has no RoI head to take them
    assert model.roi_settings == (None if heads == "rpn" else bound["roi_settings"])
  if not use_fpn and not precomputed:
    # C4's (the rpn_* row's 12000), with 100 kept (above)
    assert model.rpn_settings.pre_nms_top_n_test == (12000 if heads == "rpn" else 6000)
    assert model.rpn_settings.post_nms_top_n_test == 100
  for selector, value in expected.items():
    if selector.startswith(f"{RCNN}.roi_settings.") and heads != "rpn":
      assert getattr(model.roi_settings, selector.split(".")[-1]) == value, selector
  if heads == "mask":
    m = model.roi_settings.mask_resolution
    assert outputs[out.DETECTION_MASKS].shape[2:] == (m, m) == ((28, 28) if use_fpn else (14, 14))
  if heads == "keypoint":
    assert model.keypoint.settings == bound["keypoint_settings"]
    assert outputs[out.DETECTION_KEYPOINTS].shape[2:] == (17, 3)
    heatmaps = model.keypoint_heatmaps(spec.dummy_batch(max(64, divisor)),
                                       outputs[out.DETECTION_BOXES])
    assert heatmaps.shape[2:] == (56, 56, 17)


# ------------------------------------------------------------- other behaviour
@pytest.mark.parametrize("heads,body,expect_fpn", [
    ("rpn", "fpn", True), ("faster", "c4", False), ("mask", "fpn", True), ("mask", "c4", False),
])
def test_model_files_build_what_they_name(heads, body, expect_fpn):
  gin_files.parse([f"models/{heads}_{body}.gin" if heads == "rpn" else
                   f"models/{heads}_rcnn_{body}.gin", "backbones/X-101-64x4d.gin"], TINY)
  model = gin.get_configurable(builders.build_rcnn)()
  assert (model.box_head is None) == (heads == "rpn")
  assert (model.mask_head is None) == (heads != "mask")
  assert (len(model.rpn_levels) == 5) == expect_fpn
  assert model.backbone.get_layer("res2_0_branch2b").groups == 64
  assert model.convention == "detectron" and not model.aligned_roi
  if not expect_fpn:
    assert model.rpn_settings.pre_nms_top_n_train == 12000
    assert model.roi_settings.box_roi_size == 14


def test_modern_switches_conventions():
  gin_files.parse(["models/faster_rcnn_fpn.gin", "models/rcnn_modern.gin"], TINY)
  model = gin.get_configurable(builders.build_rcnn)()
  assert model.convention == "modern" and model.sampling == "modern" and model.aligned_roi


def test_bad_binding_names_it():
  with pytest.raises(ValueError, match="no_such_parameter"):
    gin_files.parse(["models/mask_rcnn_fpn.gin"],
                    ["builders.build_rcnn.no_such_parameter = 3"])


def test_missing_file_is_named():
  with pytest.raises(FileNotFoundError, match="nope.gin"):
    gin_files.parse(["models/nope.gin"])


def test_unregistered_function_is_called_plainly():
  def never_registered(value=1):
    return value

  gin_files.parse(["models/mask_rcnn_fpn.gin"])
  assert gin_files.configurable(never_registered) is never_registered
  assert gin_files.bindings(never_registered, scope="eval") == {}
  assert gin_files.configurable(builders.build_rcnn) is not builders.build_rcnn
  # A file that binds no input pipeline leaves the pipeline's own defaults. (Another
  # test's file may have registered it: registration outlives gin.clear_config.)
  gin.clear_config()
  gin_files.parse(["training/schedule_1x.gin"])
  assert gin_files.bindings(pipeline.build_dataset, scope="eval") == {}


def test_eval_preprocessing_follows_the_eval_bindings():
  gin_files.parse(["models/mask_rcnn_fpn.gin"])
  # TEST.SCALE, TEST.MAX_SIZE; FPN.COARSEST_STRIDE
  assert gin_files.eval_preprocessing() == {"scale": 800, "max_size": 1333,
                                            "size_divisibility": 32}
  gin.clear_config()
  gin_files.parse(["models/mask_rcnn_c4.gin"])
  assert gin_files.eval_preprocessing()["size_divisibility"] == 1
  gin.clear_config()
  gin_files.parse(["quickstart/mask_rcnn_tiny_fpn.gin"], ["SCALES = (128, 160)", "MAX_SIZE = 256"])
  assert gin_files.eval_preprocessing() == {"scale": 160, "max_size": 256,
                                            "size_divisibility": 32}
  gin.clear_config()
  gin_files.parse(["quickstart/mask_rcnn_tiny_fpn.gin"])
  assert gin_files.eval_preprocessing(max_size=None, scale=100) == {
      "scale": 100, "max_size": 320, "size_divisibility": 32}
