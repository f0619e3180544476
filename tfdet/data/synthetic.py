r"""A synthetic COCO-format data set: shapes and people on textured backgrounds.

`generate_synthetic_coco` writes, deterministically from a seed, a real COCO
data set -- JPEG images under ``{output_dir}/{split}/`` and
``annotations/instances_{split}.json`` and
``annotations/person_keypoints_{split}.json`` (the person category only, with
COCO's 17 keypoint names and skeleton) -- small enough that a small Mask
R-CNN trains on a CPU in minutes, with enough going on that AP means
something: 3-8 objects per image anywhere in the frame (some cut by the
border), 7 categories of varied shape (`synthetic_shapes`), random colours
and textures, sizes spanning COCO's small / medium / large areas, crowd
regions, occlusion and person keypoints.

Occlusion: objects are painted in order, each over the earlier ones. An
object's annotation describes its **visible** pixels: an object that nothing
covers keeps its polygons (whose pycocotools rasterization is exactly the
painted pixels); an object partly covered is annotated with the RLE of its
visible mask (``iscrowd`` 0), since the visible part of a polygon is not a
polygon in general and may have holes. Boxes and areas are those of the
visible mask. A crowd region (``iscrowd`` 1) is a cluster of small objects
of one category, annotated as one RLE of their visible union.

Keypoint visibility follows COCO: 2 visible; 1 inside the image but covered
by a later object; 0 outside the image (stored as 0, 0, 0).

Usage:
  python -m tfdet.data.synthetic --output_dir=/tmp/synthetic --seed=0 \
    --num_train_images=200 --num_val_images=50
"""

import json
import os

import numpy as np
import tensorflow as tf
from absl import app, flags, logging
from pycocotools import mask as mask_utils

from tfdet.data import schema
from tfdet.data import synthetic_shapes as shapes

# (category id, name): ids deliberately not contiguous, as in COCO.
CATEGORIES = ((1, "person"), (2, "ellipse"), (4, "rectangle"), (5, "triangle"), (7, "star"),
              (9, "ring"), (11, "cross"))
PERSON_ID = 1
# COCO's keypoint skeleton (1-based keypoint indices).
SKELETON = ((16, 14), (14, 12), (17, 15), (15, 13), (12, 13), (6, 12), (7, 13), (6, 7), (6, 8),
            (7, 9), (8, 10), (9, 11), (2, 3), (1, 2), (1, 3), (2, 4), (3, 5), (4, 6), (5, 7))
SPLITS = ("train", "val")
_SPLIT_IMAGE_ID_OFFSET = {"train": 1, "val": 1_000_001}
_CONFIG_FILE = "synthetic_config.json"
_MIN_VISIBLE_PIXELS = 4

# Styles: "standard" is the data set described above. "simple" is the
# quickstart's: plain gradient backgrounds, 1-4 flat-coloured objects that
# contrast with the background, medium and large only (24^2 px and up), no
# overlap, no crowd regions; the same categories, shapes, people and keypoints.
# It is what a from-scratch model learns in minutes on a CPU.
STYLES = ("standard", "simple")


def _target_area(rng, height, width, style="standard"):
  """An object area drawn across COCO's small (< 32^2), medium and large (> 96^2) classes."""
  if style == "simple":  # 24^2 px up to a sixth of the image
    lo, hi = 576.0, max(height * width / 6.0, 1200.0)
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
  u = rng.uniform()
  if u < 0.35:
    lo, hi = 60.0, 900.0
  elif u < 0.7:
    lo, hi = 1200.0, 8000.0
  else:
    lo, hi = 10000.0, max(0.15 * height * width, 12000.0)
  return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def _centre(rng, height, width, layers):
  """Anywhere in the frame (a little beyond its border too); often near an earlier object."""
  if layers and rng.uniform() < 0.35:
    ys, xs = np.nonzero(layers[int(rng.integers(len(layers)))]["mask"])
    if len(ys):
      k = int(rng.integers(len(ys)))
      return np.array([xs[k], ys[k]], float) + rng.normal(0, 10, 2)
  return np.array([rng.uniform(-0.05, 1.05) * width, rng.uniform(-0.05, 1.05) * height])


def _shape_layer(rng, img, kind, category_id, centre, area, colour=None):
  height, width = img.shape[:2]
  unit = shapes.unit_shape(kind, rng)
  unit_area = sum(shapes.polygon_area(p) for p in unit)
  scale = np.sqrt(area / unit_area)
  polygons = shapes.clip_polygons(
      shapes.place(unit, centre, scale, rng.uniform(0, 2 * np.pi)), width, height)
  mask = shapes.rasterize(polygons, width, height)
  if mask.sum() < _MIN_VISIBLE_PIXELS:
    return None
  shapes.paint(img, mask, rng, colour=colour, flat=colour is not None)
  return {"category_id": category_id, "polygons": polygons, "mask": mask, "keypoints": None,
          "crowd": False}


