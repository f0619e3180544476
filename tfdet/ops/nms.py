"""Batched hard NMS padded to a static size, in either box convention.

Greedy NMS: boxes are visited by descending score and a box is dropped when
its IoU with an already kept box reaches the threshold:

* ``"detectron"``: IoU with "+1" widths, dropped when IoU >= threshold
  (Detectron's cython nms);
* ``"modern"``: plain IoU, dropped when IoU > threshold (torchvision,
  detectron2).

Adding 1 to x2 and y2 turns "+1" boxes into ones whose plain IoU is
Detectron's, and, IoU being float32 in both, ``IoU >= t`` is ``IoU > t'``
with t' the float32 just below t; so both conventions run on TensorFlow's
own NMS kernel (NonMaxSuppressionV4, which is indifferent to the axis order
of its boxes). Boxes follow `tfdet.ops.boxes`.
"""

import numpy as np
import tensorflow as tf

from tfdet.ops.boxes import box_offset


def _plain_iou_boxes(boxes, convention):
  off = box_offset(convention)
  if off == 0.0:
    return boxes
  return boxes + tf.constant([0.0, 0.0, off, off], boxes.dtype)


def nms_padded(boxes, scores, *, max_output_size, iou_threshold, convention,
               score_threshold=float("-inf")):
  """Greedy NMS of each image, padded to `max_output_size`.

  Args:
    boxes: [B, N, 4] float32 (x1, y1, x2, y2). N may be 0.
    scores: [B, N] float32. NaN and -inf scores are never selected.
    max_output_size: int, static number of outputs per image.
    iou_threshold: float; see the module docstring for >= versus >.
    convention: "detectron" or "modern".
    score_threshold: float, only boxes with score > score_threshold are kept.

  Returns:
    indices: [B, max_output_size] int32 indices into N, in descending score
      order; padded entries are 0.
    num_valid: [B] int32, the number of real entries per image.
  """
  boxes = tf.convert_to_tensor(boxes, tf.float32)
  scores = tf.convert_to_tensor(scores, tf.float32)
  if boxes.shape.rank != 3 or scores.shape.rank != 2:
    raise ValueError(f"nms_padded: boxes must be [B, N, 4] and scores [B, N]; got "
                     f"boxes {boxes.shape} and scores {scores.shape}")
  if max_output_size < 0:
    raise ValueError(f"nms_padded: max_output_size must be >= 0, got {max_output_size}")
  scores = tf.where(tf.math.is_nan(scores), float("-inf"), scores)
  boxes = tf.where(tf.math.is_finite(boxes), boxes, 0.0)
  plain = _plain_iou_boxes(boxes, convention)
  threshold = float(np.float32(iou_threshold))
  if box_offset(convention) == 1.0:  # IoU >= t  <=>  IoU > (float32 below t)
    threshold = float(np.nextafter(np.float32(threshold), np.float32(-np.inf)))

  def one_image(args):
    b, s = args
    idx, n = tf.raw_ops.NonMaxSuppressionV4(
        boxes=b, scores=s, max_output_size=max_output_size, iou_threshold=threshold,
        score_threshold=score_threshold, pad_to_max_output_size=True)
    return tf.cast(idx, tf.int32), tf.cast(n, tf.int32)

  return tf.map_fn(one_image, (plain, scores),
                   fn_output_signature=(tf.TensorSpec([max_output_size], tf.int32),
                                        tf.TensorSpec([], tf.int32)))


def gather_padded(values, indices, num_valid):
  """Gathers per-image rows and zeroes the padding.

  Args:
    values: [B, N, ...] tensor.
    indices: [B, K] int32 (from `nms_padded`).
    num_valid: [B] int32.

  Returns:
    [B, K, ...] tensor, rows k >= num_valid[b] set to zero.
  """
  out = tf.gather(values, indices, batch_dims=1)
  k = tf.shape(indices)[1]
  valid = tf.range(k)[None, :] < num_valid[:, None]  # [B, K]
  valid = tf.reshape(valid, tf.concat([tf.shape(valid), tf.ones([tf.rank(out) - 2], tf.int32)], 0))
  return tf.where(valid, out, tf.zeros_like(out))
