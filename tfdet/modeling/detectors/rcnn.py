"""Generalized R-CNN: RPN, Fast/Faster R-CNN and Mask R-CNN, C4 or FPN.

`GeneralizedRCNN` wires already-built parts (a backbone model returning a
dict of feature maps, the RPN head, optional box and mask heads) into one
Keras model. One set of weights serves both graphs:

* ``training=True``: RPN outputs for every anchor, proposals, the sampled
  RoIs with their targets, box-head outputs on them, and mask-head outputs
  on the foreground RoIs with their mask targets. Losses are computed from
  these outputs by `tfdet.modeling.detectors.rcnn_losses`, not here.
* ``training=False``: proposals -> box head -> decoded, clipped boxes in
  *original-image* pixels (Detectron decodes ``rois / im_scale``) ->
  per-class NMS and the top detections -> mask head on the detections.

The keys of the output dict are the constants of
`tfdet.modeling.detectors.outputs`. Inputs are the batch dict of
`tfdet.data.keys`.
"""

from typing import NamedTuple

import keras
import tensorflow as tf

from tfdet.data import keys
from tfdet.modeling.detectors import outputs as out
from tfdet.modeling.detectors.config import RoiHeadSettings, RpnSettings
from tfdet.modeling.heads.box_heads import RES5_FEATURES
from tfdet.ops import anchors as anchor_ops
from tfdet.ops import boxes as box_ops
from tfdet.ops import fpn_levels, mask_targets, multiclass_nms, proposals, roi_align, roi_sampling


