"""Detections of a dense detector (RetinaNet): per-level candidates, decoding, per-class NMS.

Detectron's ``core/test_retinanet.py`` (im_detect_bbox), batched with static
shapes. For each image and each level l:

1. every (anchor, class) score above the level's threshold is a candidate
   (``score_threshold``; Detectron uses 0.0 on the highest level,
   ``top_level_score_threshold``, so that tiny images keep candidates);
2. the `pre_nms_top_n` best candidates of the level are kept;
3. their anchors are decoded with their deltas (class-agnostic boxes), in
   the resized image, then divided by the image's scale and clipped to the
   original image.

The candidates of every level are then merged, per-class NMS runs at
`nms_threshold` (Detectron's ``>=`` with "+1" IoU, or torchvision's ``>``
in "modern"; see `tfdet.ops.nms`), and the `max_detections` best remain,
sorted by score (Detectron sorts all classes' survivors and keeps the top
100). detectron2's RetinaNet is the same recipe (threshold 0.05 on every
level, top 1000, batched NMS, top 100).

The per-class NMS is TensorFlow's CombinedNonMaxSuppression: each candidate
enters only its own class's column, so a class's NMS visits only its own
candidates. In "detectron" boxes enter it with 1 added to x2 and y2 (the
"+1" IoU), and leave it with 1 taken away again, which can move a
coordinate by one float32 ulp.
"""

import numpy as np
import tensorflow as tf

from tfdet.ops import boxes as box_ops
from tfdet.ops.multiclass_nms import Detections


