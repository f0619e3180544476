"""Reading and cleaning COCO annotations (instances_*.json, person_keypoints_*.json).

Pure Python + pycocotools, no TensorFlow: this module turns a COCO json into
per-image lists of clean instances ready for `tfdet.data.schema.make_example`.

Cleaning follows Detectron (`detectron/datasets/json_dataset.py`):

* polygons with fewer than 6 coordinates (< 3 points) are dropped; a
  non-crowd polygon instance left with no polygon is skipped
  (``no_valid_polygon``). Odd-length polygons are malformed and dropped too.
* boxes are clipped to the image as continuous intervals ``[0, W] x [0, H]``
  (not dropped); an instance whose clipped box has zero width or height, or
  whose ``area`` is <= 0, is skipped (``degenerate_box``). Detectron's own
  rule is stricter in its "+1" convention (``x2 > x1`` with
  ``x2 = x + w - 1``, i.e. ``w > 1``); the decoder can apply it.
* crowd regions are kept with ``is_crowd = 1``; RLE segmentations (crowd or
  not) are stored compressed, uncompressed RLEs are compressed here.
* a non-crowd RLE instance (partly occluded objects of the synthetic data
  set, other non-COCO sources) also gets polygons traced from its mask
  (`data_prep.mask_to_polygons`: outer boundaries of its 4-connected
  components along pixel edges, holes filled, simplified: by default
  losslessly unless the instance would need more than TRACE_MAX_VERTICES
  vertices, else at ``polygon_tolerance`` pixels), so that it has a Mask R-CNN target; its RLE
  is kept too. An RLE that decodes to an empty mask keeps 0 polygons, as
  before. Crowd regions stay RLE-only (never mask targets).
* an annotation whose numbers are not finite numbers (a NaN or infinite
  value, a string, null: in ``bbox``, ``area``, a polygon, ``keypoints``), or
  whose ``id`` or ``iscrowd`` is not an integer (0/1), is bad input:
  `load_dataset` raises naming the annotation, or skips and counts it
  (``bad_annotation``). ``NaN <= 0`` is false, so such values would pass the
  degenerate-box rule and reach the shards.
* images without annotations are kept (Detectron keeps them for evaluation;
  its training roidb filter drops images without ground truth, which is the
  input pipeline's job).

Category ids are mapped to contiguous ``1..K`` in sorted category-id order.
"""

import dataclasses
import json
import math
import os

from pycocotools import mask as mask_utils

from data_prep import mask_to_polygons as m2p
from tfdet.data import schema

REQUIRED_IMAGE_FIELDS = ("id", "file_name", "height", "width")
REQUIRED_ANNOTATION_FIELDS = ("id", "image_id", "category_id", "bbox", "area", "segmentation")
REQUIRED_CATEGORY_FIELDS = ("id", "name")

# Reasons an annotation or image is skipped (summary keys).
SKIP_DEGENERATE_BOX = "degenerate_box"
SKIP_NO_VALID_POLYGON = "no_valid_polygon"
SKIP_BAD_ANNOTATION = "bad_annotation"
SKIP_BAD_IMAGE = "bad_image"


class BadInputError(ValueError):
  """An input file or record is malformed; the message names the file and the id."""


@dataclasses.dataclass
class Instance:
  """One clean instance, in the fields of `schema.make_example`."""
  box_xywh: list
  class_id: int
  category_id: int
  is_crowd: int
  area: float
  annotation_id: int
  polygons: list
  rle: bytes
  keypoints: list | None
  polygons_from_rle: bool = False  # polygons traced from a non-crowd RLE mask


@dataclasses.dataclass
class ImageEntry:
  """One image and its raw (not yet cleaned) annotations."""
  image_id: int
  file_name: str
  height: int
  width: int
  annotations: list


@dataclasses.dataclass
class Dataset:
  """A validated COCO json: images (json order) with their annotations, and the label map."""
  images: list
  category_to_class: dict
  label_map: dict
  has_keypoints: bool
  bad_annotations: int
  bad_annotation_messages: list


def load_json(path):
  """Loads a json file, with a clear error naming the file when it is not valid json."""
  try:
    with open(path) as f:
      return json.load(f)
  except json.JSONDecodeError as e:
    raise BadInputError(f"{path}: not valid json ({e})") from e


def _missing(record, fields):
  return [k for k in fields if k not in record]


def build_label_map(categories, path):
  """Contiguous ids 1..K in sorted category-id order.

  Args:
    categories: the json's ``categories`` list.
    path: the json file (for error messages).

  Returns:
    (category_to_class dict, label_map dict). The label map is json-ready:
    ``{"classes": {"1": {"category_id", "name"[, "keypoints", "skeleton"]}, ...}}``
    plus top-level ``keypoint_names`` / ``skeleton`` when a category has them.
  """
  by_id = {}
  for cat in categories:
    missing = _missing(cat, REQUIRED_CATEGORY_FIELDS)
    if missing:
      raise BadInputError(f"{path}: category {cat.get('id', '?')} lacks fields {missing}")
    if cat["id"] in by_id:
      raise BadInputError(f"{path}: category id {cat['id']} appears twice")
    by_id[cat["id"]] = cat
  category_to_class = {cid: i + 1 for i, cid in enumerate(sorted(by_id))}
  classes = {}
  label_map = {"classes": classes}
  for cid, cls in category_to_class.items():
    cat = by_id[cid]
    entry = {"category_id": cid, "name": cat["name"]}
    if "keypoints" in cat:
      entry["keypoints"] = list(cat["keypoints"])
      entry["skeleton"] = [list(s) for s in cat.get("skeleton", [])]
      label_map["keypoint_names"] = entry["keypoints"]
      label_map["skeleton"] = entry["skeleton"]
    classes[str(cls)] = entry
  return category_to_class, label_map


