"""RetinaNet: a ResNet/ResNeXt FPN (P3..P7) and one dense head shared by every level.

`RetinaNet` wires already-built parts (a backbone model returning the
pyramid levels, the head of `tfdet.modeling.heads.retinanet`) into one Keras
model; one set of weights serves both graphs:

* ``training=True``: every anchor's class logits and box deltas, flattened
  over levels, and the anchors. Target assignment (which needs only the
  anchors and the ground truth: `tfdet.ops.retinanet_targets`) and the losses
  are `tfdet.modeling.detectors.retinanet_losses`, not here.
* ``training=False``: the same, then Detectron's test path
  (`tfdet.ops.dense_detections`): per-level candidates, decoding, clipping to
  the original image, per-class NMS across levels and the top detections, in
  original-image pixels.

Outputs are keyed by `tfdet.modeling.detectors.outputs`; inputs are the
batch dict of `tfdet.data.keys`. Input images are padded to a multiple of the
coarsest stride (128 for P7).
"""

import keras
import tensorflow as tf

from tfdet.data import keys
from tfdet.modeling import xla
from tfdet.modeling.detectors import outputs as out
from tfdet.modeling.detectors.config import RetinaNetSettings
from tfdet.ops import anchors as anchor_ops
from tfdet.ops import dense_detections


class RetinaNet(keras.Model):
  """Backbone (FPN) + RetinaNet head.

  Args:
    backbone: keras.Model, images [B, H, W, 3] -> dict name -> feature map.
    head: keras.Model from `build_retinanet_head`, applied to every level.
    levels: feature names the head runs on, ("p3", ..., "p7").
    strides: stride of each level.
    cell_anchors: [A, 4] cell anchors of each level (the head's anchor order).
    num_classes: K + 1 (81 for COCO, as Detectron's MODEL.NUM_CLASSES); the
      head predicts the K foreground classes.
    convention: "detectron" or "modern" box convention.
    settings: `RetinaNetSettings` (targets, losses, inference); None:
      Detectron's.
    anchor_offset: fraction of the stride added to anchor centres
      (detectron2's ANCHOR_GENERATOR.OFFSET; 0).
    implementation: recorded for export (RetinaNet has no compiled op).
    jit_compile_inference: run the backbone (+ FPN) and the head through XLA when called
      with training=False (`tfdet.modeling.xla`).
  """

  def __init__(self, *, backbone, head, levels, strides, cell_anchors, num_classes=81,
               convention="detectron", settings=None, anchor_offset=0.0,
               implementation="custom", jit_compile_inference=False, name="retinanet",
               **kwargs):
    # autocast off: under a mixed-precision policy Keras would cast every float input (boxes,
    # image sizes, proposals) to the compute dtype; bfloat16 keeps 8 bits of mantissa, so box
    # corners near 1333 would move by up to 4 pixels. The backbone casts the images itself.
    kwargs.setdefault("autocast", False)
    super().__init__(name=name, **kwargs)
    if not len(levels) == len(strides) == len(cell_anchors):
      raise ValueError("levels, strides and cell_anchors need one entry per level")
    self.backbone = backbone
    self.head = head
    self.levels = tuple(levels)
    self.strides = tuple(strides)
    self.cell_anchors = [tf.constant(c, tf.float32) for c in cell_anchors]
    self.num_classes = num_classes
    self.convention = convention
    self.settings = settings or RetinaNetSettings()
    self.anchor_offset = float(anchor_offset)
    self.implementation = implementation
    self.jit_compile_inference = bool(jit_compile_inference)
    self.loss_normalizer = None
    if self.settings.loss_normalizer_momentum is not None:
      # detectron2's moving average of the foreground count (the losses update it).
      self.loss_normalizer = self.add_weight(
          name="loss_normalizer", shape=(), initializer=keras.initializers.Constant(100.0),
          trainable=False, aggregation="mean")

  def dense(self, images, training=False):
    """The dense part: backbone, FPN and head on [B, H, W, 3] images.

    Returns:
      lists over levels of logits [B, N_l, K], deltas [B, N_l, 4] and
      anchors [N_l, 4].
    """
    if training:
      features = self.backbone(images, training=True)
    else:
      features = xla.inference_call(self.backbone, images, jit_compile=self.jit_compile_inference)
    logits, deltas, anchors = [], [], []
    for name, stride, cell in zip(self.levels, self.strides, self.cell_anchors, strict=True):
      if training:
        head = self.head(features[name])
      else:
        head = xla.inference_call(self.head, features[name],
                                  jit_compile=self.jit_compile_inference)
      shape = tf.shape(features[name])
      batch = shape[0]
      k = head[out.RETINANET_LOGITS].shape[-1] // cell.shape[0]
      logits.append(tf.reshape(head[out.RETINANET_LOGITS], [batch, -1, k]))  # [B, H*W*A, K]
      deltas.append(tf.reshape(head[out.RETINANET_DELTAS], [batch, -1, 4]))  # [B, H*W*A, 4]
      anchors.append(anchor_ops.grid_anchors(cell, stride=stride, height=shape[1],
                                             width=shape[2], offset=self.anchor_offset))
    return logits, deltas, anchors

  def call(self, inputs, training=False):
    logits, deltas, anchors = self.dense(inputs[keys.IMAGES], training=training)
    result = {
        out.RETINANET_LOGITS: tf.concat(logits, axis=1),
        out.RETINANET_DELTAS: tf.concat(deltas, axis=1),
        out.ANCHORS: tf.concat(anchors, axis=0),
    }
    if training:
      return result
    result.update(self.postprocess(logits, deltas, anchors, inputs[keys.IMAGE_INFO]))
    return result

  def postprocess(self, logits, deltas, anchors, image_info):
    """Detections from per-level outputs (lists as `dense` returns them).

    Returns:
      dict of out.DETECTION_BOXES [B, D, 4] (original pixels),
      DETECTION_SCORES [B, D], DETECTION_CLASSES [B, D] (1..K) and
      NUM_DETECTIONS [B].
    """
    s = self.settings
    dets = dense_detections.dense_detections(
        [tf.sigmoid(tf.cast(x, tf.float32)) for x in logits], deltas, anchors, image_info,
        convention=self.convention, score_threshold=s.score_threshold,
        top_level_score_threshold=s.top_level_score_threshold, pre_nms_top_n=s.pre_nms_top_n,
        nms_threshold=s.nms_threshold, max_detections=s.detections_per_image,
        box_weights=s.box_weights)
    return {out.DETECTION_BOXES: dets.boxes, out.DETECTION_SCORES: dets.scores,
            out.DETECTION_CLASSES: dets.classes, out.NUM_DETECTIONS: dets.num}
