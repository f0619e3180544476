"""Merging the predictions of test-time transforms (Detectron's TTA heuristics).

Pure numpy on the per-transform predictions of one image, already mapped
back to the identity transform's frame by the caller (`tfdet.evaluation.tta`)
except where a function says it does the mapping:

* masks: TEST.MASK_AUG.HEUR "SOFT_AVG", "SOFT_MAX", "LOGIT_AVG"
  (`merge_mask_probabilities`), `flip_masks`;
* keypoint heatmaps: TEST.KPS_AUG.HEUR "HM_AVG", "HM_MAX" with the optional
  size-dependent choice of transforms (`merge_heatmaps`), and
  `flip_keypoint_heatmaps` (mirror plus COCO's left/right swap).

Heatmaps are [..., M, M, J] (keypoints last, as tfdet's mask logits keep
classes last); Detectron's are [R, J, M, M].
"""

import numpy as np

from tfdet.data import schema
from tfdet.ops import boxes as box_ops

MASK_HEURISTICS = ("SOFT_AVG", "SOFT_MAX", "LOGIT_AVG")
KEYPOINT_HEURISTICS = ("HM_AVG", "HM_MAX")

_LOGIT_FLOOR = 1e-20  # Detectron's floor on p when it turns probabilities into logits


def merge_mask_probabilities(probabilities, heuristic, logits=None):
  """Combines mask predictions of T transforms (TEST.MASK_AUG.HEUR).

  Args:
    probabilities: [T, ...] sigmoid probabilities, flipped ones already
      flipped back.
    heuristic: "SOFT_AVG" (mean), "SOFT_MAX" (max) or "LOGIT_AVG" (sigmoid
      of the mean logit).
    logits: optional [T, ...] logits of the same predictions for LOGIT_AVG;
      None recovers them from the probabilities as Detectron does
      (``log(p / (1 - p))``, p floored at 1e-20).

  Returns:
    [...] float32 probabilities.
  """
  probabilities = np.asarray(probabilities, np.float32)
  if heuristic == "SOFT_AVG":
    return probabilities.mean(axis=0)
  if heuristic == "SOFT_MAX":
    return probabilities.max(axis=0)
  if heuristic == "LOGIT_AVG":
    if logits is None:
      with np.errstate(divide="ignore"):
        logits = -np.log((1.0 - probabilities) / np.maximum(probabilities, _LOGIT_FLOOR))
    mean = np.mean(np.asarray(logits, np.float32), axis=0)
    return (1.0 / (1.0 + np.exp(-mean))).astype(np.float32)
  raise ValueError(f"mask heuristic must be one of {MASK_HEURISTICS}, got {heuristic!r}")


def merge_heatmaps(heatmaps, heuristic, *, boxes=None, scales=None, test_scale=None,
                   area_threshold=None, convention="detectron"):
  """Combines keypoint heatmaps of T transforms (TEST.KPS_AUG.HEUR, SCALE_SIZE_DEP).

  Args:
    heatmaps: [T, D, M, M, J] heatmap logits, flipped ones already flipped
      back (`flip_keypoint_heatmaps`).
    heuristic: "HM_AVG" (mean) or "HM_MAX" (max) over the transforms.
    boxes: None, or [D, 4] the detections (original pixels) for the
      size-dependent combination (Detectron's combine_heatmaps_size_dep):
      an object whose box area is below `area_threshold` ignores the
      transforms whose scale is below `test_scale` (downscaling), a larger
      one those above it (upscaling).
    scales: [T] shorter side of each transform (with boxes).
    test_scale: TEST.SCALE (with boxes).
    area_threshold: TEST.KPS_AUG.AREA_TH (with boxes).
    convention: box convention of `boxes` (areas with "+1" in "detectron").

  Returns:
    [D, M, M, J] float32.
  """
  heatmaps = np.asarray(heatmaps, np.float32)
  if heuristic not in KEYPOINT_HEURISTICS:
    raise ValueError(f"keypoint heuristic must be one of {KEYPOINT_HEURISTICS}, "
                     f"got {heuristic!r}")
  if boxes is None:
    return heatmaps.mean(axis=0) if heuristic == "HM_AVG" else heatmaps.max(axis=0)
  boxes = np.asarray(boxes, np.float32)
  off = box_ops.box_offset(convention)
  areas = (boxes[:, 2] - boxes[:, 0] + off) * (boxes[:, 3] - boxes[:, 1] + off)  # [D]
  small = areas < area_threshold
  scales = np.asarray(scales, np.float32)[:, None]  # [T, 1]
  use = ~((small[None] & (scales < test_scale)) | (~small[None] & (scales > test_scale)))
  use = use[:, :, None, None, None]  # [T, D, 1, 1, 1]
  if heuristic == "HM_AVG":
    return (np.where(use, heatmaps, 0.0).sum(axis=0) / use.sum(axis=0)).astype(np.float32)
  return np.where(use, heatmaps, -np.inf).max(axis=0)


def flip_masks(masks):
  """Mirrors [..., M, M] mask predictions left-right (Detectron's ``[..., ::-1]``)."""
  return np.asarray(masks)[..., ::-1]


def flip_keypoint_heatmaps(heatmaps):
  """Mirrors [..., M, M, J] keypoint heatmaps left-right and swaps left/right keypoints.

  Detectron's flip_heatmaps (its heatmaps are [D, J, M, M]; tfdet's keep
  the keypoints last): channel j of the result is the mirrored channel of
  j's COCO counterpart (`schema.KEYPOINT_FLIP_PERMUTATION`).
  """
  heatmaps = np.asarray(heatmaps)
  return heatmaps[..., ::-1, :][..., list(schema.KEYPOINT_FLIP_PERMUTATION)]
