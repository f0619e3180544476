"""Detectron's losses and their normalizations, batched with static shapes.

Each function returns scalar losses for one replica's batch; under
`tf.distribute` the trainer divides by the number of replicas, which is how
Detectron's multi-GPU loss scale (1 / NUM_GPUS) averages its per-GPU losses.

* RPN classification: sigmoid cross-entropy over the sampled anchors
  (label >= 0). FPN divides the sum by ``batch_size_per_image * B``
  (Detectron's add_fpn_rpn_losses); single-level (C4) RPN by the number of
  sampled anchors (SigmoidCrossEntropyLoss's normalize=1).
* RPN boxes: smooth-L1 with beta 1/9 on foreground anchors, each image's sum
  divided by its number of sampled anchors (bbox_outside_weights), then by B
  (SmoothL1Loss divides by the batch dimension).
* Fast R-CNN: softmax cross-entropy averaged over the sampled RoIs; smooth-L1
  (beta 1) of the ground-truth class's deltas on foreground RoIs, summed and
  divided by the number of sampled RoIs.
* Mask: per-pixel sigmoid cross-entropy of the ground-truth class's mask on
  foreground RoIs, averaged over those pixels.
* RetinaNet: sigmoid focal loss of every non-ignored anchor and class, and
  smooth-L1 (beta 0.11) of the foreground anchors' deltas, both summed and
  divided by one normalizer (Detectron: the batch's foreground anchors plus
  one per image, its retnet_fg_num).
"""

import tensorflow as tf

# The key of the summed loss in every detector's loss dict: what training minimizes.
TOTAL_LOSS = "total_loss"


def smooth_l1(diff, beta):
  """Detectron's smooth-L1: 0.5 x^2 / beta if |x| < beta, else |x| - 0.5 beta.

  beta 0 is the L1 loss.
  """
  ax = tf.abs(diff)
  if beta <= 0.0:
    return ax
  return tf.where(ax < beta, 0.5 * ax * ax / beta, ax - 0.5 * beta)


def rpn_losses(logits, deltas, labels, box_targets, *, batch_size_per_image=256,
               multilevel=True, beta=1.0 / 9.0):
  """RPN objectness and box losses.

  Args:
    logits: [B, N] float32, every anchor's objectness logit (all levels
      flattened in anchor order).
    deltas: [B, N, 4] float32 predicted deltas.
    labels: [B, N] int32, 1 / 0 / -1 (from `tfdet.ops.rpn_targets`).
    box_targets: [B, N, 4] float32.
    batch_size_per_image: RPN_BATCH_SIZE_PER_IM, the FPN normalizer.
    multilevel: True for FPN's normalization, False for C4's.
    beta: smooth-L1 beta (1/9).

  Returns:
    (cls_loss, box_loss) float32 scalars.
  """
  labels = tf.cast(labels, tf.int32)
  sampled = tf.cast(labels >= 0, tf.float32)
  fg = tf.cast(labels == 1, tf.float32)
  ce = tf.nn.sigmoid_cross_entropy_with_logits(labels=fg, logits=tf.cast(logits, tf.float32))
  ce_sum = tf.reduce_sum(ce * sampled)
  batch = tf.cast(tf.shape(labels)[0], tf.float32)
  if multilevel:
    cls_loss = ce_sum / (float(batch_size_per_image) * batch)
  else:
    cls_loss = ce_sum / tf.maximum(tf.reduce_sum(sampled), 1.0)
  per_anchor = tf.reduce_sum(smooth_l1(tf.cast(deltas, tf.float32) - box_targets, beta), -1)
  per_image = tf.reduce_sum(per_anchor * fg, axis=1) / tf.maximum(
      tf.reduce_sum(sampled, axis=1), 1.0)
  return cls_loss, tf.reduce_sum(per_image) / batch


def fast_rcnn_losses(class_logits, box_deltas, labels, box_targets, valid, *, beta=1.0,
                     class_agnostic=False):
  """Box-head classification and regression losses.

  Args:
    class_logits: [B, R, K + 1] float32.
    box_deltas: [B, R, 4 (K + 1)] float32 (or [B, R, 8] class-agnostic).
    labels: [B, R] int32, 0 = background.
    box_targets: [B, R, 4] float32 targets of the labelled class.
    valid: [B, R] bool, sampled (non-padding) rows.
    beta: smooth-L1 beta (Detectron: 1.0).
    class_agnostic: deltas hold (background, foreground) pairs.

  Returns:
    (cls_loss, box_loss) float32 scalars.
  """
  labels = tf.cast(labels, tf.int32)
  valid_f = tf.cast(valid, tf.float32)
  count = tf.maximum(tf.reduce_sum(valid_f), 1.0)
  ce = tf.nn.sparse_softmax_cross_entropy_with_logits(
      labels=labels, logits=tf.cast(class_logits, tf.float32))
  cls_loss = tf.reduce_sum(ce * valid_f) / count
  shape = tf.shape(box_deltas)
  per_class = tf.reshape(tf.cast(box_deltas, tf.float32), [shape[0], shape[1], -1, 4])
  index = tf.minimum(labels, 1) if class_agnostic else labels
  chosen = tf.gather(per_class, index, batch_dims=2)  # [B, R, 4]
  fg = tf.cast(labels > 0, tf.float32) * valid_f
  box_sum = tf.reduce_sum(tf.reduce_sum(smooth_l1(chosen - box_targets, beta), -1) * fg)
  return cls_loss, box_sum / count