def load_dataset(path, *, skip_bad_annotations=False):
  """Reads and validates a COCO json.

  Json-level problems (a missing field, a category id absent from
  ``categories``, an annotation whose image id is unknown, keypoints of the
  wrong length) raise `BadInputError` naming the file and the id, or with
  ``skip_bad_annotations`` the annotation is dropped and counted.

  Args:
    path: the json file.
    skip_bad_annotations: skip and count bad annotations instead of raising.

  Returns:
    Dataset.
  """
  data = load_json(path)
  for key in ("images", "annotations", "categories"):
    if key not in data:
      raise BadInputError(f"{path}: top-level field {key!r} is missing")
  category_to_class, label_map = build_label_map(data["categories"], path)
  images = {}
  for img in data["images"]:
    missing = _missing(img, REQUIRED_IMAGE_FIELDS)
    if missing:
      raise BadInputError(f"{path}: image {img.get('id', '?')} lacks fields {missing}")
    problem = _image_problem(img)
    if problem:
      raise BadInputError(f"{path}: image {img['id']!r}: {problem}")
    if img["id"] in images:
      raise BadInputError(f"{path}: image id {img['id']} appears twice")
    images[img["id"]] = ImageEntry(int(img["id"]), img["file_name"], int(img["height"]),
                                   int(img["width"]), [])
  has_keypoints = "keypoint_names" in label_map or any(
      "keypoints" in a for a in data["annotations"])
  bad, messages = 0, []
  for ann in data["annotations"]:
    problem = _annotation_problem(ann, images, category_to_class)
    if problem:
      message = f"{path}: annotation {ann.get('id', '?')}: {problem}"
      if not skip_bad_annotations:
        raise BadInputError(message)
      bad += 1
      messages.append(message)
      continue
    images[ann["image_id"]].annotations.append(ann)
  return Dataset(list(images.values()), category_to_class, label_map, has_keypoints, bad,
                 messages)


def _is_int(value):
  return isinstance(value, int) and not isinstance(value, bool)


def _is_finite_number(value):
  """An int or float (not a bool, not a string) that is neither NaN nor infinite."""
  return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _not_finite_numbers(values):
  """None if ``values`` is a list of finite numbers, else a short description of the first offender."""
  if not isinstance(values, (list, tuple)):
    return f"not a list ({type(values).__name__})"
  for i, v in enumerate(values):
    if not _is_finite_number(v):
      return f"value {i} is {v!r}"
  return None


def _short(value, limit=80):
  text = repr(value)
  return text if len(text) <= limit else text[:limit] + "...]"


def _image_problem(img):
  """Returns what is wrong with an image record's fields, or None."""
  if not _is_int(img["id"]):
    return f"id must be an integer, got {img['id']!r}"
  for key in ("height", "width"):
    if not _is_int(img[key]) or img[key] <= 0:
      return f"{key} must be a positive integer, got {img[key]!r}"
  if not isinstance(img["file_name"], str) or not img["file_name"]:
    return f"file_name must be a non-empty string, got {img['file_name']!r}"
  return None


def _numbers_problem(ann):
  """What is wrong with an annotation's ids, iscrowd, bbox, area, polygons or keypoints, or None."""
  for key in ("id", "image_id", "category_id"):
    if not _is_int(ann[key]):
      return f"{key} must be an integer, got {_short(ann[key])}"
  crowd = ann.get("iscrowd", 0)
  if not isinstance(crowd, int) or crowd not in (0, 1):  # a bool is an int here: false/true
    return f"iscrowd must be 0 or 1, got {crowd!r}"
  bbox = ann["bbox"]
  if not isinstance(bbox, (list, tuple)) or len(bbox) != 4 or _not_finite_numbers(bbox):
    return f"bbox must be 4 finite numbers, got {_short(bbox)}"
  if not _is_finite_number(ann["area"]):
    return f"area must be a finite number, got {ann['area']!r}"
  seg = ann["segmentation"]
  if isinstance(seg, list):
    for k, polygon in enumerate(seg):
      problem = _not_finite_numbers(polygon)
      if problem:
        return f"polygon {k} must be a list of finite numbers: {problem}"
  if "keypoints" in ann:
    problem = _not_finite_numbers(ann["keypoints"])
    if problem:
      return f"keypoints must be finite numbers: {problem}"
  return None


