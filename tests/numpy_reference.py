"""Plain-numpy references of box IoU, greedy NMS and soft-NMS, written as loops.

The tests compare tfdet's vectorized TF ops with these. Boxes are
``(x1, y1, x2, y2)``; ``offset`` is the convention's width term: 1 for
Detectron's ``x2 - x1 + 1``, 0 for the modern ``x2 - x1``.
"""

import math

import numpy as np


def iou(a, b, offset):
  """IoU of two boxes; 0 when they do not overlap (or the union is empty)."""
  iw = min(a[2], b[2]) - max(a[0], b[0]) + offset
  ih = min(a[3], b[3]) - max(a[1], b[1]) + offset
  if iw <= 0 or ih <= 0:
    return 0.0
  union = ((a[2] - a[0] + offset) * (a[3] - a[1] + offset)
           + (b[2] - b[0] + offset) * (b[3] - b[1] + offset) - iw * ih)
  return iw * ih / union if union > 0 else 0.0


def iou_matrix(a, b, offset):
  """[K, 4] x [N, 4] -> [K, N] float64 IoU."""
  return np.array([[iou(p, q, offset) for q in b] for p in a], np.float64).reshape(len(a), len(b))


def greedy_nms(boxes, scores, threshold, offset, *, max_output=None, suppress_at_equal=True):
  """Greedy NMS in descending score (ties: lower index first); non-finite scores dropped.

  Args:
    suppress_at_equal: a box whose IoU with a kept box equals the threshold
      is suppressed (Detectron's ``>=``) or kept (torchvision's ``>``).

  Returns:
    int64 indices of the kept boxes, in selection order.
  """
  order = [i for i in np.argsort(-np.asarray(scores), kind="stable") if np.isfinite(scores[i])]
  keep = []
  while order and (max_output is None or len(keep) < max_output):
    i = order.pop(0)
    keep.append(i)
    overlaps = [iou(boxes[i], boxes[j], offset) for j in order]
    order = [j for j, ov in zip(order, overlaps, strict=True)
             if not (ov >= threshold if suppress_at_equal else ov > threshold)]
  return np.array(keep, np.int64)


def soft_nms(boxes, scores, *, method, sigma, nt, thresh, offset):
  """Detectron's soft-NMS, sequentially, with float32 scores and overlaps.

  Args:
    method: "linear" (weight 1 - IoU above ``nt``), "gaussian"
      (exp(-IoU^2 / sigma)) or "hard" (weight 0 above ``nt``).
    thresh: boxes whose rescored score falls under it are dropped.

  Returns:
    (indices int64, scores float32) of every box not dropped, in selection
    order (the highest current score first; ties: lower index).
  """
  boxes = np.asarray(boxes, np.float32)
  s = np.asarray(scores, np.float32).copy()
  remaining = [i for i in range(len(s)) if np.isfinite(s[i])]
  out_i, out_s = [], []
  while remaining:
    m = max(remaining, key=lambda i: (s[i], -i))
    remaining.remove(m)
    out_i.append(m)
    out_s.append(s[m])
    for j in list(remaining):
      ov = np.float32(iou(boxes[m], boxes[j], offset))
      if ov <= 0:
        continue
      if method == "linear":
        w = 1.0 - ov if ov > nt else 1.0
      elif method == "gaussian":
        w = math.exp(-(ov * ov) / sigma)
      else:
        w = 0.0 if ov > nt else 1.0
      s[j] = np.float32(w) * s[j]
      if s[j] < thresh:
        remaining.remove(j)
  return np.array(out_i, np.int64), np.array(out_s, np.float32)