def _person_layer(rng, img, centre, area, colour=None):
  height, width = img.shape[:2]
  figure_height = np.sqrt(area / 0.12)  # a figure covers about 0.12 h^2
  parts, keypoints = shapes.person(rng, centre, figure_height)
  polygons = shapes.clip_polygons(parts, width, height)
  mask = shapes.rasterize(polygons, width, height)
  if mask.sum() < _MIN_VISIBLE_PIXELS:
    return None
  shapes.paint(img, mask, rng, colour=colour, flat=colour is not None)
  head = shapes.clip_polygons(parts[-1:], width, height)
  shapes.paint(img, shapes.rasterize(head, width, height) & mask, rng,
               colour=rng.uniform([150, 100, 60], [240, 200, 170]))
  return {"category_id": PERSON_ID, "polygons": polygons, "mask": mask,
          "keypoints": keypoints, "crowd": False}


def _crowd_layer(rng, img):
  """A cluster of 6-14 small objects of one shape, annotated as one crowd region."""
  height, width = img.shape[:2]
  category_id, kind = CATEGORIES[int(rng.integers(1, len(CATEGORIES)))]
  centre = np.array([rng.uniform(0.15, 0.85) * width, rng.uniform(0.15, 0.85) * height])
  spread = rng.uniform(12, 30)
  mask = np.zeros((height, width), bool)
  for _ in range(int(rng.integers(6, 15))):
    member = _shape_layer(rng, img, kind, category_id, centre + rng.normal(0, spread, 2),
                          rng.uniform(20, 90))
    if member is not None:
      mask |= member["mask"]
  if mask.sum() < _MIN_VISIBLE_PIXELS:
    return None
  return {"category_id": category_id, "polygons": None, "mask": mask, "keypoints": None,
          "crowd": True}


def _rle(mask):
  rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
  return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def _keypoints(layer, occluder, height, width):
  """COCO keypoints [x, y, v] * 17 and num_keypoints for a person layer."""
  out = []
  for x, y in layer["keypoints"]:
    if not (0 <= x < width and 0 <= y < height):
      out += [0, 0, 0]
    else:
      covered = occluder[int(y), int(x)]
      out += [round(float(x), 2), round(float(y), 2), 1 if covered else 2]
  return out, sum(1 for v in out[2::3] if v > 0)


def _contrasting_colour(rng, img):
  """A colour at least 100 (L1 over BGR) from the background's mean colour."""
  mean = img.reshape(-1, 3).mean(axis=0)
  for _ in range(50):
    colour = rng.uniform(0, 255, 3)
    if np.abs(colour - mean).sum() >= 100:
      return colour
  return np.where(mean > 127, 20.0, 235.0)


def _simple_layers(rng, img):
  """The "simple" style's 1-4 objects, none overlapping another."""
  height, width = img.shape[:2]
  layers, painted = [], np.zeros((height, width), bool)
  for _ in range(int(rng.integers(1, 5))):
    for _ in range(20):  # placement attempts
      centre = np.array([rng.uniform(0.1, 0.9) * width, rng.uniform(0.1, 0.9) * height])
      area = _target_area(rng, height, width, "simple")
      trial = img.copy()
      colour = _contrasting_colour(rng, img)
      if rng.uniform() < 0.25:
        layer = _person_layer(rng, trial, centre, area, colour=colour)
      else:
        category_id, kind = CATEGORIES[int(rng.integers(1, len(CATEGORIES)))]
        layer = _shape_layer(rng, trial, kind, category_id, centre, area, colour=colour)
      if layer is None or (layer["mask"] & painted).any():
        continue
      img[...] = trial
      painted |= layer["mask"]
      layers.append(layer)
      break
  return layers


def render_image(rng, height, width, *, crowd_probability=0.3, style="standard"):
  """Draws one image; returns (uint8 [H, W, 3], annotation dicts without ids).

  Each annotation dict has the COCO fields category_id, segmentation, area,
  bbox, iscrowd and, for people, keypoints and num_keypoints.
  """
  if style not in STYLES:
    raise ValueError(f"unknown synthetic style {style!r}; expected one of {STYLES}")
  if style == "simple":
    img = shapes.background(rng, height, width, plain=True)
    layers = _simple_layers(rng, img)
  else:
    img = shapes.background(rng, height, width)
    layers = _standard_layers(rng, img, crowd_probability)
  return _annotate(img, layers)


