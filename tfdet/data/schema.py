"""The TFRecord schema of tfdet: one `tf.train.Example` per image.

Written by `data_prep/` and read by `tfdet.data` (decoder and input
pipeline); both import the feature keys from here, so the two cannot drift.

Geometry is stored **convention-free**, in the original image's pixels, as
COCO has it: boxes are COCO ``[x, y, w, h]`` floats already clipped to the
image as continuous intervals (``0 <= x`` and ``x + w <= width``). The
decoder turns them into ``(x1, y1, x2, y2)`` of the chosen box convention
(`tfdet.ops.boxes`): ``x2 = x + w`` ("modern") or ``x2 = x + max(w - 1, 0)``
("detectron", as Detectron's xywh_to_xyxy), so one set of shards serves both.

Masks are stored as **polygons**, not bitmaps: Detectron builds each mask
target by rasterizing the instance's polygons inside the RoI at 28x28
(polys_to_mask_wrt_box), which a bitmap cropped and resized from a
full-image mask does not reproduce exactly, and polygons are far smaller
than bitmaps. An instance's polygons are flattened as

* ``POLYGON_XY``: every vertex ``x0, y0, x1, y1, ...`` of every polygon of
  every instance, concatenated (float);
* ``POLYGON_LENGTHS``: the number of floats of each polygon (int64, >= 6);
* ``POLYGONS_PER_INSTANCE``: how many polygons each instance has (int64).

Instances whose segmentation is RLE (COCO crowd regions, or any RLE in a
non-COCO source) have 0 polygons and keep their RLE in ``MASK_RLE`` as the
compressed COCO RLE string (empty bytes for polygon instances); crowd
regions are only used to ignore detections/anchors, never as mask targets,
as in Detectron.

Non-crowd RLE instances (e.g. the partly occluded objects of the synthetic
data set) carry **both**: their RLE in ``MASK_RLE`` and polygons traced from
the mask by the converter (`data_prep.mask_to_polygons`), so that they get
mask targets like polygon instances. The polygons are the outer boundaries
of the mask's 4-connected components along pixel edges (vertices at integer
pixel corners), largest first, with holes filled (COCO polygons cannot
express holes), simplified by Douglas-Peucker at the converter's
``--polygon_tolerance`` (default 1 pixel; 0 keeps the exact outline, whose
pixel-centre rasterization reproduces the hole-filled mask exactly). Only
crowd instances, and non-crowd RLEs of an empty mask, have 0 polygons.

Keypoints are ``KEYPOINTS``: ``num_instances * 17 * 3`` floats
``(x, y, visibility)`` in COCO's order and flags (0 not labelled, 1 labelled
but not visible, 2 visible); absent for data sets without keypoints (the
decoder then fills zeros).

Class ids: ``CLASS`` is the contiguous id in ``1..num_classes`` (0 is
background); ``CATEGORY_ID`` keeps the data set's own id for evaluation. The
mapping is saved beside the shards as ``label_map.json`` (`LABEL_MAP_FILE`).

``label_map.json`` (written by data_prep's ``build_label_map``) is one json
object: ``"classes"`` maps each contiguous class id, as a string ``"1"`` ..
``"K"``, to ``{"category_id": <the data set's id>, "name": <category
name>}``; classes are numbered in ascending category-id order. A category
with keypoints (COCO's person) also has ``"keypoints"`` (its keypoint names)
and ``"skeleton"`` (pairs of 1-based keypoint indices) in its entry, and the
same two lists are repeated at the top level as ``"keypoint_names"`` and
``"skeleton"``; both top-level keys are absent for data sets without
keypoints. Example::

  {"classes": {"1": {"category_id": 1, "name": "person",
                     "keypoints": ["nose", ...], "skeleton": [[16, 14], ...]},
               "2": {"category_id": 2, "name": "ellipse"}},
   "keypoint_names": ["nose", ...], "skeleton": [[16, 14], ...]}
"""

import tensorflow as tf

NUM_KEYPOINTS = 17
LABEL_MAP_FILE = "label_map.json"

# Image-level features.
IMAGE_ENCODED = "image/encoded"  # bytes: JPEG or PNG
IMAGE_FORMAT = "image/format"  # bytes: b"jpeg" or b"png"
IMAGE_ID = "image/id"  # int64: the data set's image id
IMAGE_FILENAME = "image/filename"  # bytes
IMAGE_HEIGHT = "image/height"  # int64
IMAGE_WIDTH = "image/width"  # int64

# Per-instance features (variable length; num_instances rows).
BOX_XYWH = "objects/bbox_xywh"  # float, 4 per instance, clipped to the image
CLASS = "objects/class"  # int64, contiguous 1..num_classes
CATEGORY_ID = "objects/category_id"  # int64, the data set's id
IS_CROWD = "objects/is_crowd"  # int64, 0 or 1
AREA = "objects/area"  # float, the annotation's segmentation area
ANNOTATION_ID = "objects/id"  # int64
POLYGON_XY = "objects/polygon_xy"  # float, see module docstring
POLYGON_LENGTHS = "objects/polygon_lengths"  # int64, floats per polygon
POLYGONS_PER_INSTANCE = "objects/polygons_per_instance"  # int64
MASK_RLE = "objects/mask_rle"  # bytes per instance, compressed RLE or b""
KEYPOINTS = "objects/keypoints"  # float, 17 * 3 per instance

