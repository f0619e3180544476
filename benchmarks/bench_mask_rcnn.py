"""Full-size R-CNN models on this machine: parameter counts and step times.

  python benchmarks/bench_mask_rcnn.py                    # step times, R-50-FPN Mask R-CNN
  python benchmarks/bench_mask_rcnn.py --heads=keypoint   # ... Keypoint R-CNN (2 classes)
  python benchmarks/bench_mask_rcnn.py --param_counts     # every backbone x C4/FPN x heads

Step times: one training step (forward, Detectron's losses, backward, SGD
update) and one inference step (forward to detections and 28x28 masks, or
56x56 keypoint heatmaps decoded into keypoints) of the R-50-FPN model on one
800x1333 image (padded to 800x1344) with 8 objects, as tf.functions after a
warm-up, median of --runs runs. The "custom" rows use the compiled RoIAlign
and proposal ops, "reference" (with --with_reference) the pure-TF ones.
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from tfdet.data import keys  # noqa: E402
from tfdet.modeling.detectors import builders, rcnn_losses  # noqa: E402


def _batch(height=800, width=1344, valid_width=1333, instances=8):
  rng = np.random.default_rng(0)
  m, v = 16, 16
  boxes = np.zeros([1, m, 4], np.float32)
  polys = np.zeros([1, m, v, 2], np.float32)
  ids = -np.ones([1, m, v], np.int32)
  for i in range(instances):
    x, y = rng.uniform(0, valid_width - 300), rng.uniform(0, height - 300)
    w, h = rng.uniform(40, 300, 2)
    boxes[0, i] = [x, y, x + w, y + h]
    polys[0, i, :4] = [[x, y], [x + w, y], [x + w, y + h], [x, y + h]]
    ids[0, i, :4] = 0
  valid = np.arange(m)[None] < instances
  kps = np.zeros([1, m, 17, 3], np.float32)  # 17 visible keypoints inside each box
  kps[0, :instances, :, :2] = boxes[0, :instances, None, :2] + rng.uniform(
      0, 1, [instances, 17, 2]) * (boxes[0, :instances, None, 2:] - boxes[0, :instances, None, :2])
  kps[0, :instances, :, 2] = 2
  return {
      keys.IMAGES: tf.constant(rng.normal(0, 50, [1, height, width, 3]).astype(np.float32)),
      keys.IMAGE_INFO: tf.constant([[height, valid_width, 1.6667, 480.0, 800.0]], tf.float32),
      keys.GT_BOXES: tf.constant(boxes), keys.GT_CLASSES: tf.constant(valid.astype(np.int32)),
      keys.GT_VALID: tf.constant(valid), keys.GT_IS_CROWD: tf.constant(np.zeros([1, m], bool)),
      keys.GT_POLYGONS: tf.constant(polys), keys.GT_POLYGON_IDS: tf.constant(ids),
      keys.GT_KEYPOINTS: tf.constant(kps),
  }


def _median_ms(fn, runs):
  fn()  # trace and warm up
  times = []
  for _ in range(runs):
    t = time.perf_counter()
    out = fn()
    tf.nest.map_structure(lambda x: x.numpy(), out)
    times.append((time.perf_counter() - t) * 1000.0)
  return float(np.median(times))


def step_times(implementation, runs, heads="mask"):
  model = builders.build_rcnn(heads=heads, use_fpn=True, implementation=implementation,
                              num_classes=2 if heads == "keypoint" else 81)
  batch = _batch()
  optimizer = tf.keras.optimizers.SGD(learning_rate=0.001, momentum=0.9)

  @tf.function
  def train_step():
    with tf.GradientTape() as tape:
      losses = rcnn_losses.rcnn_losses(model, model(batch, training=True), batch)
    grads = tape.gradient(losses[rcnn_losses.TOTAL_LOSS], model.trainable_variables)
    optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
    return losses[rcnn_losses.TOTAL_LOSS]

  @tf.function
  def infer_step():
    return model(batch, training=False)

  return _median_ms(train_step, runs), _median_ms(infer_step, runs)


def param_counts():
  rows = []
  for name, kwargs in builders.BACKBONES.items():
    for use_fpn in (True, False):
      shared = None
      for heads in builders.HEADS:
        if heads == "keypoint" and not use_fpn:
          continue  # Detectron's keypoint models are FPN only
        model = builders.build_rcnn(heads=heads, use_fpn=use_fpn, backbone=shared,
                                    num_classes=2 if heads == "keypoint" else 81, **kwargs)
        shared = model.backbone
        parts = [model.backbone, model.rpn_head, model.box_head, model.mask_head,
                 model.keypoint_head]
        total = sum(p.count_params() for p in parts if p is not None)
        trainable = sum(int(np.prod(w.shape)) for p in parts if p is not None
                        for w in p.trainable_weights)
        rows.append((f"{heads}-{name}-{'FPN' if use_fpn else 'C4'}", total, trainable))
  print(f"{'model':32s} {'parameters':>14s} {'trainable':>14s}")
  for row in rows:
    print(f"{row[0]:32s} {row[1]:14,d} {row[2]:14,d}")


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--runs", type=int, default=3)
  parser.add_argument("--with_reference", action="store_true",
                      help="also time the pure-TF reference ops (slow, ~10 GB of memory)")
  parser.add_argument("--param_counts", action="store_true")
  parser.add_argument("--heads", choices=("mask", "keypoint"), default="mask",
                      help="Mask R-CNN (81 classes) or Keypoint R-CNN (2 classes)")
  args = parser.parse_args()
  if args.param_counts:
    param_counts()
    return
  impls = ["custom"] + (["reference"] if args.with_reference else [])
  family = {"mask": "Mask R-CNN", "keypoint": "Keypoint R-CNN"}[args.heads]
  print(f"{family} R-50-FPN, 1 image 800x1333 (padded 800x1344), CPU threads: "
        f"{os.cpu_count()}, median of {args.runs}")
  print(f"{'ops':10s} {'train step ms':>14s} {'inference ms':>14s}")
  for impl in impls:
    train_ms, infer_ms = step_times(impl, args.runs, args.heads)
    print(f"{impl:10s} {train_ms:14.0f} {infer_ms:14.0f}")


if __name__ == "__main__":
  main()