def _annotation_problem(ann, images, category_to_class):
  """Returns a description of what is wrong with an annotation, or None."""
  missing = _missing(ann, REQUIRED_ANNOTATION_FIELDS)
  if missing:
    return f"lacks fields {missing}"
  problem = _numbers_problem(ann)
  if problem:
    return problem
  if ann["image_id"] not in images:
    return f"image id {ann['image_id']} is not in 'images'"
  if ann["category_id"] not in category_to_class:
    return f"category id {ann['category_id']} is not in 'categories'"
  if "keypoints" in ann and len(ann["keypoints"]) != schema.NUM_KEYPOINTS * 3:
    return f"keypoints need {schema.NUM_KEYPOINTS * 3} numbers, got {len(ann['keypoints'])}"
  seg = ann["segmentation"]
  if isinstance(seg, dict):
    if "counts" not in seg or "size" not in seg:
      return "RLE segmentation lacks 'counts' or 'size'"
    counts = seg["counts"]
    if not isinstance(counts, str) and not (
        isinstance(counts, list) and all(_is_int(c) and c >= 0 for c in counts)):
      return f"RLE counts must be a string or a list of non-negative integers, got {_short(counts)}"
    if not isinstance(seg["size"], list) or len(seg["size"]) != 2:
      return f"RLE size must be [height, width], got {_short(seg['size'])}"
    img = images[ann["image_id"]]
    if list(seg["size"]) != [img.height, img.width]:
      return f"RLE size {seg['size']} differs from the image's [{img.height}, {img.width}]"
  elif not isinstance(seg, list):
    return f"segmentation must be a list of polygons or an RLE dict, got {type(seg).__name__}"
  return None


def clip_box_xywh(bbox, width, height):
  """Clips a COCO [x, y, w, h] box to [0, W] x [0, H] (continuous); returns [x, y, w, h]."""
  x, y, w, h = (float(v) for v in bbox)
  x1, y1 = min(max(x, 0.0), width), min(max(y, 0.0), height)
  x2, y2 = min(max(x + w, 0.0), width), min(max(y + h, 0.0), height)
  return [x1, y1, x2 - x1, y2 - y1]


def compressed_rle(seg, height, width):
  """A COCO RLE dict (compressed or uncompressed counts) -> compressed counts bytes."""
  counts = seg["counts"]
  if isinstance(counts, list):  # uncompressed: compress with pycocotools
    counts = mask_utils.frPyObjects(seg, height, width)["counts"]
  return counts.encode() if isinstance(counts, str) else bytes(counts)


# Vertex budget of a traced instance when no fixed tolerance is asked for:
# below the input pipeline's default cap (256), which would otherwise decimate.
TRACE_MAX_VERTICES = 192


def rle_polygons(rle, height, width, tolerance):
  """Polygons traced from a compressed RLE's mask (`mask_to_polygons`), largest first."""
  mask = mask_utils.decode({"size": [height, width], "counts": rle})
  if tolerance is None:
    return m2p.mask_to_polygons_within(mask, TRACE_MAX_VERTICES)[0]
  return m2p.mask_to_polygons(mask, tolerance)


def clean_instance(ann, image, category_to_class, has_keypoints, *, polygon_tolerance=None):
  """Cleans one validated annotation.

  Args:
    ann: the annotation dict (already passed `load_dataset`'s checks).
    image: its ImageEntry.
    category_to_class: category id -> contiguous class.
    has_keypoints: whether the data set carries keypoints (zeros when absent).
    polygon_tolerance: Douglas-Peucker tolerance (pixels) of the polygons
      traced from a non-crowd RLE; 0 keeps the exact pixel-edge outline;
      None (default) is lossless unless that exceeds TRACE_MAX_VERTICES
      vertices, then the smallest coarser tolerance that fits.

  Returns:
    (Instance, None) or (None, skip reason).
  """
  is_crowd = int(ann.get("iscrowd", 0))
  box = clip_box_xywh(ann["bbox"], image.width, image.height)
  if box[2] <= 0 or box[3] <= 0 or float(ann["area"]) <= 0:
    return None, SKIP_DEGENERATE_BOX
  seg = ann["segmentation"]
  polygons, rle, from_rle = [], b"", False
  if isinstance(seg, dict):
    rle = compressed_rle(seg, image.height, image.width)
    if not is_crowd:
      polygons = rle_polygons(rle, image.height, image.width, polygon_tolerance)
      from_rle = bool(polygons)
  else:
    polygons = [[float(v) for v in p] for p in seg if len(p) >= 6 and len(p) % 2 == 0]
    if not polygons:
      return None, SKIP_NO_VALID_POLYGON
  keypoints = None
  if has_keypoints:
    keypoints = [float(v) for v in ann.get("keypoints", [0.0] * (schema.NUM_KEYPOINTS * 3))]
  return Instance(box, category_to_class[ann["category_id"]], int(ann["category_id"]), is_crowd,
                  float(ann["area"]), int(ann["id"]), polygons, rle, keypoints, from_rle), None


def image_path(image_dir, image):
  """The file of an ImageEntry."""
  return os.path.join(image_dir, image.file_name)
