"""A handful of hand-drawn images with polygons, boxes and a COCO json, and the
training loop of the detectors' overfitting tests (no files, no pipeline)."""

import json

import numpy as np
import tensorflow as tf

from tfdet.data import keys
from tfdet.evaluation import coco as coco_eval
from tfdet.modeling.detectors import outputs as out
from tfdet.modeling.losses import TOTAL_LOSS

PIXEL_MEANS = np.array([102.9801, 115.9465, 122.7717], np.float32)

# (class, polygon) per object; classes 1 = rectangle, 2 = triangle.
SCENES = [
    [(1, [(8, 10), (50, 10), (50, 44), (8, 44)]), (2, [(70, 20), (120, 20), (95, 70)]),
     (1, [(30, 80), (90, 80), (90, 118), (30, 118)])],
    [(2, [(10, 60), (60, 60), (35, 120)]), (1, [(64, 8), (118, 8), (118, 56), (64, 56)])],
    [(1, [(20, 20), (60, 20), (60, 60), (20, 60)]), (2, [(66, 66), (122, 66), (94, 124)]),
     (2, [(5, 75), (45, 75), (25, 110)])],
]
COLORS = {1: (40.0, 200.0, 60.0), 2: (220.0, 40.0, 40.0)}
SIZE = 128


def _fill_polygon(img, poly, color):
  ys, xs = np.mgrid[0:SIZE, 0:SIZE] + 0.5
  inside = np.zeros((SIZE, SIZE), bool)
  n = len(poly)
  for i in range(n):
    (x0, y0), (x1, y1) = poly[i], poly[(i + 1) % n]
    cond = (y0 > ys) != (y1 > ys)
    with np.errstate(divide="ignore", invalid="ignore"):
      xint = x0 + (ys - y0) * (x1 - x0) / (y1 - y0)
    inside ^= cond & (xs < xint)
  img[inside] = color
  return inside


def make_batch(scene_ids, *, max_instances=4, max_vertices=8):
  """The batch dict (tfdet.data.keys) of some scenes, plus COCO gt json."""
  rng = np.random.default_rng(0)
  images, boxes, classes, valid, polys, ids = [], [], [], [], [], []
  coco = {"images": [], "annotations": [],
          "categories": [{"id": 1, "name": "rectangle"}, {"id": 2, "name": "triangle"}]}
  for image_id in scene_ids:
    img = rng.uniform(90, 140, (SIZE, SIZE, 3)).astype(np.float32)
    b = np.zeros((max_instances, 4), np.float32)
    c = np.zeros((max_instances,), np.int32)
    v = np.zeros((max_instances,), bool)
    p = np.zeros((max_instances, max_vertices, 2), np.float32)
    pid = -np.ones((max_instances, max_vertices), np.int32)
    coco["images"].append({"id": image_id, "width": SIZE, "height": SIZE,
                           "file_name": f"{image_id}.png"})
    for k, (cls, poly) in enumerate(SCENES[image_id]):
      mask = _fill_polygon(img, poly, COLORS[cls])
      xs = [q[0] for q in poly]
      ys = [q[1] for q in poly]
      x, y, w, h = min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)
      b[k] = [x, y, x + w - 1, y + h - 1]  # Detectron's xywh -> xyxy
      c[k] = cls
      v[k] = True
      p[k, :len(poly)] = poly
      pid[k, :len(poly)] = 0
      coco["annotations"].append({
          "id": len(coco["annotations"]) + 1, "image_id": image_id, "category_id": cls,
          "bbox": [x, y, w, h], "area": float(mask.sum()), "iscrowd": 0,
          "segmentation": [[float(t) for q in poly for t in q]]})
    images.append(img[..., ::-1] - PIXEL_MEANS)  # RGB drawing -> BGR minus means
    boxes.append(b)
    classes.append(c)
    valid.append(v)
    polys.append(p)
    ids.append(pid)
  return _batch(images, scene_ids, SIZE, boxes, classes, valid,
                **{keys.GT_POLYGONS: np.stack(polys), keys.GT_POLYGON_IDS: np.stack(ids)}), coco


def _batch(images, scene_ids, size, boxes, classes, valid, **extra):
  """The batch dict of square images at scale 1 with their gt rows (no crowd), as tensors."""
  n = len(scene_ids)
  valid = np.stack(valid)
  batch = {
      keys.IMAGES: np.stack(images).astype(np.float32),
      keys.IMAGE_INFO: np.array([[size, size, 1.0, size, size]] * n, np.float32),
      keys.IMAGE_ID: np.array(scene_ids, np.int64),
      keys.GT_BOXES: np.stack(boxes), keys.GT_CLASSES: np.stack(classes).astype(np.int32),
      keys.GT_VALID: valid, keys.GT_IS_CROWD: np.zeros(valid.shape, bool), **extra,
  }
  return {k: tf.constant(v) for k, v in batch.items()}


