"""The R-CNN's mask part: mask targets, the mask head, its loss, and masks of detections.

Training: the head runs on the box part's foreground RoIs (the first
``max_fg_rois`` rows of the sampled RoIs); their targets are the polygons of
each RoI's gt rasterized inside the RoI (`tfdet.ops.mask_targets`), assigned
here in the forward pass; `losses` reads the outputs only. Inference: the
head on the detected boxes, each box's class channel (`predictions`). C4's
head reads the res5 features the box head computes for the same RoIs
instead of pooling its own (`on_res5`).
"""

import keras
import tensorflow as tf

from tfdet.data import keys
from tfdet.modeling import losses
from tfdet.modeling.detectors import outputs as out
from tfdet.modeling.detectors import rcnn_pooling
from tfdet.modeling.detectors.config import RoiHeadSettings
from tfdet.ops import mask_targets

MASK_LOSS = "loss_mask"


class MaskPart(keras.layers.Layer):
  """The mask RoI head (module docstring).

  Args:
    head: a mask-head model (`mask_heads.build_fpn_mask_head` or
      `build_c4_mask_head`): [R, S, S, C] -> MASK_LOGITS [R, M, M, K+1 or 1].
    pooler: the model's `RoiPooler` (unused with `on_res5`).
    settings: `RoiHeadSettings` (mask_roi_size, mask_resolution, ...).
    on_res5: the head reads the box head's res5 features (C4).
    convention: box convention.
    sampling: "detectron" or "modern" mask targets (`mask_targets`).
  """

  def __init__(self, *, head, pooler, settings=None, on_res5=False, convention="detectron",
               sampling="detectron", name="mask", **kwargs):
    super().__init__(name=name, **kwargs)
    self.head = head
    self.pooler = pooler
    self.settings = settings or RoiHeadSettings()
    self.on_res5 = on_res5
    self.convention = convention
    self.sampling = sampling
    self.built = True

  def logits(self, features, rois, res5=None, training=False, valid=None):
    """Mask logits [B, R, M, M, C] of [B, R, 4] RoIs (or of their res5 features).

    Args:
      res5: C4 only: the box head's res5 features of the same RoIs, [B * R, ...].
      valid: None, or [B, R] bool: the head runs on these rows only (the
        others' logits are zeros), which is most of the mask head's cost saved
        when few of the R rows are foreground.
    """
    batch = tf.shape(rois)[0]
    r = tf.shape(rois)[1]
    if valid is None:
      if self.on_res5:
        head_in = res5
      else:
        head_in = self.pooler(features, rois, output_size=self.settings.mask_roi_size,
                              sampling_ratio=self.settings.sampling_ratio)
      logits = tf.cast(self.head(head_in, training=training)[out.MASK_LOGITS], tf.float32)
      shape = tf.shape(logits)
      return tf.reshape(logits, tf.concat([[batch, r], shape[1:]], 0))
    rows = rcnn_pooling.valid_rows(valid)
    if self.on_res5:
      shape = tf.shape(res5)
      head_in = tf.gather_nd(tf.reshape(res5, tf.concat([[batch, r], shape[1:]], 0)), rows)
    else:
      head_in = self.pooler.pool_flat(
          features, tf.gather_nd(rois, rows), tf.cast(rows[:, 0], tf.int32),
          output_size=self.settings.mask_roi_size, sampling_ratio=self.settings.sampling_ratio)
    logits = tf.cast(self.head(head_in, training=training)[out.MASK_LOGITS], tf.float32)
    return rcnn_pooling.scatter_rows(logits, rows, batch, r)

  def train(self, features, sampled, res5, batch, image_info):
    """Mask targets and logits of the foreground sampled RoIs.

    Args:
      sampled: the box part's `roi_sampling.SampledRois` (foreground first).
      res5: the box head's res5 features of the sampled RoIs [B * R, ...] (C4), or None.

    Returns:
      dict of MASK_LOGITS, MASK_TARGETS, MASK_LABELS, MASK_FG.
    """
    n_fg = self.settings.max_fg_rois  # foreground rows come first
    fg_rois = sampled.rois[:, :n_fg]
    fg = sampled.is_fg[:, :n_fg]
    targets, _ = mask_targets.mask_targets(
        fg_rois, fg, batch[keys.GT_POLYGONS], batch[keys.GT_POLYGON_IDS], batch[keys.GT_VALID],
        batch[keys.GT_IS_CROWD], image_info[:, 2], resolution=self.settings.mask_resolution,
        convention=self.convention, mode=self.sampling)
    res5_fg = None
    if self.on_res5:
      shape = tf.shape(res5)
      res5 = tf.reshape(res5, tf.concat([tf.shape(sampled.rois)[:2], shape[1:]], 0))
      res5_fg = tf.reshape(res5[:, :n_fg], tf.concat([[-1], shape[1:]], 0))
    # The head runs on the foreground rows only (Detectron's runs on its fg RoIs): a padding
    # row's logits are zeros, and its loss weight is zero.
    return {out.MASK_LOGITS: self.logits(features, fg_rois, res5_fg, training=True, valid=fg),
            out.MASK_TARGETS: targets, out.MASK_LABELS: sampled.labels[:, :n_fg],
            out.MASK_FG: fg}

  def predictions(self, features, boxes, classes, image_info, box_part, valid=None):
    """(probabilities, logits) [B, D, M, M] of each box's class; boxes in original pixels.

    Args:
      box_part: the model's `BoxPart` (its res5 features, for C4's head).
      valid: None, or [B, D] bool: the head runs on these boxes only (e.g. the
        detections, not the padding after them); the others get zeros.
    """
    rois = boxes * image_info[:, 2][:, None, None]  # back to the resized image
    res5 = None
    if self.on_res5:  # (C4: res5 of every box; the mask head proper on the valid ones)
      _, _, res5 = box_part.run_head(features, rois, training=False)
    logits = self.logits(features, rois, res5, training=False, valid=valid)  # [B, D, M, M, C]
    chosen = tf.gather(tf.transpose(logits, [0, 1, 4, 2, 3]),
                       classes if logits.shape[-1] != 1 else tf.zeros_like(classes),
                       batch_dims=2)  # [B, D, M, M]
    probabilities = tf.sigmoid(chosen)
    if valid is not None:
      probabilities = tf.where(valid[:, :, None, None], probabilities, 0.0)
    return probabilities, chosen

  def losses(self, outputs):
    """Per-pixel sigmoid cross-entropy of each foreground RoI's class mask."""
    return {MASK_LOSS: losses.mask_loss(
        outputs[out.MASK_LOGITS], outputs[out.MASK_TARGETS], outputs[out.MASK_LABELS],
        outputs[out.MASK_FG], class_agnostic=outputs[out.MASK_LOGITS].shape[-1] == 1)}
