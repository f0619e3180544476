"""COCO evaluation with pycocotools, from tfdet's detection outputs.

Results are written as Detectron writes them (json_dataset_evaluator):
``bbox = [x1, y1, w, h]`` with ``w = x2 - x1 + 1`` in the "detectron"
convention (``x2 - x1`` in "modern"), scores as floats, the data set's own
category ids, and segmentations as compressed RLE of the pasted masks.
"""

import contextlib
import io

import numpy as np
from pycocotools import mask as mask_util
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from tfdet.ops.boxes import box_offset

# COCOeval.stats order.
STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl",
              "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


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


def load_ground_truth(annotation_file):
  """A quiet `COCO` object for an annotation json."""
  with contextlib.redirect_stdout(io.StringIO()):
    return COCO(annotation_file)


def evaluate(coco_gt, results, iou_type, *, image_ids=None):
  """Runs COCOeval and returns its 12 summary numbers.

  Args:
    coco_gt: a pycocotools COCO (see `load_ground_truth`).
    results: list of result dicts (`detections_to_coco`).
    iou_type: "bbox", "segm" or "keypoints".
    image_ids: None for every image of coco_gt, else the images evaluated.

  Returns:
    (dict name -> float from STAT_NAMES, the printed summary text). With no
    results every number is 0 (pycocotools cannot load an empty list).
  """
  if not results:
    return {name: 0.0 for name in STAT_NAMES}, "no detections"
  out = io.StringIO()
  with contextlib.redirect_stdout(out):
    coco_dt = coco_gt.loadRes(results)
    ev = COCOeval(coco_gt, coco_dt, iou_type)
    if image_ids is not None:
      ev.params.imgIds = list(image_ids)
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
  stats = {name: float(v) for name, v in zip(STAT_NAMES, ev.stats, strict=False)}
  return stats, out.getvalue()
