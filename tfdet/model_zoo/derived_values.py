"""Quantities of a parsed gin configuration in Detectron's terms, for the key table.

Some Detectron keys are not one tfdet binding: SOLVER.BASE_LR is the LR the
linear scaling rule gives on NUM_GPUS replicas, MODEL.CONV_BODY names the trunk
and its body, MODEL.MASK_ON is the family the builder binds. `DERIVED` maps a
name used in `detectron_keys.MAPPED` to a function (Detectron config) -> value,
reading the parsed configuration through `gin_values.value`.
"""

from tfdet import gin_files
from tfdet.model_zoo import gin_values
from tfdet.training import schedules

M = "{model}"  # builders.build_rcnn or builders.build_retinanet (gin_values)
RCNN = "builders.build_rcnn"
RETINA = "builders.build_retinanet"
TRAIN_IN = "train/inputs.build_input"
EVAL_IN = "eval/pipeline.build_dataset"
RUN = "train.run"
TTA = "tta.TTAConfig"


def _solver(cfg):
  """The run's solver on Detectron's NUM_GPUS replicas (the linear scaling rule applied)."""
  v = gin_values.value
  solver = schedules.Solver(base_lr=v(f"{RUN}.base_lr"), max_iter=v(f"{RUN}.max_iter"),
                            steps=tuple(v(f"{RUN}.lr_steps")), gamma=v(f"{RUN}.gamma"),
                            warmup_iters=v(f"{RUN}.warmup_iters"),
                            warmup_factor=v(f"{RUN}.warmup_factor"),
                            batch_size=v(f"{RUN}.reference_batch_size"))
  global_batch = cfg["NUM_GPUS"] * v(f"{RUN}.images_per_replica")
  return schedules.scale_solver(solver, global_batch) if v(f"{RUN}.linear_scaling") else solver


def _heads():
  return gin_values.value(f"{RCNN}.heads")


def _is_retinanet():
  return gin_values.model_builder() == RETINA


def _use_fpn():
  return _is_retinanet() or gin_values.value(f"{RCNN}.use_fpn")


def _tta_on():
  # Detectron's TEST.BBOX_AUG.ENABLED: `python -m tfdet.evaluate` runs TTA unless told
  # --notta when the configuration binds tta.TTAConfig (gin_files.tta_configured).
  return gin_files.tta_configured() and gin_values.value(f"{TTA}.bbox_aug")


def _tta_stage(stage, name):
  """TTAConfig's `stage`_`name`, whose None means the box setting of the same name."""
  own = gin_values.value(f"{TTA}.{stage}_{name}")
  return gin_values.value(f"{TTA}.{name}") if own is None else own


def _fpn_levels(cfg):
  if _is_retinanet():
    return gin_values.value(f"{RETINA}.min_level"), gin_values.value(f"{RETINA}.max_level")
  return 2, gin_values.value(f"{RCNN}.rpn_max_level")  # Detectron's RPN starts at P2


# Quantities that are not one binding: name -> (Detectron config) -> value in Detectron's terms.
DERIVED = {
    "base_lr on NUM_GPUS replicas": lambda cfg: _solver(cfg).base_lr,
    "max_iter on NUM_GPUS replicas": lambda cfg: _solver(cfg).max_iter,
    "lr_steps on NUM_GPUS replicas": lambda cfg: (0, *_solver(cfg).steps),
    "conv body": lambda cfg: (
        f"FPN.add_fpn_ResNet{gin_values.value(M + '.depth')}_conv5_body" if _use_fpn()
        else f"ResNet.add_ResNet{gin_values.value(M + '.depth')}_conv4_body"),
    "is RetinaNet": lambda cfg: _is_retinanet(),
    "uses FPN": lambda cfg: _use_fpn(),
    "RPN only": lambda cfg: not _is_retinanet() and _heads() == "rpn",
    "RPN and RoI heads end to end": lambda cfg: (
        not _is_retinanet() and _heads() != "rpn"
        and gin_values.value(f"{RCNN}.proposals") == "rpn"),
    "reads precomputed proposals": lambda cfg: (
        not _is_retinanet() and gin_values.value(f"{RCNN}.proposals") == "precomputed"),
    "has masks": lambda cfg: not _is_retinanet() and _heads() == "mask",
    "has keypoints": lambda cfg: not _is_retinanet() and _heads() == "keypoint",
    "box head": lambda cfg: "2mlp" if _use_fpn() else "res5",
    "mask head": lambda cfg: "v1up4convs" if _use_fpn() else "v0upshare",
    "mask RoI size": lambda cfg: gin_values.value(
        f"{RCNN}.roi_settings.{'mask_roi_size' if _use_fpn() else 'box_roi_size'}"),
    "P6/P7 from convs on C5": lambda cfg: _is_retinanet(),
    "FPN min level": lambda cfg: _fpn_levels(cfg)[0],
    "FPN max level": lambda cfg: _fpn_levels(cfg)[1],
    "keypoint upsampling": lambda cfg: (
        gin_values.value(f"{RCNN}.keypoint_settings.heatmap_size")
        // (2 * gin_values.value(f"{RCNN}.keypoint_settings.roi_size"))),
    "test scale": lambda cfg: gin_values.value(f"{EVAL_IN}.scales")[-1],
    "flips in training": lambda cfg: gin_values.value(f"{TRAIN_IN}.flip_probability") > 0,
    "TTA on": lambda cfg: _tta_on(),
    "mask TTA on": lambda cfg: _tta_on() and gin_values.value(f"{TTA}.mask_aug"),
    "keypoint TTA on": lambda cfg: _tta_on() and gin_values.value(f"{TTA}.kps_aug"),
    "mask TTA h_flip": lambda cfg: _tta_stage("mask", "h_flip"),
    "mask TTA scales": lambda cfg: _tta_stage("mask", "scales"),
    "mask TTA max_size": lambda cfg: _tta_stage("mask", "max_size"),
    "mask TTA scale_h_flip": lambda cfg: _tta_stage("mask", "scale_h_flip"),
    "keypoint TTA h_flip": lambda cfg: _tta_stage("kps", "h_flip"),
    "keypoint TTA scales": lambda cfg: _tta_stage("kps", "scales"),
    "keypoint TTA max_size": lambda cfg: _tta_stage("kps", "max_size"),
    "keypoint TTA scale_h_flip": lambda cfg: _tta_stage("kps", "scale_h_flip"),
    "box voting on": lambda cfg: (
        gin_values.value(f"{RCNN}.roi_settings.box_voting_threshold") is not None),
    "soft NMS on": lambda cfg: (
        gin_values.value(f"{RCNN}.roi_settings.soft_nms_method") is not None),
    "detections per image": lambda cfg: gin_values.value(
        f"{RETINA}.settings.detections_per_image" if _is_retinanet()
        else f"{RCNN}.roi_settings.detections_per_image"),
    "test NMS": lambda cfg: gin_values.value(
        f"{RETINA}.settings.nms_threshold" if _is_retinanet()
        else f"{RCNN}.roi_settings.nms_threshold"),
}
