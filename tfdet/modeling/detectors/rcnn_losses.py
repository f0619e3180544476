"""Training losses of `GeneralizedRCNN` from its outputs and the batch.

Target assignment for the RPN happens here (it needs only anchors and
ground truth); the RoI and mask targets come from the model's outputs, where
they were sampled alongside the forward pass.
"""

import tensorflow as tf

from tfdet.data import keys
from tfdet.modeling import losses
from tfdet.modeling.detectors import outputs as out
from tfdet.modeling.losses import TOTAL_LOSS
from tfdet.ops import rpn_targets

RPN_CLS_LOSS = "loss_rpn_cls"
RPN_BOX_LOSS = "loss_rpn_bbox"
BOX_CLS_LOSS = "loss_cls"
BOX_REG_LOSS = "loss_bbox"
MASK_LOSS = "loss_mask"


def rcnn_losses(model, outputs, batch, *, seed=None):
  """Detectron's losses of a generalized R-CNN.

  Args:
    model: the `GeneralizedRCNN` (for its settings).
    outputs: dict from ``model(batch, training=True)``.
    batch: the input batch dict (`tfdet.data.keys`).
    seed: None or a stateless seed for the RPN anchor sampling.

  Returns:
    dict of float32 scalars keyed by the constants above; TOTAL_LOSS is
    their sum.
  """
  s = model.rpn_settings
  gt_valid = tf.cast(batch[keys.GT_VALID], tf.bool) & ~tf.cast(batch[keys.GT_IS_CROWD], tf.bool)
  targets = rpn_targets.rpn_targets(
      outputs[out.ANCHORS], batch[keys.GT_BOXES], gt_valid, batch[keys.IMAGE_INFO][:, :2],
      convention=model.convention, positive_overlap=s.positive_overlap,
      negative_overlap=s.negative_overlap, batch_size_per_image=s.batch_size_per_image,
      positive_fraction=s.positive_fraction, straddle_thresh=s.straddle_thresh,
      sampling=model.sampling, seed=seed)
  rpn_cls, rpn_box = losses.rpn_losses(
      outputs[out.RPN_LOGITS], outputs[out.RPN_DELTAS], targets.labels, targets.box_targets,
      batch_size_per_image=s.batch_size_per_image, multilevel=len(model.rpn_levels) > 1,
      beta=s.box_loss_beta)
  result = {RPN_CLS_LOSS: rpn_cls, RPN_BOX_LOSS: rpn_box}
  if out.CLASS_LOGITS in outputs:
    rs = model.roi_settings
    cls, box = losses.fast_rcnn_losses(
        outputs[out.CLASS_LOGITS], outputs[out.BOX_DELTAS], outputs[out.ROI_LABELS],
        outputs[out.ROI_BOX_TARGETS], outputs[out.ROI_VALID], beta=rs.box_loss_beta,
        class_agnostic=rs.class_agnostic_boxes)
    result.update({BOX_CLS_LOSS: cls, BOX_REG_LOSS: box})
  if out.MASK_LOGITS in outputs:
    result[MASK_LOSS] = losses.mask_loss(
        outputs[out.MASK_LOGITS], outputs[out.MASK_TARGETS], outputs[out.MASK_LABELS],
        outputs[out.MASK_FG], class_agnostic=outputs[out.MASK_LOGITS].shape[-1] == 1)
  result[TOTAL_LOSS] = tf.add_n(list(result.values()))
  return result
