"""Plain settings of the detector families (Detectron's RPN / TRAIN / TEST / RETINANET keys).

Frozen dataclasses of numbers: builders and gin fill them, detectors read
them. R-CNN defaults are Detectron's FPN values; the C4 values differ only in
the proposal counts (`c4_rpn_settings`). RetinaNet defaults are Detectron's
(`RetinaNetSettings`), detectron2's are `retinanet_modern_settings`.
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
  """Detectron's C4 head settings: 14x14 RoIs into res5 (stride 2), 14x14 masks.

  RoIAlign samples adaptively there (FAST_RCNN.ROI_XFORM_SAMPLING_RATIO 0, Detectron's
  default, which its C4 configs keep; its FPN configs set 2).
  """
  values = dict(box_roi_size=14, mask_resolution=14, sampling_ratio=0)
  values.update(overrides)
  return RoiHeadSettings(**values)


@dataclasses.dataclass(frozen=True)
class KeypointSettings:
  """Keypoint R-CNN's RoIs, targets and loss (Detectron's KRCNN.* keys).

  Attributes:
    num_keypoints: KRCNN.NUM_KEYPOINTS (17).
    roi_size, sampling_ratio: KRCNN.ROI_XFORM_RESOLUTION (14) and _SAMPLING_RATIO (2).
    heatmap_size: KRCNN.HEATMAP_SIZE (56).
    rois_per_image: keypoint RoIs sampled per image (Detectron: the box
      sampling's foreground quota, round(0.25 * 512)).
    fg_thresh: TRAIN.FG_THRESH for keypoint RoIs (0.5).
    loss_weight: KRCNN.LOSS_WEIGHT.
    normalize_by_visible: KRCNN.NORMALIZE_BY_VISIBLE_KEYPOINTS: the loss is
      averaged over the visible keypoints; else its sum is divided by
      B * rois_per_image * num_keypoints.
    min_visible_keypoints: KRCNN.MIN_KEYPOINT_COUNT_FOR_VALID_MINIBATCH: with
      precomputed proposals, a batch with at most this many visible
      keypoints trains nothing (`rcnn_losses`).
  """
  num_keypoints: int = 17
  roi_size: int = 14
  sampling_ratio: int = 2
  heatmap_size: int = 56
  rois_per_image: int = 128
  fg_thresh: float = 0.5
  loss_weight: float = 1.0
  normalize_by_visible: bool = True
  min_visible_keypoints: int = 20


RETINANET_MATCHING = ("detectron", "modern")


@dataclasses.dataclass(frozen=True)
class RetinaNetSettings:
  """RetinaNet's anchor targets, losses and inference (Detectron's RETINANET.* and TEST.*).

  Attributes:
    positive_overlap, negative_overlap: IoU >= positive is foreground, <
      negative background, in between ignored.
    matching: how each ground-truth box's best anchors (ties included) are
      made foreground. "detectron" (roi_data/retinanet.py): they are labelled
      first and the background rule then overrides those under
      `negative_overlap`, but every one counts in the loss normalizer.
      "modern" (detectron2's Matcher with allow_low_quality_matches): they
      stay foreground whatever their IoU.
    focal_alpha, focal_gamma: sigmoid focal loss (LOSS_ALPHA, LOSS_GAMMA).
    prior_prob: the class logits' bias starts at -log((1 - p) / p).
    box_loss_beta: smooth-L1 beta (BBOX_REG_BETA; detectron2 0.1).
    box_loss_weight: BBOX_REG_WEIGHT.
    box_weights: the box coder's (wx, wy, ww, wh).
    loss_normalizer_momentum: None: both losses are divided by the batch's
      foreground anchors plus one per image (Detectron's retnet_fg_num); a
      momentum m: by an exponential moving average of the batch's
      foreground count (at least 1), starting at 100 (detectron2's
      loss_normalizer, m = 0.9).
    score_threshold: candidates per level score above it (INFERENCE_TH).
    top_level_score_threshold: None, or the threshold of the highest level
      instead (Detectron uses 0.0 on P7, so that tiny images still get
      candidates).
    pre_nms_top_n: candidates kept per level (PRE_NMS_TOP_N).
    nms_threshold: per-class NMS over the candidates of every level (TEST.NMS).
    detections_per_image: TEST.DETECTIONS_PER_IM.
  """
  positive_overlap: float = 0.5
  negative_overlap: float = 0.4
  matching: str = "detectron"
  focal_alpha: float = 0.25
  focal_gamma: float = 2.0
  prior_prob: float = 0.01
  box_loss_beta: float = 0.11
  box_loss_weight: float = 1.0
  box_weights: tuple = (1.0, 1.0, 1.0, 1.0)
  loss_normalizer_momentum: float | None = None
  score_threshold: float = 0.05
  top_level_score_threshold: float | None = 0.0
  pre_nms_top_n: int = 1000
  nms_threshold: float = 0.5
  detections_per_image: int = 100

  def __post_init__(self):
    if self.matching not in RETINANET_MATCHING:
      raise ValueError(f"matching must be one of {RETINANET_MATCHING}, got {self.matching!r}")


def retinanet_modern_settings(**overrides):
  """detectron2's RetinaNet: low-quality matches kept, beta 0.1, EMA normalizer, no P7 rule."""
  modern = RetinaNetSettings(matching="modern", box_loss_beta=0.1, loss_normalizer_momentum=0.9,
                             top_level_score_threshold=None)
  return dataclasses.replace(modern, **overrides)