def _standard_layers(rng, img, crowd_probability):
  height, width = img.shape[:2]
  layers = []
  if rng.uniform() < crowd_probability:
    crowd = _crowd_layer(rng, img)
    if crowd is not None:
      layers.append(crowd)
  for _ in range(int(rng.integers(3, 9))):
    centre = _centre(rng, height, width, layers)
    area = _target_area(rng, height, width)
    if rng.uniform() < 0.3:
      layer = _person_layer(rng, img, centre, area)
    else:
      category_id, kind = CATEGORIES[int(rng.integers(1, len(CATEGORIES)))]
      layer = _shape_layer(rng, img, kind, category_id, centre, area)
    if layer is not None:
      layers.append(layer)
  return layers


def _annotate(img, layers):
  height, width = img.shape[:2]
  annotations = []
  occluder = np.zeros((height, width), bool)
  for layer in reversed(layers):  # later layers cover earlier ones
    visible = layer["mask"] & ~occluder
    area = int(visible.sum())
    if area >= _MIN_VISIBLE_PIXELS:
      rle = mask_utils.encode(np.asfortranarray(visible.astype(np.uint8)))
      ann = {"category_id": layer["category_id"], "iscrowd": int(layer["crowd"]),
             "area": float(area), "bbox": [float(v) for v in mask_utils.toBbox(rle)]}
      if layer["crowd"] or area < int(layer["mask"].sum()):
        ann["segmentation"] = _rle(visible)
      else:
        ann["segmentation"] = [[float(v) for v in p.reshape(-1)] for p in layer["polygons"]]
      if layer["keypoints"] is not None:
        ann["keypoints"], ann["num_keypoints"] = _keypoints(layer, occluder, height, width)
      annotations.append(ann)
    occluder |= layer["mask"]
  annotations.reverse()  # drawing order
  return np.clip(np.round(img), 0, 255).astype(np.uint8), annotations


def _image_size(rng, image_size):
  short = int(rng.integers(image_size[0], image_size[1] + 1))
  long = int(round(short * rng.uniform(1.0, 1.5)))
  return (short, long) if rng.uniform() < 0.6 else (long, short)


def _split_json(split, seed, num_images, image_size, image_dir, style):
  """Renders one split, writing its JPEGs; returns (images, annotations) COCO lists."""
  images, annotations = [], []
  split_index = SPLITS.index(split)
  for i in range(num_images):
    rng = np.random.default_rng([seed, split_index, i])
    height, width = _image_size(rng, image_size)
    pixels, anns = render_image(rng, height, width, style=style)
    image_id = _SPLIT_IMAGE_ID_OFFSET[split] + i
    file_name = f"{image_id:012d}.jpg"
    tf.io.write_file(os.path.join(image_dir, file_name),
                     tf.io.encode_jpeg(pixels, quality=92))
    images.append({"id": image_id, "file_name": file_name, "height": height, "width": width,
                   "license": 0})
    for k, ann in enumerate(anns):
      ann["id"] = image_id * 100 + k
      ann["image_id"] = image_id
      annotations.append(ann)
    if (i + 1) % 100 == 0:
      logging.info("synthetic %s: %d/%d images", split, i + 1, num_images)
  return images, annotations


def _write_json(path, obj):
  tmp = f"{path}.tmp-{os.getpid()}"
  with open(tmp, "w") as f:
    json.dump(obj, f)
  os.replace(tmp, path)


def generate_synthetic_coco(output_dir, *, num_train_images, num_val_images, seed,
                            image_size=(192, 320), style="standard"):
  """Writes the synthetic data set (deterministic from ``seed``); skips if already written.

  Args:
    output_dir: gets ``train/``, ``val/`` and ``annotations/``.
    num_train_images, num_val_images: images per split.
    seed: int.
    image_size: (min, max) of the shorter side; the longer is 1-1.5 times it.
    style: "standard" or "simple" (`STYLES`, described at the top).

  Returns:
    {split: {"image_dir", "instances", "person_keypoints"}} paths.
  """
  config = {"num_train_images": num_train_images, "num_val_images": num_val_images,
            "seed": seed, "image_size": list(image_size), "version": 1}
  if style not in STYLES:
    raise ValueError(f"unknown synthetic style {style!r}; expected one of {STYLES}")
  if style != "standard":  # the standard set's config (and so its cache key) is unchanged
    config["style"] = style
  ann_dir = os.path.join(output_dir, "annotations")
  paths = {split: {"image_dir": os.path.join(output_dir, split),
                   "instances": os.path.join(ann_dir, f"instances_{split}.json"),
                   "person_keypoints": os.path.join(ann_dir, f"person_keypoints_{split}.json")}
           for split in SPLITS}
  config_path = os.path.join(output_dir, _CONFIG_FILE)
  if os.path.exists(config_path):
    with open(config_path) as f:
      if json.load(f) == config:
        return paths
    os.remove(config_path)
  os.makedirs(ann_dir, exist_ok=True)
  categories = [{"id": cid, "name": name, "supercategory": "person" if cid == PERSON_ID
                 else "shape"} for cid, name in CATEGORIES]
  person = dict(categories[0], keypoints=list(schema.KEYPOINT_NAMES),
                skeleton=[list(s) for s in SKELETON])
  info = {"description": f"tfdet synthetic shapes, {style} style, seed {seed}", "version": "1"}
  for split, num_images in (("train", num_train_images), ("val", num_val_images)):
    os.makedirs(paths[split]["image_dir"], exist_ok=True)
    images, annotations = _split_json(split, seed, num_images, image_size,
                                      paths[split]["image_dir"], style)
    instances = [{k: v for k, v in a.items() if k not in ("keypoints", "num_keypoints")}
                 for a in annotations]
    _write_json(paths[split]["instances"], {"info": info, "licenses": [], "images": images,
                                            "annotations": instances,
                                            "categories": categories})
    people = [a for a in annotations if a["category_id"] == PERSON_ID]
    _write_json(paths[split]["person_keypoints"], {"info": info, "licenses": [],
                                                   "images": images, "annotations": people,
                                                   "categories": [person]})
  _write_json(config_path, config)
  return paths


