"""COCO evaluation with pycocotools, from tfdet's detection outputs.

Results are written as Detectron writes them (json_dataset_evaluator):
``bbox = [x1, y1, w, h]`` with ``w = x2 - x1 + 1`` in the "detectron"
convention (``x2 - x1`` in "modern"), scores as floats, the data set's own
category ids, segmentations as compressed RLE of the pasted masks, and
keypoints (`keypoints_to_coco`) as ``[x1, y1, 1, x2, y2, 1, ...]`` in the
frame of the annotations (see `tfdet.modeling.detectors.outputs`), each
instance scored by its box score (Detectron's ``KRCNN.KEYPOINT_CONFIDENCE:
bbox``, the setting of every 12_2017 keypoint config) or by its mean keypoint
logit (``logit``).
"""

import contextlib
import io

import numpy as np
from pycocotools import mask as mask_util
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from tfdet.ops.boxes import box_offset

# COCOeval.stats order for "bbox" and "segm".
STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl",
              "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
# COCOeval.stats order for "keypoints": OKS thresholds instead of IoU, 20
# detections per image, and no small-area row (COCO does not score the
# keypoints of people under 32^2 pixels).
KEYPOINT_STAT_NAMES = ("AP", "AP50", "AP75", "APm", "APl",
                       "AR", "AR50", "AR75", "ARm", "ARl")
# How a keypoint instance is scored (Detectron's KRCNN.KEYPOINT_CONFIDENCE):
# "bbox" its detection's score, "logit" the mean of its keypoints' scores
# (heatmap logits). Detectron's third option, "prob" (the mean softmax
# probability at each keypoint), needs probabilities that the output layout
# (x, y, logit) does not carry.
KEYPOINT_CONFIDENCES = ("bbox", "logit")


def stat_names(iou_type):
  """The names of COCOeval.stats for an iou_type ("bbox", "segm" or "keypoints")."""
  return KEYPOINT_STAT_NAMES if iou_type == "keypoints" else STAT_NAMES


def detections_to_coco(image_id, boxes, scores, classes, num, *, class_to_category,
                       convention, masks=None):
  """One image's detections as COCO result dicts.

  Args:
    image_id: int.
    boxes: [D, 4] (x1, y1, x2, y2) in original-image pixels.
    scores: [D]. classes: [D] contiguous class ids (1..K). num: valid rows.
    class_to_category: dict contiguous id -> data set category id.
    convention: "detectron" or "modern" (the box width rule).
    masks: None or [D, H, W] uint8 binary masks in the original image.

  Returns:
    list of dicts with image_id, category_id, bbox, score[, segmentation].
  """
  off = box_offset(convention)
  results = []
  for i in range(int(num)):
    x1, y1, x2, y2 = (float(v) for v in boxes[i])
    entry = {
        "image_id": int(image_id),
        "category_id": int(class_to_category[int(classes[i])]),
        "bbox": [x1, y1, x2 - x1 + off, y2 - y1 + off],
        "score": float(scores[i]),
    }
    if masks is not None:
      rle = mask_util.encode(np.asfortranarray(masks[i].astype(np.uint8)))
      rle["counts"] = rle["counts"].decode("ascii")
      entry["segmentation"] = rle
    results.append(entry)
  return results


def keypoints_to_coco(image_id, keypoints, scores, classes, num, *, class_to_category,
                      confidence="bbox"):
  """One image's keypoint detections as COCO "keypoints" result dicts.

  Each keypoint is written as (x, y, 1): COCOeval ignores the visibility of
  results, and Detectron writes 1 for every keypoint too.

  Args:
    image_id: int.
    keypoints: [D, J, 3] (x, y, score) in original-image pixels
      (`outputs.DETECTION_KEYPOINTS` of one image).
    scores: [D] detection (box) scores. classes: [D] contiguous class ids
      (1..K). num: valid rows.
    class_to_category: dict contiguous id -> data set category id.
    confidence: the instance score, one of `KEYPOINT_CONFIDENCES`: "bbox"
      (the detection's score; Detectron's default and its 12_2017 configs'
      setting) or "logit" (the mean of the J keypoint scores).

  Returns:
    list of dicts with image_id, category_id, keypoints (3 J floats), score.
  """
  if confidence not in KEYPOINT_CONFIDENCES:
    raise ValueError(f"confidence must be one of {KEYPOINT_CONFIDENCES}, got {confidence!r}")
  keypoints = np.asarray(keypoints, np.float64)
  results = []
  for i in range(int(num)):
    xy1 = np.concatenate([keypoints[i, :, :2], np.ones_like(keypoints[i, :, :1])], axis=1)
    score = scores[i] if confidence == "bbox" else np.mean(keypoints[i, :, 2])
    results.append({
        "image_id": int(image_id),
        "category_id": int(class_to_category[int(classes[i])]),
        "keypoints": [float(v) for v in xy1.reshape(-1)],
        "score": float(score),
    })
  return results


def has_keypoints(coco_gt):
  """Whether a COCO ground truth defines keypoints (a category with a "keypoints" list)."""
  return any(cat.get("keypoints") for cat in coco_gt.loadCats(coco_gt.getCatIds()))


def load_ground_truth(annotation_file):
  """A quiet `COCO` object for an annotation json."""
  with contextlib.redirect_stdout(io.StringIO()):
    return COCO(annotation_file)


def evaluate(coco_gt, results, iou_type, *, image_ids=None):
  """Runs COCOeval and returns its summary numbers (12 for boxes and masks, 10 for keypoints).

  Args:
    coco_gt: a pycocotools COCO (see `load_ground_truth`).
    results: list of result dicts (`detections_to_coco`, `keypoints_to_coco`).
    iou_type: "bbox", "segm" or "keypoints".
    image_ids: None for every image of coco_gt, else the images evaluated.

  Returns:
    (dict name -> float, names from `stat_names(iou_type)`, the printed
    summary text). With no results every number is 0 (pycocotools cannot
    load an empty list).
  """
  names = stat_names(iou_type)
  if not results:
    return {name: 0.0 for name in names}, "no detections"
  out = io.StringIO()
  with contextlib.redirect_stdout(out):
    coco_dt = coco_gt.loadRes(results)
    ev = COCOeval(coco_gt, coco_dt, iou_type)
    if image_ids is not None:
      ev.params.imgIds = list(image_ids)
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
  stats = {name: float(v) for name, v in zip(names, ev.stats, strict=True)}
  return stats, out.getvalue()