# Precomputed proposals (Fast R-CNN), merged into the image's record by
# data_prep/add_proposals.py: (x1, y1, x2, y2) in original-image pixels as the
# proposal file gives them (Detectron: its legacy convention), and scores.
PROPOSAL_BOXES = "proposals/boxes"  # float, 4 per proposal
PROPOSAL_SCORES = "proposals/scores"  # float

# COCO's keypoint names and the horizontal-flip permutation (left <-> right).
KEYPOINT_NAMES = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder",
    "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip",
    "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle")
KEYPOINT_FLIP_PERMUTATION = (0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15)


def feature_spec():
  """The parsing spec of one serialized example (`tf.io.parse_single_example`)."""
  fixed = tf.io.FixedLenFeature
  var = tf.io.VarLenFeature
  return {
      IMAGE_ENCODED: fixed([], tf.string),
      IMAGE_FORMAT: fixed([], tf.string, default_value="jpeg"),
      IMAGE_ID: fixed([], tf.int64),
      IMAGE_FILENAME: fixed([], tf.string, default_value=""),
      IMAGE_HEIGHT: fixed([], tf.int64),
      IMAGE_WIDTH: fixed([], tf.int64),
      BOX_XYWH: var(tf.float32),
      CLASS: var(tf.int64),
      CATEGORY_ID: var(tf.int64),
      IS_CROWD: var(tf.int64),
      AREA: var(tf.float32),
      ANNOTATION_ID: var(tf.int64),
      POLYGON_XY: var(tf.float32),
      POLYGON_LENGTHS: var(tf.int64),
      POLYGONS_PER_INSTANCE: var(tf.int64),
      MASK_RLE: var(tf.string),
      KEYPOINTS: var(tf.float32),
      PROPOSAL_BOXES: var(tf.float32),
      PROPOSAL_SCORES: var(tf.float32),
  }


def _bytes(values):
  return tf.train.Feature(bytes_list=tf.train.BytesList(value=list(values)))


def _floats(values):
  return tf.train.Feature(float_list=tf.train.FloatList(value=list(values)))


def _ints(values):
  return tf.train.Feature(int64_list=tf.train.Int64List(value=list(values)))


def make_example(*, encoded_image, image_format, image_id, filename, height, width,
                 boxes_xywh, classes, category_ids, is_crowd, areas, annotation_ids,
                 polygons, rles, keypoints=None):
  """Builds one `tf.train.Example` in this schema (used by data_prep/).

  Args:
    encoded_image: bytes of the JPEG/PNG file.
    image_format: "jpeg" or "png".
    image_id: int.
    filename: str.
    height, width: int, the image's size.
    boxes_xywh: list of [x, y, w, h] float boxes, already clipped.
    classes: list of int contiguous class ids (1..num_classes).
    category_ids: list of int data-set category ids.
    is_crowd: list of 0/1.
    areas: list of float.
    annotation_ids: list of int.
    polygons: list (one per instance) of lists of polygons, each a flat
      [x0, y0, x1, y1, ...] list of >= 6 floats; [] for RLE instances.
    rles: list (one per instance) of compressed RLE bytes, b"" for polygons.
    keypoints: None, or list (one per instance) of 51 floats.

  Returns:
    tf.train.Example.
  """
  n = len(classes)
  lengths = [len(p) for inst in polygons for p in inst]
  if not (len(boxes_xywh) == len(category_ids) == len(is_crowd) == len(areas)
          == len(annotation_ids) == len(polygons) == len(rles) == n):
    raise ValueError("make_example: every per-instance list needs one entry per instance")
  if any(length < 6 or length % 2 for length in lengths):
    raise ValueError(f"make_example: polygons need an even number >= 6 of coordinates, "
                     f"got lengths {lengths}")
  feature = {
      IMAGE_ENCODED: _bytes([encoded_image]),
      IMAGE_FORMAT: _bytes([image_format.encode()]),
      IMAGE_ID: _ints([image_id]),
      IMAGE_FILENAME: _bytes([filename.encode()]),
      IMAGE_HEIGHT: _ints([height]),
      IMAGE_WIDTH: _ints([width]),
      BOX_XYWH: _floats([v for b in boxes_xywh for v in b]),
      CLASS: _ints(classes),
      CATEGORY_ID: _ints(category_ids),
      IS_CROWD: _ints(is_crowd),
      AREA: _floats(areas),
      ANNOTATION_ID: _ints(annotation_ids),
      POLYGON_XY: _floats([v for inst in polygons for p in inst for v in p]),
      POLYGON_LENGTHS: _ints(lengths),
      POLYGONS_PER_INSTANCE: _ints([len(inst) for inst in polygons]),
      MASK_RLE: _bytes(rles),
  }
  if keypoints is not None:
    if len(keypoints) != n or any(len(k) != NUM_KEYPOINTS * 3 for k in keypoints):
      raise ValueError(f"make_example: keypoints need {NUM_KEYPOINTS * 3} floats per instance")
    feature[KEYPOINTS] = _floats([v for k in keypoints for v in k])
  return tf.train.Example(features=tf.train.Features(feature=feature))
