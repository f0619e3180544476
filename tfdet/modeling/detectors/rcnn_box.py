"""The R-CNN's box part: RoI sampling and box targets, the box head, its loss, and inference
to detections.

Training: the RoIs the head runs on are sampled from the proposals and the
ground truth (`tfdet.ops.roi_sampling`: labels and box targets are assigned
there, in the forward pass, because they decide what the head sees); the
outputs carry the sampled RoIs, their targets and the head's outputs, and
`losses` needs nothing else. Inference: the head on every proposal, boxes
decoded per class into original-image pixels (Detectron decodes
``rois / im_scale``) and clipped (`candidates`), then Detectron's per-class
NMS, score threshold and detection limit (`postprocess`).
"""

from typing import NamedTuple

import keras
import tensorflow as tf

from tfdet.data import keys
from tfdet.modeling import losses
from tfdet.modeling.detectors import outputs as out
from tfdet.modeling.detectors.config import RoiHeadSettings
from tfdet.modeling.heads.box_heads import RES5_FEATURES
from tfdet.ops import boxes as box_ops
from tfdet.ops import multiclass_nms, roi_sampling

BOX_CLS_LOSS = "loss_cls"
BOX_REG_LOSS = "loss_bbox"


class BoxCandidates(NamedTuple):
  """Inference before NMS: P proposals, C = K + 1 classes.

  Attributes:
    proposals: [B, P, 4] float32 proposals in resized-image pixels.
    proposal_scores: [B, P] float32 objectness probabilities.
    num_proposals: [B] int32 valid proposals (they come first).
    boxes: [B, P, C, 4] float32 class-specific boxes decoded from each
      proposal, clipped, in original-image pixels ([B, P, 4] with
      class-agnostic box regression).
    scores: [B, P, C] float32 softmax class probabilities, background first.
    valid: [B, P] bool, False for padding rows.
  """
  proposals: tf.Tensor
  proposal_scores: tf.Tensor
  num_proposals: tf.Tensor
  boxes: tf.Tensor
  scores: tf.Tensor
  valid: tf.Tensor


