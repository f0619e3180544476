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
  n = len(scene_ids)
  batch = {
      keys.IMAGES: np.stack(images).astype(np.float32),
      keys.IMAGE_INFO: np.array([[SIZE, SIZE, 1.0, SIZE, SIZE]] * n, np.float32),
      keys.IMAGE_ID: np.array(scene_ids, np.int64),
      keys.GT_BOXES: np.stack(boxes), keys.GT_CLASSES: np.stack(classes),
      keys.GT_VALID: np.stack(valid), keys.GT_IS_CROWD: np.zeros((n, max_instances), bool),
      keys.GT_POLYGONS: np.stack(polys), keys.GT_POLYGON_IDS: np.stack(ids),
  }
  return {k: tf.constant(v) for k, v in batch.items()}, coco


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
