"""The R-CNN's keypoint part: keypoint RoIs and heatmap targets, the keypoint head, its loss,
and keypoints of detections.

Training: the keypoint RoIs are sampled from the proposals and the ground
truth apart from the box head's (`tfdet.ops.keypoint_targets`: candidates
that overlap a gt box with a visible keypoint inside them, up to
`KeypointSettings.rois_per_image`), and their heatmap targets are assigned
there, in the forward pass; `losses` reads the outputs only. Inference: the
head on the detected boxes gives S x S heatmaps per keypoint
(`heatmaps`), turned into keypoints as Detectron's heatmaps_to_keypoints
(`keypoints`, `tfdet.ops.keypoint_heatmaps`).
"""

import keras
import tensorflow as tf

from tfdet.data import keys
from tfdet.modeling import losses
from tfdet.modeling.detectors import outputs as out
from tfdet.modeling.detectors import rcnn_pooling
from tfdet.modeling.detectors.config import KeypointSettings
from tfdet.ops import keypoint_heatmaps, keypoint_targets

KEYPOINT_LOSS = "loss_kps"


class KeypointPart(keras.layers.Layer):
  """The keypoint RoI head (module docstring).

  Args:
    head: `keypoint_heads.build_keypoint_head`: [R, S0, S0, C] -> KEYPOINT_LOGITS [R, S, S, J].
    pooler: the model's `RoiPooler`.
    settings: `KeypointSettings`.
    convention: box convention.
    sampling: "detectron" or "modern" (the frame of overlaps and targets).
  """

  def __init__(self, *, head, pooler, settings=None, convention="detectron",
               sampling="detectron", name="keypoint", **kwargs):
    super().__init__(name=name, **kwargs)
    self.head = head
    self.pooler = pooler
    self.settings = settings or KeypointSettings()
    self.convention = convention
    self.sampling = sampling
    self.built = True

  def logits(self, features, rois, training=False, valid=None):
    """Heatmap logits [B, R, S, S, J] of [B, R, 4] RoIs in resized pixels.

    Args:
      valid: None, or [B, R] bool: the head runs on these rows only (the
        others' logits are zeros).
    """
    batch = tf.shape(rois)[0]
    r = tf.shape(rois)[1]
    if valid is None:
      pooled = self.pooler(features, rois, output_size=self.settings.roi_size,
                           sampling_ratio=self.settings.sampling_ratio)
      logits = tf.cast(self.head(pooled, training=training)[out.KEYPOINT_LOGITS], tf.float32)
      shape = tf.shape(logits)
      return tf.reshape(logits, tf.concat([[batch, r], shape[1:]], 0))
    rows = rcnn_pooling.valid_rows(valid)
    pooled = self.pooler.pool_flat(features, tf.gather_nd(rois, rows),
                                   tf.cast(rows[:, 0], tf.int32), output_size=self.settings.roi_size,
                                   sampling_ratio=self.settings.sampling_ratio)
    logits = tf.cast(self.head(pooled, training=training)[out.KEYPOINT_LOGITS], tf.float32)
    return rcnn_pooling.scatter_rows(logits, rows, batch, r)

  def train(self, features, proposals, num_proposals, batch, image_info):
    """Samples the keypoint RoIs, assigns their targets and runs the head on them.

    Returns:
      dict of KEYPOINT_LOGITS, KEYPOINT_TARGETS, KEYPOINT_WEIGHTS.
    """
    s = self.settings
    valid = tf.range(tf.shape(proposals)[1])[None, :] < num_proposals[:, None]
    rois = keypoint_targets.sample_keypoint_rois(
        proposals, valid, batch[keys.GT_BOXES], batch[keys.GT_VALID], batch[keys.GT_IS_CROWD],
        batch[keys.GT_KEYPOINTS], image_info[:, 2], convention=self.convention,
        mode=self.sampling, fg_thresh=s.fg_thresh, rois_per_image=s.rois_per_image,
        heatmap_size=s.heatmap_size)
    # The head runs on the sampled rows only: a padding row's logits are zeros, its weights 0.
    return {out.KEYPOINT_LOGITS: self.logits(features, rois.rois, training=True,
                                             valid=rois.valid),
            out.KEYPOINT_TARGETS: rois.targets, out.KEYPOINT_WEIGHTS: rois.weights}

  def heatmaps(self, features, boxes, image_info, valid=None):
    """Heatmap logits [B, D, S, S, J] of boxes in original-image pixels.

    Args:
      valid: None, or [B, D] bool: the head runs on these boxes only (zeros elsewhere).
    """
    rois = tf.cast(boxes, tf.float32) * image_info[:, 2][:, None, None]  # to the resized image
    return self.logits(features, rois, training=False, valid=valid)

  def keypoints(self, heatmaps, boxes):
    """[B, D, J, 3] (x, y, score) in original pixels from [B, D, S, S, J] heatmaps."""
    return keypoint_heatmaps.heatmaps_to_keypoints(heatmaps, boxes)

  def losses(self, outputs):
    """The heatmap softmax loss of the visible keypoints, times KRCNN.LOSS_WEIGHT."""
    s = self.settings
    loss = losses.keypoint_loss(outputs[out.KEYPOINT_LOGITS], outputs[out.KEYPOINT_TARGETS],
                                outputs[out.KEYPOINT_WEIGHTS],
                                normalize_by_visible=s.normalize_by_visible,
                                rois_per_image=s.rois_per_image)
    return {KEYPOINT_LOSS: s.loss_weight * loss}