class BoxCandidates(NamedTuple):
  """Inference before NMS (`GeneralizedRCNN.detect_boxes`): P proposals, C = K + 1 classes.

  Attributes:
    proposals: [B, P, 4] float32 RPN proposals in resized-image pixels.
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


class GeneralizedRCNN(keras.Model):
  """Backbone + RPN [+ box head [+ mask head]].

  Args:
    backbone: keras.Model, images [B, H, W, 3] -> dict name -> feature map.
    rpn_head: keras.Model from `tfdet.modeling.heads.rpn.build_rpn_head`.
    rpn_levels: feature names the RPN runs on, e.g. ("p2", ..., "p6") or
      ("res4",).
    rpn_strides: stride of each RPN level.
    rpn_cell_anchors: [A, 4] cell anchors of each RPN level.
    box_head: None (RPN-only model) or a box-head model.
    roi_levels: feature names RoIs are pooled from, ("p2", ..., "p5") with the
      FPN level rule, or ("res4",).
    roi_strides: stride of each RoI level.
    mask_head: None or a mask-head model.
    mask_on_res5: True for C4's mask head, which reads the box head's res5
      features of the foreground RoIs instead of pooling its own.
    num_classes: K + 1, background included.
    convention: "detectron" or "modern" box convention.
    sampling: "detectron" or "modern" target sampling (`tfdet.ops.rpn_targets`,
      `tfdet.ops.roi_sampling`).
    aligned_roi: RoIAlign variant (False: Detectron's).
    rpn_settings, roi_settings: the numbers (`config`); None: Detectron's FPN
      defaults.
    implementation: "custom" ops or the pure-TF "reference".
  """

  def __init__(self, *, backbone, rpn_head, rpn_levels, rpn_strides, rpn_cell_anchors,
               box_head=None, roi_levels=(), roi_strides=(), mask_head=None,
               mask_on_res5=False, num_classes=81, convention="detectron",
               sampling="detectron", aligned_roi=False, rpn_settings=None,
               roi_settings=None, implementation="custom", name="rcnn", **kwargs):
    super().__init__(name=name, **kwargs)
    if mask_head is not None and box_head is None:
      raise ValueError("a mask head needs a box head")
    if len(rpn_levels) != len(rpn_strides) or len(rpn_levels) != len(rpn_cell_anchors):
      raise ValueError("rpn_levels, rpn_strides and rpn_cell_anchors need one entry per level")
    if box_head is not None and len(roi_levels) != len(roi_strides):
      raise ValueError("roi_levels and roi_strides need one entry per level")
    self.backbone = backbone
    self.rpn_head = rpn_head
    self.box_head = box_head
    self.mask_head = mask_head
    self.rpn_levels = tuple(rpn_levels)
    self.rpn_strides = tuple(rpn_strides)
    self.rpn_cell_anchors = [tf.constant(c, tf.float32) for c in rpn_cell_anchors]
    self.roi_levels = tuple(roi_levels)
    self.roi_strides = tuple(roi_strides)
    self.mask_on_res5 = mask_on_res5
    self.num_classes = num_classes
    self.convention = convention
    self.sampling = sampling
    self.aligned_roi = aligned_roi
    self.rpn_settings = rpn_settings or RpnSettings()
    self.roi_settings = roi_settings or RoiHeadSettings()
    self.implementation = implementation

  # ---------------------------------------------------------------- RPN
  def _rpn(self, features):
    """RPN outputs and anchors of every level."""
    logits, deltas, anchors = [], [], []
    for name, stride, cell in zip(self.rpn_levels, self.rpn_strides, self.rpn_cell_anchors,
                                  strict=True):
      head = self.rpn_head(features[name])
      logits.append(head[out.RPN_LOGITS])  # [B, H, W, A]
      deltas.append(head[out.RPN_DELTAS])  # [B, H, W, 4A]
      shape = tf.shape(features[name])
      anchors.append(anchor_ops.grid_anchors(cell, stride=stride, height=shape[1],
                                             width=shape[2]))
    return logits, deltas, anchors

  def _proposals(self, logits, deltas, anchors, image_info, training):
    s = self.rpn_settings
    rois, scores, num = proposals.generate_proposals(
        [tf.sigmoid(tf.cast(x, tf.float32)) for x in logits],
        [tf.cast(d, tf.float32) for d in deltas], anchors, image_info[:, :3],
        pre_nms_top_n=s.pre_nms_top_n_train if training else s.pre_nms_top_n_test,
        post_nms_top_n=s.post_nms_top_n_train if training else s.post_nms_top_n_test,
        nms_threshold=s.nms_threshold, min_size=s.min_size, convention=self.convention,
        collect_top_n=s.collect_top_n_train if training else s.collect_top_n_test,
        collect_per_batch=s.collect_per_batch_train and training,
        implementation=self.implementation)
    return tf.stop_gradient(rois), tf.stop_gradient(scores), num

  # ---------------------------------------------------------- RoI pooling
  def _pool(self, features, rois, output_size):
    """RoIAlign of [B, R, 4] RoIs -> [B * R, S, S, C] features."""
    batch = tf.shape(rois)[0]
    r = tf.shape(rois)[1]
    flat = tf.reshape(rois, [-1, 4])  # [B*R, 4]
    batch_indices = tf.repeat(tf.range(batch, dtype=tf.int32), r)
    maps = [features[name] for name in self.roi_levels]
    scales = [1.0 / s for s in self.roi_strides]
    common = dict(output_size=output_size, sampling_ratio=self.roi_settings.sampling_ratio,
                  aligned=self.aligned_roi, implementation=self.implementation)
    if len(maps) == 1:
      return roi_align.roi_align(maps[0], flat, batch_indices, spatial_scale=scales[0],
                                 **common)
    rs = self.roi_settings
    levels = fpn_levels.assign_levels(flat, min_level=rs.roi_min_level,
                                      max_level=rs.roi_max_level,
                                      canonical_scale=rs.canonical_scale,
                                      canonical_level=rs.canonical_level,
                                      convention=self.convention)
    return roi_align.multilevel_roi_align(maps, flat, batch_indices, levels - rs.roi_min_level,
                                          spatial_scales=scales, **common)

  def _box_head(self, features, rois, training):
    batch = tf.shape(rois)[0]
    r = tf.shape(rois)[1]
    pooled = self._pool(features, rois, self.roi_settings.box_roi_size)
    head = self.box_head(pooled, training=training)
    # Static last dims (not -1): multiclass NMS needs a static class count in graphs.
    logits = tf.reshape(head[out.CLASS_LOGITS],
                        [batch, r, head[out.CLASS_LOGITS].shape[-1]])  # [B, R, K+1]
    deltas = tf.reshape(head[out.BOX_DELTAS], [batch, r, head[out.BOX_DELTAS].shape[-1]])  # [B, R, 4(K+1)]
    return logits, deltas, head.get(RES5_FEATURES)

  def _mask_logits(self, features, rois, res5=None, training=False):
    """Mask logits [B, R, M, M, C] of [B, R, 4] RoIs (or of given res5 features)."""
    batch = tf.shape(rois)[0]
    r = tf.shape(rois)[1]
    if self.mask_on_res5:
      head_in = res5
    else:
      head_in = self._pool(features, rois, self.roi_settings.mask_roi_size)
    logits = self.mask_head(head_in, training=training)[out.MASK_LOGITS]
    shape = tf.shape(logits)
    return tf.reshape(logits, tf.concat([[batch, r], shape[1:]], 0))

  # ------------------------------------------------------------- forward
  def call(self, inputs, training=False):
    images = inputs[keys.IMAGES]
    image_info = tf.cast(inputs[keys.IMAGE_INFO], tf.float32)
    features = self.backbone(images, training=training)
    logits, deltas, anchors = self._rpn(features)
    batch = tf.shape(images)[0]
    result = {
        out.RPN_LOGITS: tf.concat([tf.reshape(x, [batch, -1]) for x in logits], axis=1),
        out.RPN_DELTAS: tf.concat([tf.reshape(d, [batch, -1, 4]) for d in deltas], axis=1),
        out.ANCHORS: tf.concat(anchors, axis=0),
    }
    rois, roi_scores, num_rois = self._proposals(logits, deltas, anchors, image_info, training)
    result.update({out.PROPOSALS: rois, out.PROPOSAL_SCORES: roi_scores,
                   out.NUM_PROPOSALS: num_rois})
    if self.box_head is None:
      return result
    if training:
      result.update(self._train_heads(inputs, features, rois, num_rois, image_info))
    else:
      result.update(self._detect(features, rois, num_rois, image_info))
    return result

  def _train_heads(self, inputs, features, rois, num_rois, image_info):
    rs = self.roi_settings
    valid = tf.range(tf.shape(rois)[1])[None, :] < num_rois[:, None]
    sampled = roi_sampling.sample_rois(
        rois, valid, inputs[keys.GT_BOXES], inputs[keys.GT_CLASSES], inputs[keys.GT_VALID],
        inputs[keys.GT_IS_CROWD], image_info[:, 2], convention=self.convention,
        mode=self.sampling, batch_size_per_image=rs.batch_size_per_image,
        fg_fraction=rs.fg_fraction, fg_thresh=rs.fg_thresh, bg_thresh_hi=rs.bg_thresh_hi,
        bg_thresh_lo=rs.bg_thresh_lo, box_weights=rs.box_weights)
    class_logits, box_deltas, res5 = self._box_head(features, sampled.rois, training=True)
    result = {
        out.SAMPLED_ROIS: sampled.rois, out.ROI_LABELS: sampled.labels,
        out.ROI_BOX_TARGETS: sampled.box_targets, out.ROI_VALID: sampled.valid,
        out.CLASS_LOGITS: class_logits, out.BOX_DELTAS: box_deltas,
    }
    if self.mask_head is None:
      return result
    n_fg = rs.max_fg_rois  # foreground rows come first
    fg_rois = sampled.rois[:, :n_fg]
    fg = sampled.is_fg[:, :n_fg]
    targets, _ = mask_targets.mask_targets(
        fg_rois, fg, inputs[keys.GT_POLYGONS], inputs[keys.GT_POLYGON_IDS],
        inputs[keys.GT_VALID], inputs[keys.GT_IS_CROWD], image_info[:, 2],
        resolution=rs.mask_resolution, convention=self.convention, mode=self.sampling)
    res5_fg = None
    if self.mask_on_res5:
      shape = tf.shape(res5)
      res5 = tf.reshape(res5, tf.concat([tf.shape(sampled.rois)[:2], shape[1:]], 0))
      res5_fg = tf.reshape(res5[:, :n_fg], tf.concat([[-1], shape[1:]], 0))
    result.update({
        out.MASK_LOGITS: self._mask_logits(features, fg_rois, res5_fg, training=True),
        out.MASK_TARGETS: targets, out.MASK_LABELS: sampled.labels[:, :n_fg],
        out.MASK_FG: fg,
    })
    return result

  def _detect(self, features, rois, num_rois, image_info):
    boxes, scores, valid = self._box_candidates(features, rois, num_rois, image_info)
    result = self.postprocess_boxes(boxes, scores, valid)
    if self.mask_head is None:
      return result
    probabilities, _ = self._mask_predictions(features, result[out.DETECTION_BOXES],
                                              result[out.DETECTION_CLASSES], image_info)
    result[out.DETECTION_MASKS] = probabilities
    return result

  def _box_candidates(self, features, rois, num_rois, image_info):
    """Box head on the proposals: (boxes, scores, valid) of `BoxCandidates`."""
    rs = self.roi_settings
    class_logits, box_deltas, _ = self._box_head(features, rois, training=False)
    scores = tf.nn.softmax(class_logits, axis=-1)  # [B, R, K+1]
    scale = image_info[:, 2][:, None, None]
    shape = tf.shape(box_deltas)
    per_class = tf.reshape(box_deltas, [shape[0], shape[1], -1, 4])  # [B, R, K+1 or 2, 4]
    boxes = box_ops.decode(per_class, (rois / scale)[:, :, None, :], weights=rs.box_weights,
                           convention=self.convention)
    original_size = image_info[:, 3:5][:, None, None, :]
    boxes = box_ops.clip_to_image(boxes, original_size, convention=self.convention)
    valid = tf.range(tf.shape(rois)[1])[None, :] < num_rois[:, None]
    if rs.class_agnostic_boxes:
      boxes = boxes[:, :, 1]
    return boxes, scores, valid

  def _mask_predictions(self, features, boxes, classes, image_info):
    """(probabilities, logits) [B, D, M, M] of each box's class; boxes in original pixels."""
    rois = boxes * image_info[:, 2][:, None, None]  # back to the resized image
    res5 = None
    if self.mask_on_res5:
      _, _, res5 = self._box_head(features, rois, training=False)
    logits = self._mask_logits(features, rois, res5, training=False)  # [B, D, M, M, C]
    chosen = tf.gather(tf.transpose(logits, [0, 1, 4, 2, 3]),
                       classes if logits.shape[-1] != 1 else tf.zeros_like(classes),
                       batch_dims=2)  # [B, D, M, M]
    return tf.sigmoid(chosen), chosen

  # ------------------------------------- inference pieces (test-time augmentation)
  def detect_boxes(self, inputs):
    """The box stage of inference on a preprocessed batch, before any NMS.

    What `call(training=False)` computes up to the per-class NMS, so that
    several passes (e.g. test-time augmentations) can be merged before
    `postprocess_boxes`.

    Args:
      inputs: dict with keys.IMAGES [B, Hp, Wp, 3] and keys.IMAGE_INFO [B, 5].

    Returns:
      `BoxCandidates` (shapes there).
    """
    if self.box_head is None:
      raise ValueError("detect_boxes needs a box head; this is an RPN-only model")
    image_info = tf.cast(inputs[keys.IMAGE_INFO], tf.float32)
    features = self.backbone(inputs[keys.IMAGES], training=False)
    logits, deltas, anchors = self._rpn(features)
    rois, roi_scores, num_rois = self._proposals(logits, deltas, anchors, image_info, False)
    boxes, scores, valid = self._box_candidates(features, rois, num_rois, image_info)
    return BoxCandidates(proposals=rois, proposal_scores=roi_scores, num_proposals=num_rois,
                         boxes=boxes, scores=scores, valid=valid)

  def postprocess_boxes(self, boxes, scores, valid=None):
    """Detectron's per-class NMS, score threshold and detection limit, as `roi_settings` say.

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
    rs = self.roi_settings
    soft = None if rs.soft_nms_method is None else multiclass_nms.SoftNMSOptions(
        method=rs.soft_nms_method, sigma=rs.soft_nms_sigma)
    voting = None if rs.box_voting_threshold is None else multiclass_nms.BoxVotingOptions(
        iou_threshold=rs.box_voting_threshold, scoring_method=rs.box_voting_scoring)
    dets = multiclass_nms.multiclass_nms(
        boxes, scores, score_threshold=rs.score_threshold, iou_threshold=rs.nms_threshold,
        max_detections=rs.detections_per_image, convention=self.convention, soft_nms=soft,
        box_voting=voting, class_agnostic_boxes=rs.class_agnostic_boxes, valid=valid)
    return {out.DETECTION_BOXES: dets.boxes, out.DETECTION_SCORES: dets.scores,
            out.DETECTION_CLASSES: dets.classes, out.NUM_DETECTIONS: dets.num}

  def mask_predictions(self, inputs, boxes, classes):
    """Mask-head outputs for given boxes in a preprocessed batch.

    Args:
      inputs: dict with keys.IMAGES [B, Hp, Wp, 3] and keys.IMAGE_INFO [B, 5].
      boxes: [B, D, 4] float32 boxes in the *original* pixels of the image as
        given (already flipped if the image is), as DETECTION_BOXES.
      classes: [B, D] int32 class of each box (1..K); class-agnostic mask
        heads ignore it.

    Returns:
      (probabilities, logits), each [B, D, M, M] float32: the box's class
      channel of the mask head, sigmoid and raw.
    """
    if self.mask_head is None:
      raise ValueError("mask_predictions needs a mask head")
    image_info = tf.cast(inputs[keys.IMAGE_INFO], tf.float32)
    features = self.backbone(inputs[keys.IMAGES], training=False)
    return self._mask_predictions(features, tf.cast(boxes, tf.float32), classes, image_info)
