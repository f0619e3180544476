"""Generalized R-CNN: a backbone, a proposal source and RoI heads, composed.

`GeneralizedRCNN` composes already-built parts (detectron2's
``GeneralizedRCNN`` + ``StandardROIHeads`` shape):

* the backbone: a keras.Model from images to a dict of feature maps;
* a proposal source (`rcnn_proposals`): the RPN, or the batch's
  precomputed proposals (Detectron's two-stage recipe; the model then has no
  RPN);
* RoI heads, each one part that owns its training targets, its loss and its
  inference step: the box part (`rcnn_box`: RoI sampling and box targets in
  the forward pass), and optionally the mask part (`rcnn_mask`: mask targets
  of the box part's foreground RoIs) and the keypoint part
  (`rcnn_keypoint`: its own keypoint RoIs and heatmap targets).

Where targets are assigned: a target that decides what a head runs on is
assigned in the forward pass (RoI sampling, mask and keypoint targets of
the sampled RoIs) and travels in the outputs; one that needs only the
anchors and the ground truth is assigned in the part's ``losses`` (the
RPN's). Every part's ``losses`` reads the outputs, the batch and its own
settings; `rcnn_losses.rcnn_losses` sums them.

One set of weights serves both graphs: ``training=True`` returns the
proposal source's outputs and each part's training outputs;
``training=False`` returns proposals, detections in original-image pixels
(Detectron decodes ``rois / im_scale``) after per-class NMS, and the masks
and keypoints of the detections. Keys are `outputs`'; inputs are the batch
dict of `tfdet.data.keys`.
"""

import dataclasses

import keras
import tensorflow as tf

from tfdet.data import keys
from tfdet.modeling import xla
from tfdet.modeling.detectors import outputs as out
from tfdet.modeling.detectors.rcnn_box import BoxCandidates
from tfdet.modeling.detectors.rcnn_proposals import RpnProposals

__all__ = ["BoxCandidates", "GeneralizedRCNN"]