def ensure_synthetic_tfrecords(data_dir, *, num_train_images=200, num_val_images=50, seed=0,
                               image_size=(192, 320), style="standard", num_train_shards=2,
                               num_val_shards=1, num_workers=1):
  """Generates the synthetic COCO data set and its TFRecords under ``data_dir`` if not there.

  Idempotent: the generator and the converter both skip finished work.
  Layout: ``{data_dir}/coco/`` (images, json), ``{data_dir}/tfrecords/instances/``
  and ``{data_dir}/tfrecords/person_keypoints/`` (``train-*`` and ``val-*``
  shards with their label_map.json).

  Returns:
    {"instances": {split: glob}, "person_keypoints": {split: glob},
     "annotations": {split: {"instances", "person_keypoints"}}, "label_map": {...}}.
  """
  from data_prep import coco_to_tfrecord  # data_prep sits beside tfdet in the repository

  coco = generate_synthetic_coco(os.path.join(data_dir, "coco"),
                                 num_train_images=num_train_images,
                                 num_val_images=num_val_images, seed=seed,
                                 image_size=image_size, style=style)
  out = {"instances": {}, "person_keypoints": {}, "label_map": {},
         "annotations": {split: {k: coco[split][k] for k in ("instances", "person_keypoints")}
                         for split in SPLITS}}
  for kind in ("instances", "person_keypoints"):
    record_dir = os.path.join(data_dir, "tfrecords", kind)
    for split, num_shards in (("train", num_train_shards), ("val", num_val_shards)):
      coco_to_tfrecord.convert_coco(coco[split][kind], coco[split]["image_dir"], record_dir,
                                    num_shards=num_shards, num_workers=num_workers,
                                    prefix=split)
      out[kind][split] = os.path.join(record_dir, f"{split}-*-of-*.tfrecord")
    out["label_map"][kind] = os.path.join(record_dir, schema.LABEL_MAP_FILE)
  return out


FLAGS = flags.FLAGS


def _define_flags():
  flags.DEFINE_string("output_dir", None, "Where the COCO-format data set goes.")
  flags.DEFINE_integer("seed", 0, "Random seed.")
  flags.DEFINE_integer("num_train_images", 200, "Training images.")
  flags.DEFINE_integer("num_val_images", 50, "Validation images.")
  flags.DEFINE_list("image_size", ["192", "320"], "min,max of the shorter side.")
  flags.DEFINE_enum("style", "standard", STYLES, "standard, or simple (the quickstart's).")
  flags.DEFINE_bool("tfrecords", False,
                    "Also convert to TFRecords (output_dir is then the data_dir of "
                    "ensure_synthetic_tfrecords).")
  flags.mark_flag_as_required("output_dir")


def main(argv):
  del argv
  size = tuple(int(v) for v in FLAGS.image_size)
  if FLAGS.tfrecords:
    out = ensure_synthetic_tfrecords(FLAGS.output_dir, num_train_images=FLAGS.num_train_images,
                                     num_val_images=FLAGS.num_val_images, seed=FLAGS.seed,
                                     image_size=size, style=FLAGS.style)
  else:
    out = generate_synthetic_coco(FLAGS.output_dir, num_train_images=FLAGS.num_train_images,
                                  num_val_images=FLAGS.num_val_images, seed=FLAGS.seed,
                                  image_size=size, style=FLAGS.style)
  logging.info("synthetic data set: %s", json.dumps(out, indent=1))


if __name__ == "__main__":
  _define_flags()
  app.run(main)