def train(model, batch, loss_fn, steps, lr):
  """`steps` SGD steps (momentum 0.9, clipnorm 10) on one batch.

  Args:
    loss_fn: (model, outputs, batch) -> dict of losses with TOTAL_LOSS.

  Returns:
    every step's losses, [{name: float}].
  """
  model(batch, training=True)
  optimizer = tf.keras.optimizers.SGD(learning_rate=lr, momentum=0.9, clipnorm=10.0)

  @tf.function
  def step():
    with tf.GradientTape() as tape:
      losses = loss_fn(model, model(batch, training=True), batch)
    variables = model.trainable_variables
    optimizer.apply_gradients(zip(tape.gradient(losses[TOTAL_LOSS], variables), variables,
                                  strict=True))
    return losses

  return [{k: float(v) for k, v in step().items()} for _ in range(steps)]


def window_means(history, name, size=10):
  """Means of loss `name` over consecutive windows of `size` steps."""
  values = [h[name] for h in history]
  return [float(np.mean(values[i:i + size])) for i in range(0, len(values), size)]


def coco_results(outputs, scene_ids, *, convention, pasted_masks=None):
  """COCO results of a detector's inference outputs on the scenes (class id = category id).

  Args:
    outputs: the detector's output dict for the batch of `scene_ids`.
    pasted_masks: None, or [B, D, SIZE, SIZE] masks pasted into the images.
  """
  results = []
  for i, image_id in enumerate(scene_ids):
    results += coco_eval.detections_to_coco(
        image_id, np.asarray(outputs[out.DETECTION_BOXES][i]),
        np.asarray(outputs[out.DETECTION_SCORES][i]), np.asarray(outputs[out.DETECTION_CLASSES][i]),
        np.asarray(outputs[out.NUM_DETECTIONS][i]), class_to_category={1: 1, 2: 2},
        convention=convention, masks=None if pasted_masks is None else pasted_masks[i])
  return results


def ground_truth(coco, path):
  """Writes the scenes' COCO json to `path` and loads it with pycocotools."""
  with open(path, "w") as f:
    json.dump(coco, f)
  return coco_eval.load_ground_truth(str(path))


# ------------------------------------------------------------- person scenes
# Person figures (tfdet.data.synthetic_shapes.person: 17 COCO keypoints) on a plain
# background, (hips' centre x, y, standing height) per person; none overlaps another and
# every keypoint lies in the image (all visible, v = 2).
PERSON_SIZE = 160
PERSON_SCENES = [
    [(45, 80, 110), (118, 85, 100)],
    [(80, 78, 120)],
    [(42, 92, 95), (120, 70, 105)],
]


def make_person_batch(scene_ids, *, max_instances=3):
  """The batch dict (with keys.GT_KEYPOINTS) of some person scenes, plus COCO keypoint gt json.

  Category 1 is "person" with COCO's 17 keypoints; boxes are the figures' mask boxes.
  """
  from tfdet.data import schema
  from tfdet.data import synthetic_shapes as shapes

  size = PERSON_SIZE
  rng = np.random.default_rng(0)
  images, boxes, valid, keypoints = [], [], [], []
  coco = {"images": [], "annotations": [],
          "categories": [{"id": 1, "name": "person", "keypoints": list(schema.KEYPOINT_NAMES),
                          "skeleton": []}]}
  for image_id in scene_ids:
    img = shapes.background(rng, size, size, plain=True)
    b = np.zeros((max_instances, 4), np.float32)
    v = np.zeros((max_instances,), bool)
    k = np.zeros((max_instances, 17, 3), np.float32)
    coco["images"].append({"id": image_id, "width": size, "height": size,
                           "file_name": f"person{image_id}.png"})
    for n, (x, y, height) in enumerate(PERSON_SCENES[image_id]):
      for _ in range(100):  # a pose with every keypoint at least 2 px inside the image
        parts, kp = shapes.person(rng, (x, y), height)
        if (kp >= 2).all() and (kp < size - 2).all():
          break
      else:
        raise AssertionError(f"no pose of person {n} of scene {image_id} fits the image")
      mask = shapes.rasterize(shapes.clip_polygons(parts, size, size), size, size)
      shapes.paint(img, mask, rng, colour=rng.uniform(0, 80, 3), flat=True)
      head = shapes.rasterize(shapes.clip_polygons(parts[-1:], size, size), size, size)
      shapes.paint(img, head & mask, rng, colour=(230.0, 180.0, 140.0), flat=True)
      ys, xs = np.nonzero(mask)
      x1, y1, x2, y2 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
      b[n] = [x1, y1, x2 - 1, y2 - 1]  # Detectron's xywh -> xyxy
      v[n] = True
      k[n, :, :2], k[n, :, 2] = kp, 2
      coco["annotations"].append({
          "id": len(coco["annotations"]) + 1, "image_id": image_id, "category_id": 1,
          "bbox": [float(x1), float(y1), float(x2 - x1), float(y2 - y1)],
          "area": float(mask.sum()), "iscrowd": 0, "num_keypoints": 17,
          "keypoints": [float(t) for t in k[n].reshape(-1)]})
    rgb = np.clip(np.round(img), 0, 255).astype(np.float32)
    images.append(rgb[..., ::-1] - PIXEL_MEANS)  # RGB drawing -> BGR minus means
    boxes.append(b)
    valid.append(v)
    keypoints.append(k)
  return _batch(images, scene_ids, size, boxes, valid, valid,
                **{keys.GT_KEYPOINTS: np.stack(keypoints)}), coco