def _level_candidates(scores, deltas, anchors, threshold, top_n):
  """The `top_n` best (anchor, class) pairs of one level above `threshold`.

  Args:
    scores: [B, N, K] float32 probabilities. deltas: [B, N, 4]. anchors: [N, 4].

  Returns:
    (scores [B, top_n], classes [B, top_n] int32 in 1..K, deltas [B, top_n, 4],
    anchors [B, top_n, 4], valid [B, top_n] bool); invalid rows have score 0.
  """
  num_classes = scores.shape[-1]
  batch = tf.shape(scores)[0]
  flat = tf.reshape(scores, [batch, -1])  # [B, N*K], (anchor, class) order
  masked = tf.where(flat > threshold, flat, float("-inf"))
  short = tf.maximum(top_n - tf.shape(masked)[1], 0)
  masked = tf.pad(masked, [[0, 0], [0, short]], constant_values=float("-inf"))
  values, index = tf.math.top_k(masked, k=top_n)  # [B, top_n], best first
  valid = values > threshold
  anchor_index = tf.minimum(index // num_classes, tf.maximum(tf.shape(anchors)[0] - 1, 0))
  classes = index % num_classes + 1
  picked_deltas = tf.gather(deltas, anchor_index, batch_dims=1)  # [B, top_n, 4]
  picked_anchors = tf.gather(anchors, anchor_index)  # [B, top_n, 4]
  return (tf.where(valid, values, 0.0), tf.where(valid, classes, 0), picked_deltas,
          picked_anchors, valid)


def dense_detections(level_scores, level_deltas, level_anchors, image_info, *, convention,
                     score_threshold=0.05, top_level_score_threshold=0.0, pre_nms_top_n=1000,
                     nms_threshold=0.5, max_detections=100,
                     box_weights=(1.0, 1.0, 1.0, 1.0)):
  """Detections of a batch from per-level class probabilities and box deltas.

  Args:
    level_scores: list of L tensors [B, N_l, K] float32 sigmoid probabilities
      (N_l = H_l * W_l * A, in the anchors' order).
    level_deltas: list of L tensors [B, N_l, 4] float32.
    level_anchors: list of L tensors [N_l, 4] float32 in resized pixels.
    image_info: [B, 5] float32 (resized h, w, scale, original h, w).
    convention: "detectron" or "modern".
    score_threshold: candidates score above it (INFERENCE_TH, 0.05).
    top_level_score_threshold: None, or the last level's threshold instead
      (Detectron: 0.0).
    pre_nms_top_n: candidates per level (1000).
    nms_threshold: per-class NMS IoU (0.5).
    max_detections: D, detections per image (100).
    box_weights: the box coder's weights.

  Returns:
    `multiclass_nms.Detections`: boxes [B, D, 4] in original pixels,
    scores [B, D], classes [B, D] int32 in 1..K, num [B].
  """
  if not len(level_scores) == len(level_deltas) == len(level_anchors):
    raise ValueError("level_scores, level_deltas and level_anchors need one entry per level")
  image_info = tf.cast(image_info, tf.float32)
  scale = image_info[:, 2][:, None, None]
  original_size = image_info[:, 3:5][:, None, :]
  scores, classes, boxes, valid = [], [], [], []
  for level, (s, d, a) in enumerate(zip(level_scores, level_deltas, level_anchors,
                                        strict=True)):
    threshold = score_threshold
    if level == len(level_scores) - 1 and top_level_score_threshold is not None:
      threshold = top_level_score_threshold
    level_s, level_c, level_d, level_a, level_v = _level_candidates(
        tf.cast(s, tf.float32), tf.cast(d, tf.float32), tf.cast(a, tf.float32), threshold,
        int(pre_nms_top_n))
    decoded = box_ops.decode(level_d, level_a, weights=box_weights, convention=convention)
    decoded = box_ops.clip_to_image(decoded / scale, original_size, convention=convention)
    scores.append(level_s)
    classes.append(level_c)
    boxes.append(decoded)
    valid.append(level_v)
  scores = tf.concat(scores, axis=1)  # [B, C]
  classes = tf.concat(classes, axis=1)
  boxes = tf.concat(boxes, axis=1)  # [B, C, 4]
  valid = tf.concat(valid, axis=1)
  return class_wise_nms(boxes, scores, classes, valid, num_classes=level_scores[0].shape[-1],
                        nms_threshold=nms_threshold, max_detections=max_detections,
                        convention=convention)


def class_wise_nms(boxes, scores, classes, valid, *, num_classes, nms_threshold,
                   max_detections, convention):
  """Per-class NMS over candidates that each have one class, then the best `max_detections`.

  Args:
    boxes: [B, C, 4] float32. scores: [B, C] float32 (> 0 where valid).
    classes: [B, C] int32 in 1..num_classes. valid: [B, C] bool.
    num_classes: K.
    nms_threshold, convention: the IoU threshold and its rule (module docstring).
    max_detections: D.

  Returns:
    `multiclass_nms.Detections` with D rows, zero past `num`.
  """
  offset = box_ops.box_offset(convention)
  plain = boxes + tf.constant([0.0, 0.0, offset, offset], tf.float32)
  threshold = float(np.float32(nms_threshold))
  if offset == 1.0:  # IoU >= t  <=>  IoU > (the float32 just below t)
    threshold = float(np.nextafter(np.float32(threshold), np.float32(-np.inf)))
  column = tf.one_hot(tf.maximum(classes - 1, 0), num_classes, dtype=tf.float32)  # [B, C, K]
  per_class = column * tf.where(valid, scores, 0.0)[..., None]
  num_candidates = int(plain.shape[1]) if plain.shape[1] is not None else tf.shape(plain)[1]
  nmsed_boxes, nmsed_scores, nmsed_classes, num = tf.raw_ops.CombinedNonMaxSuppression(
      boxes=plain[:, :, None, :], scores=per_class,
      max_output_size_per_class=num_candidates, max_total_size=int(max_detections),
      iou_threshold=threshold, score_threshold=0.0, pad_per_class=False, clip_boxes=False)
  keep = tf.range(int(max_detections))[None, :] < num[:, None]  # [B, D]
  nmsed_boxes = nmsed_boxes - tf.constant([0.0, 0.0, offset, offset], tf.float32)
  return Detections(
      boxes=tf.where(keep[..., None], nmsed_boxes, 0.0),
      scores=tf.where(keep, nmsed_scores, 0.0),
      classes=tf.where(keep, tf.cast(nmsed_classes, tf.int32) + 1, 0),
      num=tf.cast(num, tf.int32))