class GeneralizedRCNN(keras.Model):
  """Backbone + proposal source [+ box part [+ mask part] [+ keypoint part]].

  Args:
    backbone: keras.Model, images [B, H, W, 3] -> dict name -> feature map.
    proposal_source: `rcnn_proposals.RpnProposals` or `PrecomputedProposals`.
    box: None (an RPN-only model) or a `rcnn_box.BoxPart`.
    mask: None or a `rcnn_mask.MaskPart` (needs `box`).
    keypoint: None or a `rcnn_keypoint.KeypointPart` (needs `box`).
    num_classes: K + 1, background included.
    convention: "detectron" or "modern" box convention.
    sampling: "detectron" or "modern" target sampling.
    aligned_roi: the RoIAlign variant of the RoI heads (False: Detectron's).
    implementation: "custom" ops or the pure-TF "reference".
    jit_compile_inference: run the backbone (+ FPN) and the RPN head through XLA when
      called with training=False (`tfdet.modeling.xla`).
  """

  def __init__(self, *, backbone, proposal_source, box=None, mask=None, keypoint=None,
               num_classes=81, convention="detectron", sampling="detectron", aligned_roi=False,
               implementation="custom", jit_compile_inference=False, name="rcnn", **kwargs):
    # autocast off: under a mixed-precision policy Keras would cast every float input (boxes,
    # image sizes, proposals) to the compute dtype; bfloat16 keeps 8 bits of mantissa, so box
    # corners near 1333 would move by up to 4 pixels. The backbone casts the images itself.
    kwargs.setdefault("autocast", False)
    super().__init__(name=name, **kwargs)
    if (mask is not None or keypoint is not None) and box is None:
      raise ValueError("mask and keypoint parts need a box part")
    if box is None and not isinstance(proposal_source, RpnProposals):
      raise ValueError("a model without a box part is an RPN: it needs RpnProposals")
    self.backbone = backbone
    self.proposal_source = proposal_source
    self.box = box
    self.mask = mask
    self.keypoint = keypoint
    self.num_classes = num_classes
    self.convention = convention
    self.sampling = sampling
    self.aligned_roi = aligned_roi
    self.implementation = implementation
    self.jit_compile_inference = jit_compile_inference

  @property
  def jit_compile_inference(self):
    """Whether inference runs the backbone and the RPN head through XLA."""
    return self._jit_compile_inference

  @jit_compile_inference.setter
  def jit_compile_inference(self, value):
    self._jit_compile_inference = bool(value)
    if isinstance(self.proposal_source, RpnProposals):
      self.proposal_source.jit_compile_inference = bool(value)

  # ------------------------------------------------------------- forward
  def call(self, inputs, training=False):
    image_info = tf.cast(inputs[keys.IMAGE_INFO], tf.float32)
    if training:
      features = self.backbone(inputs[keys.IMAGES], training=True)
    else:
      features = xla.inference_call(self.backbone, inputs[keys.IMAGES],
                                    jit_compile=self.jit_compile_inference)
    result = dict(self.proposal_source.proposals(features, inputs, image_info, training))
    if self.box is None:
      return result
    rois, num_rois = result[out.PROPOSALS], result[out.NUM_PROPOSALS]
    if training:
      box_outputs, sampled, res5 = self.box.train(features, rois, num_rois, inputs, image_info)
      result.update(box_outputs)
      if self.mask is not None:
        result.update(self.mask.train(features, sampled, res5, inputs, image_info))
      if self.keypoint is not None:
        result.update(self.keypoint.train(features, rois, num_rois, inputs, image_info))
      return result
    boxes, scores, valid = self.box.candidates(features, rois, num_rois, image_info)
    detections = self.box.postprocess(boxes, scores, valid)
    result.update(detections)
    # The mask and keypoint heads run on the detections only, not on the padding after them.
    detected = (tf.range(tf.shape(detections[out.DETECTION_BOXES])[1])[None, :]
                < tf.cast(detections[out.NUM_DETECTIONS], tf.int32)[:, None])
    if self.mask is not None:
      probabilities, _ = self.mask.predictions(features, detections[out.DETECTION_BOXES],
                                               detections[out.DETECTION_CLASSES], image_info,
                                               self.box, valid=detected)
      result[out.DETECTION_MASKS] = probabilities
    if self.keypoint is not None:
      heatmaps = self.keypoint.heatmaps(features, detections[out.DETECTION_BOXES], image_info,
                                        valid=detected)
      result[out.DETECTION_KEYPOINTS] = self.keypoint.keypoints(
          heatmaps, detections[out.DETECTION_BOXES])
    return result

  # ------------------------------------- inference pieces (test-time augmentation)
  def _features(self, inputs):
    return (xla.inference_call(self.backbone, inputs[keys.IMAGES],
                               jit_compile=self.jit_compile_inference),
            tf.cast(inputs[keys.IMAGE_INFO], tf.float32))

  def detect_boxes(self, inputs):
    """The box stage of inference on a preprocessed batch, before any NMS.

    What `call(training=False)` computes up to the per-class NMS, so that
    several passes (e.g. test-time augmentations) can be merged before
    `postprocess_boxes`.

    Args:
      inputs: dict with keys.IMAGES [B, Hp, Wp, 3] and keys.IMAGE_INFO [B, 5]
        (and the proposals, for a model that reads precomputed ones).

    Returns:
      `BoxCandidates` (shapes there).
    """
    if self.box is None:
      raise ValueError("detect_boxes needs a box head; this is an RPN-only model")
    features, image_info = self._features(inputs)
    props = self.proposal_source.proposals(features, inputs, image_info, False)
    rois, num_rois = props[out.PROPOSALS], props[out.NUM_PROPOSALS]
    boxes, scores, valid = self.box.candidates(features, rois, num_rois, image_info)
    return BoxCandidates(proposals=rois, proposal_scores=props[out.PROPOSAL_SCORES],
                         num_proposals=num_rois, boxes=boxes, scores=scores, valid=valid)

  def postprocess_boxes(self, boxes, scores, valid=None):
    """Detectron's per-class NMS and detection limit (`rcnn_box.BoxPart.postprocess`)."""
    return self.box.postprocess(boxes, scores, valid)

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
    if self.mask is None:
      raise ValueError("mask_predictions needs a mask head")
    features, image_info = self._features(inputs)
    return self.mask.predictions(features, tf.cast(boxes, tf.float32), classes, image_info,
                                 self.box)

  def keypoint_heatmaps(self, inputs, boxes):
    """Keypoint heatmap logits [B, D, S, S, J] of boxes (original pixels of the given image)."""
    if self.keypoint is None:
      raise ValueError("keypoint_heatmaps needs a keypoint head")
    features, image_info = self._features(inputs)
    return self.keypoint.heatmaps(features, tf.cast(boxes, tf.float32), image_info)

  def keypoints_from_heatmaps(self, heatmaps, boxes):
    """[B, D, J, 3] keypoints (x, y, score; original pixels) of [B, D, S, S, J] heatmaps."""
    return self.keypoint.keypoints(heatmaps, boxes)

  # ------------------------------------------------ conveniences (the parts' own)
  @property
  def rpn_head(self):
    """The RPN head model, or None for a model with precomputed proposals."""
    return getattr(self.proposal_source, "head", None)

  @property
  def reads_precomputed_proposals(self):
    """True when the RoI heads read the batch's proposals (keys.PROPOSALS), not an RPN's."""
    return self.rpn_head is None

  @property
  def rpn_settings(self):
    return getattr(self.proposal_source, "settings", None)

  @property
  def rpn_levels(self):
    return getattr(self.proposal_source, "levels", ())

  @property
  def box_head(self):
    return None if self.box is None else self.box.head

  @property
  def mask_head(self):
    return None if self.mask is None else self.mask.head

  @property
  def keypoint_head(self):
    return None if self.keypoint is None else self.keypoint.head

  @property
  def roi_settings(self):
    """The box (and mask) parts' `RoiHeadSettings`; assigning replaces them in both."""
    return None if self.box is None else self.box.settings

  @roi_settings.setter
  def roi_settings(self, settings):
    if not dataclasses.is_dataclass(settings):
      raise TypeError(f"roi_settings takes RoiHeadSettings, got {type(settings).__name__}")
    for part in (self.box, self.mask):
      if part is not None:
        part.settings = settings