class BoxPart(keras.layers.Layer):
  """The box RoI head (module docstring).

  Args:
    head: a box-head model (`box_heads.build_mlp_box_head` or
      `build_res5_box_head`): [R, S, S, C] pooled features -> CLASS_LOGITS,
      BOX_DELTAS (and RES5_FEATURES for the res5 head).
    pooler: the model's `RoiPooler`.
    settings: `RoiHeadSettings`.
    convention: box convention.
    sampling: "detectron" or "modern" RoI sampling (`roi_sampling`).
  """

  def __init__(self, *, head, pooler, settings=None, convention="detectron",
               sampling="detectron", name="box", **kwargs):
    super().__init__(name=name, **kwargs)
    self.head = head
    self.pooler = pooler
    self.settings = settings or RoiHeadSettings()
    self.convention = convention
    self.sampling = sampling
    self.built = True

  def run_head(self, features, rois, training=False):
    """(class logits [B, R, K+1], deltas [B, R, 4(K+1)], res5 features or None) of RoIs."""
    batch = tf.shape(rois)[0]
    r = tf.shape(rois)[1]
    pooled = self.pooler(features, rois, output_size=self.settings.box_roi_size,
                         sampling_ratio=self.settings.sampling_ratio)
    head = self.head(pooled, training=training)
    # Static last dims (not -1): multiclass NMS needs a static class count in graphs. Float32
    # whatever the head computes in (mixed precision): decoding, NMS and losses need it.
    logits = tf.reshape(tf.cast(head[out.CLASS_LOGITS], tf.float32),
                        [batch, r, head[out.CLASS_LOGITS].shape[-1]])
    deltas = tf.reshape(tf.cast(head[out.BOX_DELTAS], tf.float32),
                        [batch, r, head[out.BOX_DELTAS].shape[-1]])
    return logits, deltas, head.get(RES5_FEATURES)

  def train(self, features, proposals, num_proposals, batch, image_info):
    """Samples RoIs and runs the head on them.

    Returns:
      (outputs dict: SAMPLED_ROIS, ROI_LABELS, ROI_BOX_TARGETS, ROI_VALID,
      CLASS_LOGITS, BOX_DELTAS; the `roi_sampling.SampledRois`; the res5
      features [B * R, ...] of the sampled RoIs or None).
    """
    s = self.settings
    valid = tf.range(tf.shape(proposals)[1])[None, :] < num_proposals[:, None]
    sampled = roi_sampling.sample_rois(
        proposals, valid, batch[keys.GT_BOXES], batch[keys.GT_CLASSES], batch[keys.GT_VALID],
        batch[keys.GT_IS_CROWD], image_info[:, 2], convention=self.convention,
        mode=self.sampling, batch_size_per_image=s.batch_size_per_image,
        fg_fraction=s.fg_fraction, fg_thresh=s.fg_thresh, bg_thresh_hi=s.bg_thresh_hi,
        bg_thresh_lo=s.bg_thresh_lo, box_weights=s.box_weights)
    class_logits, box_deltas, res5 = self.run_head(features, sampled.rois, training=True)
    result = {
        out.SAMPLED_ROIS: sampled.rois, out.ROI_LABELS: sampled.labels,
        out.ROI_BOX_TARGETS: sampled.box_targets, out.ROI_VALID: sampled.valid,
        out.CLASS_LOGITS: class_logits, out.BOX_DELTAS: box_deltas,
    }
    return result, sampled, res5

  def candidates(self, features, proposals, num_proposals, image_info):
    """The head on the proposals: (boxes, scores, valid) of `BoxCandidates`."""
    s = self.settings
    class_logits, box_deltas, _ = self.run_head(features, proposals, training=False)
    scores = tf.nn.softmax(class_logits, axis=-1)  # [B, R, K+1]
    scale = image_info[:, 2][:, None, None]
    shape = tf.shape(box_deltas)
    per_class = tf.reshape(box_deltas, [shape[0], shape[1], -1, 4])  # [B, R, K+1 or 2, 4]
    boxes = box_ops.decode(per_class, (proposals / scale)[:, :, None, :],
                           weights=s.box_weights, convention=self.convention)
    original_size = image_info[:, 3:5][:, None, None, :]
    boxes = box_ops.clip_to_image(boxes, original_size, convention=self.convention)
    valid = tf.range(tf.shape(proposals)[1])[None, :] < num_proposals[:, None]
    if s.class_agnostic_boxes:
      boxes = boxes[:, :, 1]
    return boxes, scores, valid

  def postprocess(self, boxes, scores, valid=None):
    """Detectron's per-class NMS, score threshold and detection limit, as the settings say.

    Soft-NMS and box voting (TEST.SOFT_NMS, TEST.BBOX_VOTE) apply when the
    settings enable them.

    Args:
      boxes: [B, N, K+1, 4] float32 class-specific boxes in original-image
        pixels, or [B, N, 4] with class-agnostic boxes (`BoxCandidates.boxes`).
      scores: [B, N, K+1] float32 class probabilities; N static for box voting
        with rescoring.
      valid: optional [B, N] bool, False for padding rows.

    Returns:
      dict of out.DETECTION_BOXES [B, D, 4], DETECTION_SCORES [B, D],
      DETECTION_CLASSES [B, D] and NUM_DETECTIONS [B].
    """
    s = self.settings
    soft = None if s.soft_nms_method is None else multiclass_nms.SoftNMSOptions(
        method=s.soft_nms_method, sigma=s.soft_nms_sigma)
    voting = None if s.box_voting_threshold is None else multiclass_nms.BoxVotingOptions(
        iou_threshold=s.box_voting_threshold, scoring_method=s.box_voting_scoring)
    dets = multiclass_nms.multiclass_nms(
        boxes, scores, score_threshold=s.score_threshold, iou_threshold=s.nms_threshold,
        max_detections=s.detections_per_image, convention=self.convention, soft_nms=soft,
        box_voting=voting, class_agnostic_boxes=s.class_agnostic_boxes, valid=valid)
    return {out.DETECTION_BOXES: dets.boxes, out.DETECTION_SCORES: dets.scores,
            out.DETECTION_CLASSES: dets.classes, out.NUM_DETECTIONS: dets.num}

  def losses(self, outputs):
    """Softmax classification and smooth-L1 box losses of the sampled RoIs."""
    s = self.settings
    cls_loss, box_loss = losses.fast_rcnn_losses(
        outputs[out.CLASS_LOGITS], outputs[out.BOX_DELTAS], outputs[out.ROI_LABELS],
        outputs[out.ROI_BOX_TARGETS], outputs[out.ROI_VALID], beta=s.box_loss_beta,
        class_agnostic=s.class_agnostic_boxes)
    return {BOX_CLS_LOSS: cls_loss, BOX_REG_LOSS: box_loss}