def mask_loss(mask_logits, mask_targets, labels, is_fg, *, class_agnostic=False):
  """Mask R-CNN's mask loss.

  Args:
    mask_logits: [B, R, M, M, K + 1] float32 (or [..., 1] class-agnostic).
    mask_targets: [B, R, M, M] float32 in {0, 1}.
    labels: [B, R] int32 class of each RoI.
    is_fg: [B, R] bool, RoIs that have a mask target.

  Returns:
    float32 scalar; 0 when the batch has no foreground RoI.
  """
  logits = tf.cast(mask_logits, tf.float32)
  if class_agnostic:
    chosen = logits[..., 0]
  else:
    chosen = tf.gather(tf.transpose(logits, [0, 1, 4, 2, 3]), tf.cast(labels, tf.int32),
                       batch_dims=2)  # [B, R, M, M]
  ce = tf.nn.sigmoid_cross_entropy_with_logits(labels=mask_targets, logits=chosen)
  fg = tf.cast(is_fg, tf.float32)[:, :, None, None]
  pixels = tf.reduce_sum(fg) * tf.cast(tf.shape(mask_targets)[2] * tf.shape(mask_targets)[3],
                                       tf.float32)
  return tf.reduce_sum(ce * fg) / tf.maximum(pixels, 1.0)


def sigmoid_focal_loss(logits, labels, *, alpha=0.25, gamma=2.0):
  """Detectron's SigmoidFocalLoss terms, summed (not normalized).

  For class k of an anchor labelled t: ``-alpha (1 - p)^gamma log p`` when
  t == k, ``-(1 - alpha) p^gamma log(1 - p)`` when t >= 0 and t != k (a
  background anchor is negative for every class), nothing when t == -1;
  p = sigmoid(logit).

  Args:
    logits: [B, N, K] float, one logit per foreground class (no background).
    labels: [B, N] int32: -1 ignored, 0 background, k in 1..K.
    alpha, gamma: LOSS_ALPHA, LOSS_GAMMA.

  Returns:
    float32 scalar.
  """
  x = tf.cast(logits, tf.float32)
  labels = tf.cast(labels, tf.int32)[..., None]  # [B, N, 1]
  classes = tf.range(1, tf.shape(x)[-1] + 1, dtype=tf.int32)  # [K]
  positive = tf.cast(labels == classes, tf.float32)  # [B, N, K]
  negative = tf.cast(labels >= 0, tf.float32) - positive
  p = tf.sigmoid(x)
  positive_term = -alpha * tf.pow(1.0 - p, gamma) * tf.math.log_sigmoid(x)
  negative_term = -(1.0 - alpha) * tf.pow(p, gamma) * tf.math.log_sigmoid(-x)
  return tf.reduce_sum(positive * positive_term + negative * negative_term)


def retinanet_losses(logits, deltas, labels, box_targets, normalizer, *, alpha=0.25, gamma=2.0,
                     beta=0.11):
  """RetinaNet's classification and box losses.

  Args:
    logits: [B, N, K] float32, every anchor's class logits (all levels).
    deltas: [B, N, 4] float32 predicted deltas.
    labels: [B, N] int32 (`tfdet.ops.retinanet_targets`).
    box_targets: [B, N, 4] float32.
    normalizer: float32 scalar both sums are divided by (at least 1 is used).
    alpha, gamma: the focal loss'.
    beta: smooth-L1 beta (Detectron 0.11).

  Returns:
    (cls_loss, box_loss) float32 scalars.
  """
  normalizer = tf.maximum(tf.cast(normalizer, tf.float32), 1.0)
  cls_loss = sigmoid_focal_loss(logits, labels, alpha=alpha, gamma=gamma) / normalizer
  fg = tf.cast(tf.cast(labels, tf.int32) > 0, tf.float32)
  per_anchor = tf.reduce_sum(smooth_l1(tf.cast(deltas, tf.float32) - box_targets, beta), -1)
  return cls_loss, tf.reduce_sum(per_anchor * fg) / normalizer


def keypoint_loss(logits, targets, weights, *, normalize_by_visible=True, rois_per_image=128):
  """Keypoint R-CNN's loss: a softmax over each heatmap's positions per visible keypoint.

  Args:
    logits: [B, R, S, S, J] float32 heatmap logits.
    targets: [B, R, J] int32 flat index (y * S + x) of each keypoint.
    weights: [B, R, J] float32, 1 for the keypoints that count.
    normalize_by_visible: divide the summed cross-entropy by the counted
      keypoints (Detectron's SoftmaxWithLoss with weights); else by
      B * rois_per_image * J (KRCNN.NORMALIZE_BY_VISIBLE_KEYPOINTS False).
    rois_per_image: the keypoint RoI quota, for the second normalizer.

  Returns:
    float32 scalar (0 when no keypoint counts).
  """
  logits = tf.cast(logits, tf.float32)
  shape = tf.shape(logits)
  flat = tf.transpose(tf.reshape(logits, [shape[0], shape[1], shape[2] * shape[3], shape[4]]),
                      [0, 1, 3, 2])  # [B, R, J, S*S]
  ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tf.cast(targets, tf.int32),
                                                      logits=flat)  # [B, R, J]
  weights = tf.cast(weights, tf.float32)
  total = tf.reduce_sum(ce * weights)
  if normalize_by_visible:
    return total / tf.maximum(tf.reduce_sum(weights), 1.0)
  return total / tf.cast(shape[0] * rois_per_image * shape[4], tf.float32)
