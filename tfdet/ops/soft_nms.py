"""Batched Soft-NMS (Bodla et al., arXiv:1704.04503) padded to a static size.

Reproduces Detectron's ``soft_nms`` (``utils/cython_nms.pyx``), which
``core/test.py`` runs per class when ``TEST.SOFT_NMS.ENABLED``:

* Repeatedly select the remaining box with the highest *current* score.
* Every other remaining box that intersects it (positive intersection width
  and height, so IoU > 0) is rescored: ``score *= weight(iou)`` with

  - ``"linear"``: ``1 - iou`` if ``iou > iou_threshold`` else 1,
  - ``"gaussian"``: ``exp(-iou**2 / sigma)``,
  - ``"hard"``: 0 if ``iou > iou_threshold`` else 1 (classic NMS, strict ``>``),

  and is dropped when its rescored score is ``< score_threshold``.
* As in Detectron, the threshold is only applied to a box when it is
  rescored: a box that starts below ``score_threshold`` and intersects no box
  selected before it is still returned. Detectron returns every box that is
  not dropped; here the first ``max_output_size`` selections are returned.
  Selections come out in non-increasing order of their new scores.

Ties in the current score are broken by the lowest input index (Detectron
breaks them by the position in its internally permuted array; this only
matters for exactly equal float scores). Boxes follow `tfdet.ops.boxes`.
"""

import tensorflow as tf

from tfdet.ops.boxes import pairwise_iou

SOFT_NMS_METHODS = ("linear", "gaussian", "hard")


def _weights(iou, method, sigma, iou_threshold):
  """Rescoring weights for IoUs with the selected box: [B, N] -> [B, N]."""
  if method == "linear":
    return tf.where(iou > iou_threshold, 1.0 - iou, 1.0)
  if method == "gaussian":
    return tf.exp(-(iou * iou) / sigma)
  return tf.where(iou > iou_threshold, 0.0, 1.0)  # "hard"


def soft_nms_padded(boxes, scores, *, max_output_size, method="linear", sigma=0.5,
                    iou_threshold=0.3, score_threshold=0.001, convention, valid=None):
  """Soft-NMS of each image, padded to `max_output_size`.

  One `tf.while_loop` step selects one box per image; each step is vectorized
  over the batch and the N boxes (O(max_output_size * B * N) work).

  Args:
    boxes: [B, N, 4] float32 (x1, y1, x2, y2).
    scores: [B, N] float32. Non-finite scores are never selected.
    max_output_size: int, static number of outputs per image (K).
    method: "linear", "gaussian" or "hard" (Detectron's TEST.SOFT_NMS.METHOD).
    sigma: float, the Gaussian's parameter (TEST.SOFT_NMS.SIGMA).
    iou_threshold: float, Detectron's `overlap_thresh` (Nt) for "linear" and
      "hard" (test.py passes TEST.NMS).
    score_threshold: float, rescored boxes below it are dropped (test.py
      passes 0.0001; the function's own default is 0.001).
    convention: "detectron" or "modern".
    valid: optional [B, N] bool; False entries are ignored entirely.

  Returns:
    indices: [B, K] int32 indices into N in selection order; padding is 0.
    new_scores: [B, K] float32 rescored scores; padding is 0.
    num_valid: [B] int32, the number of real entries per image.
  """
  if method not in SOFT_NMS_METHODS:
    raise ValueError(f"soft_nms_padded: method must be one of {SOFT_NMS_METHODS}, "
                     f"got {method!r}")
  if max_output_size < 0:
    raise ValueError(f"soft_nms_padded: max_output_size must be >= 0, got {max_output_size}")
  boxes = tf.convert_to_tensor(boxes, tf.float32)
  scores = tf.convert_to_tensor(scores, tf.float32)
  if boxes.shape.rank != 3 or scores.shape.rank != 2:
    raise ValueError(f"soft_nms_padded: boxes must be [B, N, 4] and scores [B, N]; got "
                     f"boxes {boxes.shape} and scores {scores.shape}")
  k_out = int(max_output_size)
  batch = tf.shape(scores)[0]
  n = tf.shape(scores)[1]
  alive = tf.math.is_finite(scores)  # [B, N] not yet selected nor dropped
  if valid is not None:
    alive = tf.logical_and(alive, tf.cast(valid, tf.bool))
  boxes = tf.where(tf.math.is_finite(boxes), boxes, 0.0)
  current = tf.where(alive, scores, 0.0)
  positions = tf.range(n)[None, :]  # [1, N]
  out_pos = tf.range(k_out)[None, :]  # [1, K]

  def cond(k, alive, current, out_idx, out_scores, count):
    del current, out_idx, out_scores, count
    return tf.logical_and(k < k_out, tf.reduce_any(alive))

  def body(k, alive, current, out_idx, out_scores, count):
    masked = tf.where(alive, current, float("-inf"))  # [B, N]
    best_score = tf.reduce_max(masked, axis=1)  # [B]
    has = tf.reduce_any(alive, axis=1)  # [B]
    is_best = tf.logical_and(alive, tf.equal(masked, best_score[:, None]))
    best = tf.reduce_min(tf.where(is_best, positions, n), axis=1)  # [B] lowest index
    best = tf.where(has, best, 0)
    chosen = tf.logical_and(tf.equal(positions, best[:, None]), has[:, None])  # [B, N]
    alive = tf.logical_and(alive, tf.logical_not(chosen))
    picked = tf.gather(boxes, best, batch_dims=1)  # [B, 4]
    iou = pairwise_iou(picked[:, None, :], boxes, convention=convention)[:, 0, :]  # [B, N]
    rescored = tf.logical_and(alive, iou > 0.0)
    current = tf.where(rescored, current * _weights(iou, method, sigma, iou_threshold),
                       current)
    alive = tf.logical_and(alive, tf.logical_not(
        tf.logical_and(rescored, current < score_threshold)))
    write = tf.logical_and(tf.equal(out_pos, k), has[:, None])  # [B, K]
    out_idx = tf.where(write, best[:, None], out_idx)
    out_scores = tf.where(write, best_score[:, None], out_scores)
    count = count + tf.cast(has, tf.int32)
    return k + 1, alive, current, out_idx, out_scores, count

  init = (tf.constant(0), alive, current, tf.zeros([batch, k_out], tf.int32),
          tf.zeros([batch, k_out], tf.float32), tf.zeros([batch], tf.int32))
  _, _, _, out_idx, out_scores, count = tf.while_loop(cond, body, init)
  return out_idx, out_scores, count
