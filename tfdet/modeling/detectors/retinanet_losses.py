"""Training losses of `RetinaNet` from its outputs and the batch.

Target assignment happens here: it needs only the anchors (in the outputs)
and the ground truth (in the batch), as the RPN's in `rcnn_losses`. The
settings (overlaps, matching rule, focal and smooth-L1 parameters, the
normalizer) are the model's `RetinaNetSettings`.

The normalizer of both losses is Detectron's ``retnet_fg_num``: the
replica's foreground anchors plus one per image (each GPU normalizes its own
batch; the trainer then averages over replicas), or, with
``loss_normalizer_momentum``, detectron2's moving average of the foreground
count, kept in the model's ``loss_normalizer`` variable and updated here.
"""

import tensorflow as tf

from tfdet.data import keys
from tfdet.modeling import losses
from tfdet.modeling.detectors import outputs as out
from tfdet.modeling.losses import TOTAL_LOSS
from tfdet.ops import retinanet_targets

CLS_LOSS = "loss_retinanet_cls"
BOX_LOSS = "loss_retinanet_bbox"


def loss_normalizer(model, num_foreground):
  """The normalizer of a batch with per-image foreground counts [B] (module docstring)."""
  s = model.settings
  if s.loss_normalizer_momentum is None:
    return tf.reduce_sum(num_foreground + 1.0)
  m = float(s.loss_normalizer_momentum)
  average = m * model.loss_normalizer + (1.0 - m) * tf.maximum(tf.reduce_sum(num_foreground), 1.0)
  model.loss_normalizer.assign(average)
  return average


def retinanet_losses(model, outputs, batch):
  """Focal and box losses of a RetinaNet.

  Args:
    model: the `RetinaNet` (its settings and convention).
    outputs: dict from ``model(batch, training=True)``.
    batch: the input batch dict (`tfdet.data.keys`).

  Returns:
    dict of float32 scalars: CLS_LOSS, BOX_LOSS and their sum TOTAL_LOSS.
  """
  s = model.settings
  gt_valid = tf.cast(batch[keys.GT_VALID], tf.bool) & ~tf.cast(batch[keys.GT_IS_CROWD], tf.bool)
  targets = retinanet_targets.retinanet_targets(
      outputs[out.ANCHORS], batch[keys.GT_BOXES], batch[keys.GT_CLASSES], gt_valid,
      convention=model.convention, positive_overlap=s.positive_overlap,
      negative_overlap=s.negative_overlap, matching=s.matching, box_weights=s.box_weights)
  cls_loss, box_loss = losses.retinanet_losses(
      outputs[out.RETINANET_LOGITS], outputs[out.RETINANET_DELTAS], targets.labels,
      targets.box_targets, loss_normalizer(model, targets.num_foreground),
      alpha=s.focal_alpha, gamma=s.focal_gamma, beta=s.box_loss_beta)
  result = {CLS_LOSS: cls_loss, BOX_LOSS: s.box_loss_weight * box_loss}
  result[TOTAL_LOSS] = cls_loss + result[BOX_LOSS]
  return result
