"""Detectron's proposal recall (json_dataset_evaluator.evaluate_box_proposals), in numpy.

Per image, the non-crowd ground-truth boxes whose annotation ``area`` lies in
the area range (inclusive bounds: all [0, 1e5^2], small [0, 32^2], medium
[32^2, 96^2], large [96^2, 1e5^2]) are matched greedily to the first
``limit`` proposals: repeatedly the (proposal, gt) pair of highest IoU is
recorded for that gt and both are removed, min(#proposals, #gt) times; gt
left unmatched count as IoU 0. Recall at IoU threshold t is the fraction of
all those gt with recorded IoU >= t; AR is the mean recall over
t = 0.5, 0.55, ..., 0.95. IoU uses the box convention's width rule
(Detectron: ``x2 - x1 + 1``). This is Detectron's own number, not the COCO
API's AR.
"""

import numpy as np

from tfdet.ops.boxes import box_offset

AREA_RANGES = {"all": (0.0, 1e5 ** 2), "small": (0.0, 32.0 ** 2),
               "medium": (32.0 ** 2, 96.0 ** 2), "large": (96.0 ** 2, 1e5 ** 2)}
AREA_PREFIX = {"all": "AR", "small": "ARs", "medium": "ARm", "large": "ARl"}


def default_thresholds():
  """[10] IoU thresholds 0.5:0.95:0.05."""
  return np.arange(0.5, 0.95 + 1e-5, 0.05)


def box_iou(boxes, gt, *, convention):
  """[N, 4] x [G, 4] (x1, y1, x2, y2) -> [N, G] IoU (Detectron's bbox_overlaps for "detectron")."""
  off = box_offset(convention)
  boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
  gt = np.asarray(gt, np.float64).reshape(-1, 4)
  area_b = (boxes[:, 2] - boxes[:, 0] + off) * (boxes[:, 3] - boxes[:, 1] + off)
  area_g = (gt[:, 2] - gt[:, 0] + off) * (gt[:, 3] - gt[:, 1] + off)
  iw = (np.minimum(boxes[:, None, 2], gt[None, :, 2])
        - np.maximum(boxes[:, None, 0], gt[None, :, 0]) + off)
  ih = (np.minimum(boxes[:, None, 3], gt[None, :, 3])
        - np.maximum(boxes[:, None, 1], gt[None, :, 1]) + off)
  inter = np.clip(iw, 0, None) * np.clip(ih, 0, None)
  union = area_b[:, None] + area_g[None, :] - inter
  return np.where(inter > 0, inter / np.maximum(union, 1e-12), 0.0)


def matched_overlaps(proposals, gt_boxes, *, convention):
  """Greedy one-to-one coverage of each gt box (Detectron's loop).

  Args:
    proposals: [N, 4] in score order. gt_boxes: [G, 4].

  Returns:
    [G] float64, the IoU recorded for each gt (0 if unmatched), in the order
    the greedy loop records them (best covered first).
  """
  recorded = np.zeros(len(gt_boxes))
  if len(proposals) == 0 or len(gt_boxes) == 0:
    return recorded
  overlaps = box_iou(proposals, gt_boxes, convention=convention)
  for j in range(min(len(proposals), len(gt_boxes))):
    max_overlaps = overlaps.max(axis=0)  # [G] best proposal of each gt
    gt_ind = int(max_overlaps.argmax())
    box_ind = int(overlaps[:, gt_ind].argmax())
    recorded[j] = overlaps[box_ind, gt_ind]
    overlaps[box_ind, :] = -1
    overlaps[:, gt_ind] = -1
  return recorded


def proposal_recall(images, *, area="all", limit=None, thresholds=None, convention):
  """Detectron's evaluate_box_proposals.

  Args:
    images: iterable of dicts with "proposals" [N, 4] (score order, original
      pixels), "gt_boxes" [G, 4] and "gt_areas" [G] of the non-crowd gt.
    area: "all", "small", "medium" or "large".
    limit: proposals kept per image (None: all).
    thresholds: IoU thresholds (default 0.5:0.95:0.05).
    convention: box convention of the IoU.

  Returns:
    dict with "ar", "recalls" [T], "thresholds" [T], "num_pos".
  """
  lo, hi = AREA_RANGES[area]
  thresholds = default_thresholds() if thresholds is None else np.asarray(thresholds)
  overlaps, num_pos = [], 0
  for image in images:
    gt = np.asarray(image["gt_boxes"], np.float64).reshape(-1, 4)
    areas = np.asarray(image["gt_areas"], np.float64).reshape(-1)
    gt = gt[(areas >= lo) & (areas <= hi)]
    num_pos += len(gt)
    boxes = np.asarray(image["proposals"], np.float64).reshape(-1, 4)
    if len(boxes) == 0:
      continue
    if limit is not None:
      boxes = boxes[:limit]
    overlaps.append(matched_overlaps(boxes, gt, convention=convention))
  overlaps = np.concatenate(overlaps) if overlaps else np.zeros(0)
  recalls = np.array([(overlaps >= t).sum() / max(float(num_pos), 1e-12) for t in thresholds])
  return {"ar": float(recalls.mean()), "recalls": recalls, "thresholds": thresholds,
          "num_pos": num_pos}


def proposal_metrics(images, *, limits=(100, 1000), convention):
  """AR, ARs, ARm, ARl at each limit: {"AR@100": ..., "ARs@100": ..., "AR@1000": ...}."""
  images = list(images)
  return {f"{AREA_PREFIX[area]}@{limit}": proposal_recall(images, area=area, limit=limit,
                                                          convention=convention)["ar"]
          for limit in limits for area in AREA_RANGES}


def to_file_boxes(boxes, convention):
  """[N, 4] boxes of a convention -> Detectron's inclusive ones (x2, y2 the last pixel),
  the convention of proposal files (`tfdet.data.proposal_files`)."""
  boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
  return boxes - np.array([0, 0, 1, 1], np.float32) * (1.0 - box_offset(convention))


def ground_truth_from_coco(coco_gt, image_id, *, convention):
  """The non-crowd gt boxes [G, 4] and areas [G] of one image, as Detectron's roidb holds them.

  Boxes are COCO xywh turned into (x1, y1, x2, y2) (x2 = x + w - 1 in
  "detectron", x + w in "modern"), clipped to the image; boxes without
  positive area (x2 <= x1 or y2 <= y1) are dropped, as Detectron's
  json_dataset does. Areas are the annotations' ``area``.
  """
  off = box_offset(convention)
  info = coco_gt.imgs[image_id]
  boxes, areas = [], []
  for ann in coco_gt.imgToAnns.get(image_id, []):
    if ann.get("iscrowd", 0):
      continue
    x, y, w, h = ann["bbox"]
    x1 = min(max(x, 0.0), info["width"] - off)
    y1 = min(max(y, 0.0), info["height"] - off)
    x2 = min(max(x + max(w - off, 0.0), 0.0), info["width"] - off)
    y2 = min(max(y + max(h - off, 0.0), 0.0), info["height"] - off)
    if ann["area"] > 0 and x2 > x1 and y2 > y1:
      boxes.append([x1, y1, x2, y2])
      areas.append(ann["area"])
  return np.asarray(boxes, np.float64).reshape(-1, 4), np.asarray(areas, np.float64)
