"""Plain settings of the R-CNN family (Detectron's RPN / TRAIN / TEST keys).

Frozen dataclasses of numbers: builders and gin fill them, detectors read
them. Defaults are Detectron's FPN values; the C4 values differ only in the
proposal counts (`c4_rpn_settings`).
"""

import dataclasses


@dataclasses.dataclass(frozen=True)
class RpnSettings:
  """Proposal generation (RPN_* of TRAIN / TEST) and anchor targets."""
  pre_nms_top_n_train: int = 2000
  post_nms_top_n_train: int = 2000
  collect_top_n_train: int = 2000
  collect_per_batch_train: bool = True  # Detectron's FPN training (its issue 459)
  pre_nms_top_n_test: int = 1000
  post_nms_top_n_test: int = 1000
  collect_top_n_test: int = 1000
  nms_threshold: float = 0.7
  min_size: float = 0.0
  batch_size_per_image: int = 256
  positive_fraction: float = 0.5
  positive_overlap: float = 0.7
  negative_overlap: float = 0.3
  straddle_thresh: float = 0.0
  box_loss_beta: float = 1.0 / 9.0


def c4_rpn_settings(**overrides):
  """Detectron's single-level (C4) proposal counts: 12000/2000 train, 6000/1000 test."""
  values = dict(pre_nms_top_n_train=12000, post_nms_top_n_train=2000, collect_top_n_train=2000,
                collect_per_batch_train=False, pre_nms_top_n_test=6000,
                post_nms_top_n_test=1000, collect_top_n_test=1000)
  values.update(overrides)
  return RpnSettings(**values)


@dataclasses.dataclass(frozen=True)
class RoiHeadSettings:
  """RoI sampling (TRAIN.*), RoI pooling, and test-time detection output."""
  batch_size_per_image: int = 512
  fg_fraction: float = 0.25
  fg_thresh: float = 0.5
  bg_thresh_hi: float = 0.5
  bg_thresh_lo: float = 0.0
  box_weights: tuple = (10.0, 10.0, 5.0, 5.0)
  box_loss_beta: float = 1.0
  class_agnostic_boxes: bool = False
  box_roi_size: int = 7
  mask_roi_size: int = 14
  mask_resolution: int = 28
  sampling_ratio: int = 2
  roi_min_level: int = 2
  roi_max_level: int = 5
  canonical_scale: float = 224.0
  canonical_level: int = 4
  score_threshold: float = 0.05
  nms_threshold: float = 0.5
  detections_per_image: int = 100
  # TEST.SOFT_NMS: None for hard NMS, else "linear" or "gaussian".
  soft_nms_method: str | None = None
  soft_nms_sigma: float = 0.5
  # TEST.BBOX_VOTE: off unless a threshold is given (Detectron: 0.8).
  box_voting_threshold: float | None = None
  box_voting_scoring: str = "ID"

  @property
  def max_fg_rois(self):
    """Foreground RoIs per image never exceed round(fg_fraction * batch)."""
    return int(round(self.fg_fraction * self.batch_size_per_image))


def c4_roi_settings(**overrides):
  """Detectron's C4 head settings: 14x14 RoIs into res5 (stride 2), 14x14 masks."""
  values = dict(box_roi_size=14, mask_resolution=14)
  values.update(overrides)
  return RoiHeadSettings(**values)
