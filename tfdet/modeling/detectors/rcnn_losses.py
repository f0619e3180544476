"""Training losses of `GeneralizedRCNN`: the sum of its parts' losses.

Each part computes its own (`rcnn_proposals.RpnProposals.losses`: the RPN's,
assigning its anchor targets; `rcnn_box.BoxPart.losses`,
`rcnn_mask.MaskPart.losses`, `rcnn_keypoint.KeypointPart.losses`: from the
targets their forward pass put in the outputs), with its own settings.

Keypoint models trained from precomputed proposals follow Detectron's
loader, which drops a minibatch with at most
KRCNN.MIN_KEYPOINT_COUNT_FOR_VALID_MINIBATCH visible keypoints and draws
another: here such a batch's losses are all multiplied by 0 (it moves no
weight through its gradients; the step still counts, and momentum and weight
decay still apply), and `SKIPPED_BATCH` (1 or 0) is reported beside them. In
end-to-end training Detectron ignores that count, and so does this.
"""

import tensorflow as tf

from tfdet.modeling.detectors import outputs as out
from tfdet.modeling.detectors.rcnn_box import BOX_CLS_LOSS, BOX_REG_LOSS
from tfdet.modeling.detectors.rcnn_keypoint import KEYPOINT_LOSS
from tfdet.modeling.detectors.rcnn_mask import MASK_LOSS
from tfdet.modeling.detectors.rcnn_proposals import RPN_BOX_LOSS, RPN_CLS_LOSS
from tfdet.modeling.losses import TOTAL_LOSS

__all__ = ["BOX_CLS_LOSS", "BOX_REG_LOSS", "KEYPOINT_LOSS", "MASK_LOSS", "RPN_BOX_LOSS",
           "RPN_CLS_LOSS", "SKIPPED_BATCH", "TOTAL_LOSS", "rcnn_losses"]

SKIPPED_BATCH = "skipped_keypoint_batch"


def rcnn_losses(model, outputs, batch, *, seed=None):
  """Detectron's losses of a generalized R-CNN.

  Args:
    model: the `GeneralizedRCNN` (its parts).
    outputs: dict from ``model(batch, training=True)``.
    batch: the input batch dict (`tfdet.data.keys`).
    seed: None or a stateless seed for the RPN's anchor sampling.

  Returns:
    dict of float32 scalars: RPN_CLS_LOSS, RPN_BOX_LOSS (with an RPN),
    BOX_CLS_LOSS, BOX_REG_LOSS (with a box part), MASK_LOSS, KEYPOINT_LOSS
    (with those parts) and their sum TOTAL_LOSS; SKIPPED_BATCH for keypoint
    models from precomputed proposals (module docstring).
  """
  result = dict(model.proposal_source.losses(outputs, batch, seed=seed))
  for part in (model.box, model.mask, model.keypoint):
    if part is not None:
      result.update(part.losses(outputs))
  result[TOTAL_LOSS] = tf.add_n(list(result.values()))
  if model.keypoint is not None and model.reads_precomputed_proposals:
    visible = tf.reduce_sum(tf.cast(outputs[out.KEYPOINT_WEIGHTS], tf.float32))
    keep = tf.cast(visible > model.keypoint.settings.min_visible_keypoints, tf.float32)
    result = {k: v * keep for k, v in result.items()}
    result[SKIPPED_BATCH] = 1.0 - keep
  return result
