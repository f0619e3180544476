"""Times TF Model Garden's Mask R-CNN R-50-FPN, part by part (the peer of tfdet's side in
benchmarks/bench_mask_rcnn_vs_model_garden.py).

Runs INSIDE the Model Garden virtual environment (TF 2.20, tf_keras / Keras 2), never in
tfdet's; it does not import tfdet. Set the environment up first:

  benchmarks/peers/setup_model_garden.sh      # creates .venv-model-garden (or $MG_VENV)
  .venv-model-garden/bin/python benchmarks/peers/model_garden_mask_rcnn.py \
      --part {inference,train,roi_align} --scene SCENE.npz [--warmup 2] [--runs 5]

The scene (.npz, written by the driver) holds the boxes of two 800x1333 images
(x1, y1, x2, y2 in resized pixels; padded input 800x1344) and the RoIAlign part's RoIs.

The model is the experiment ``maskrcnn_resnetfpn_coco`` as shipped, except
``task.model.input_size = [800, 1344, 3]`` and the batch sizes (train 2, validation 1),
built by its task (``MaskRCNNTask.build_model``) from random weights, float32 (the
config's mixed precision is applied by the training driver, not by the task).

* inference: ``dense`` = backbone + decoder (FPN) + RPN head; ``whole`` = the model's
  call with ``training=False`` (proposals, box head, detection generator, mask head).
* train: the task's own ``train_step((images, labels), model, optimizer)`` (forward,
  ``build_losses``, backward, SGD with momentum 0.9) at batch 2. The labels are what the
  task's input parser (``maskrcnn_input.Parser``) would produce for the scene: anchors,
  RPN targets from its ``RpnAnchorLabeler``, boxes in (y1, x1, y2, x2) padded with -1 to
  100 instances, and masks cropped to each box and resized to 112x112.
* roi_align: ``spatial_transform_ops.multilevel_crop_and_resize`` (what the model's
  ``MultilevelROIAligner`` calls) over P2..P5 (2 images, 256 channels), the scene's RoIs,
  at 7x7 and 14x14, forward and forward+backward (the output and its gradient w.r.t. the
  features, both fetched so that neither is pruned).

Prints one line ``RESULT {json}`` in the form the driver reads.
"""

import argparse
import importlib.metadata
import json
import resource
import statistics
import sys
import time

import numpy as np

EXPERIMENT = "maskrcnn_resnetfpn_coco"
ORIGINAL_HW = (480, 800)
MAX_INSTANCES = 100
STRIDES = (4, 8, 16, 32)
CHANNELS = 256


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--part", choices=("inference", "train", "roi_align"), required=True)
  parser.add_argument("--scene", required=True, help="the scene .npz the driver wrote")
  parser.add_argument("--warmup", type=int, default=2, help="untimed calls after the first")
  parser.add_argument("--runs", type=int, default=5, help="timed calls; the median is reported")
  return parser.parse_args(argv)


def timed_calls(fn, warmup, runs):
  """(first call s, [timed call s]) of fn, its outputs fetched each call."""
  import tensorflow as tf

  def call():
    start = time.perf_counter()
    tf.nest.map_structure(lambda x: x.numpy() if hasattr(x, "numpy") else x, fn())
    return time.perf_counter() - start

  first = call()
  for _ in range(warmup):
    call()
  return first, [call() for _ in range(runs)]


def build_task(padded_hw):
  from official.core import exp_factory
  from official.vision import configs  # noqa: F401 (registers the vision experiments)
  from official.vision.tasks import maskrcnn

  config = exp_factory.get_exp_config(EXPERIMENT)
  config.override({
    "task": {
      "model": {"input_size": [int(padded_hw[0]), int(padded_hw[1]), 3]},
      "train_data": {"global_batch_size": 2},
      "validation_data": {"global_batch_size": 1},
    },
  }, is_strict=True)
  config.validate()
  config.lock()
  return config, maskrcnn.MaskRCNNTask(config.task)


def anchors_of(model_config, padded_hw):
  """{level: [H_l, W_l, 4 A]} anchors of the padded input, as the parser builds them."""
  from official.vision.ops import anchor

  return anchor.build_anchor_generator(
    min_level=model_config.min_level, max_level=model_config.max_level,
    num_scales=model_config.anchor.num_scales,
    aspect_ratios=model_config.anchor.aspect_ratios,
    anchor_size=model_config.anchor.anchor_size)(image_size=tuple(int(s) for s in padded_hw))


def image_info(valid_hw, batch):
  """[B, 4, 2]: original size, resized size, scale, offset (the parser's image_info)."""
  scale = valid_hw[0] / ORIGINAL_HW[0]
  info = [list(ORIGINAL_HW), list(valid_hw), [scale, scale], [0.0, 0.0]]
  return np.array([info] * batch, np.float32)


def train_labels(config, scene):
  """The labels the task's parser would give for the scene's two images."""
  import tensorflow as tf
  from official.vision.ops import anchor

  model_config = config.task.model
  parser_config = config.task.train_data.parser
  padded_hw = scene["padded_hw"]
  valid_hw = [int(s) for s in scene["valid_hw"]]
  anchor_boxes = anchors_of(model_config, padded_hw)
  labeler = anchor.RpnAnchorLabeler(
    parser_config.rpn_match_threshold, parser_config.rpn_unmatched_threshold,
    parser_config.rpn_batch_size_per_im, parser_config.rpn_fg_fraction)
  crop = parser_config.mask_crop_size
  per_image = []
  for xyxy in scene["boxes"]:
    n = len(xyxy)
    boxes = tf.constant(xyxy[:, [1, 0, 3, 2]])  # (y1, x1, y2, x2)
    classes = tf.ones([n], tf.int32)
    scores, deltas = labeler.label_anchors(anchor_boxes, boxes, tf.ones([n, 1], tf.float32))
    # Full-image rectangle masks, cropped to their boxes and resized, as the parser does.
    yy, xx = np.mgrid[:valid_hw[0], :valid_hw[1]]
    full = np.stack([((yy >= b[1]) & (yy <= b[3]) & (xx >= b[0]) & (xx <= b[2]))
                     for b in xyxy]).astype(np.float32)
    norm = boxes / tf.constant([valid_hw[0], valid_hw[1]] * 2, tf.float32)
    masks = tf.squeeze(tf.image.crop_and_resize(full[..., None], norm, tf.range(n), [crop] * 2),
                       -1)

    def pad(x, value=-1, n=n):
      x = tf.convert_to_tensor(x)
      paddings = [[0, MAX_INSTANCES - n]] + [[0, 0]] * (x.shape.rank - 1)
      return tf.pad(x, paddings, constant_values=tf.cast(value, x.dtype))

    per_image.append({"rpn_score_targets": scores, "rpn_box_targets": deltas,
                      "gt_boxes": pad(boxes), "gt_outer_boxes": pad(boxes),
                      "gt_classes": pad(classes), "gt_masks": pad(masks)})
  labels = tf.nest.map_structure(lambda *x: tf.stack(x), *per_image)
  labels["anchor_boxes"] = {k: tf.stack([v] * len(per_image)) for k, v in anchor_boxes.items()}
  labels["image_info"] = tf.constant(image_info(valid_hw, len(per_image)))
  return labels


def measure_inference(config, task, scene, warmup, runs):
  import tensorflow as tf

  model = task.build_model()
  padded_hw = [int(s) for s in scene["padded_hw"]]
  rng = np.random.default_rng(0)
  images = tf.constant(rng.normal(0, 1, [1, *padded_hw, 3]).astype(np.float32))
  image_shape = tf.constant(image_info([int(s) for s in scene["valid_hw"]], 1)[:, 1])
  anchors = {k: v[None] for k, v in anchors_of(config.task.model, padded_hw).items()}

  @tf.function
  def dense():
    features = model.decoder(model.backbone(images, training=False), training=False)
    return model.rpn_head(features, training=False)

  @tf.function
  def whole():
    outputs = model(images, image_shape=image_shape, anchor_boxes=anchors, training=False)
    return {k: outputs[k] for k in ("detection_boxes", "detection_scores", "detection_classes",
                                    "num_detections", "detection_masks")}

  result = {}
  for name, fn in (("dense", dense), ("whole", whole)):
    first, times = timed_calls(fn, warmup, runs)
    result.update({f"{name}_s": statistics.median(times), f"{name}_all": times,
                   f"{name}_first_call_s": first})
  result["first_call_s"] = result.pop("whole_first_call_s")
  result["num_params"] = sum(int(np.prod(w.shape)) for w in model.weights)
  result["num_detections"] = int(whole()["num_detections"][0])
  return result


def measure_train(config, task, scene, warmup, runs):
  import tensorflow as tf
  import tf_keras

  model = task.build_model()
  padded_hw = [int(s) for s in scene["padded_hw"]]
  labels = train_labels(config, scene)
  rng = np.random.default_rng(0)
  images = tf.constant(rng.normal(0, 1, [2, *padded_hw, 3]).astype(np.float32))
  # Learning rate 0, as tfdet's side: the step computes and applies its update (momentum
  # and all), but the weights stay put, so every timed step is the same step.
  optimizer = tf_keras.optimizers.SGD(learning_rate=0.0, momentum=0.9)

  @tf.function
  def train_step():
    return task.train_step((images, labels), model, optimizer)

  first, times = timed_calls(train_step, warmup, runs)
  return {"train_s": statistics.median(times), "train_all": times, "train_first_call_s": first,
          "train_loss": float(train_step()[task.loss])}


def first_elements(tensors):
  """The first element of each tensor (as the tfdet side fetches: the op's time, not the
  allocator's for a whole 205 MB output)."""
  import tensorflow as tf

  return tf.nest.map_structure(lambda t: tf.reshape(t, [-1])[:1], tensors)


def measure_roi_align(scene, warmup, runs):
  import tensorflow as tf
  from official.vision.ops import spatial_transform_ops

  rng = np.random.default_rng(1)
  height, width = (int(s) for s in scene["padded_hw"])
  features = {str(level): tf.constant(
      rng.normal(size=[2, height // s, width // s, CHANNELS]).astype(np.float32))
      for level, s in zip(range(2, 6), STRIDES, strict=True)}
  rois, image = scene["rois"], scene["roi_image"]
  # [B, N, 4] (y1, x1, y2, x2): the RoIs of image b in row b (the scene splits them evenly).
  boxes = tf.constant(np.stack([rois[image == b][:, [1, 0, 3, 2]] for b in range(2)]))
  result = {}
  for size in (7, 14):
    upstream = tf.constant(rng.normal(size=[2, len(rois) // 2, size, size, CHANNELS])
                           .astype(np.float32))

    def pool(size=size):
      return spatial_transform_ops.multilevel_crop_and_resize(features, boxes, output_size=size)

    def forward_backward(pool=pool, upstream=upstream):
      with tf.GradientTape() as tape:
        tape.watch(features)
        out = pool()
      return first_elements((out, tape.gradient(out, features, output_gradients=upstream)))

    for name, fn in (("fwd", tf.function(lambda pool=pool: first_elements(pool()))),
                     ("fwd_bwd", tf.function(forward_backward))):
      _, times = timed_calls(fn, warmup, runs)
      result[f"roi_align_{size}_{name}_s"] = statistics.median(times)
  return result


def main(argv=None):
  args = parse_args(argv)
  import tensorflow as tf
  import tf_keras

  with np.load(args.scene) as f:
    scene = {k: f[k] for k in f.files}
  config, task = build_task(scene["padded_hw"])
  if args.part == "inference":
    result = measure_inference(config, task, scene, args.warmup, args.runs)
  elif args.part == "train":
    result = measure_train(config, task, scene, args.warmup, args.runs)
  else:
    result = measure_roi_align(scene, args.warmup, args.runs)
  result.update({
    "library": "model_garden",
    "part": args.part,
    "tf_version": tf.__version__,
    "models_version": importlib.metadata.version("tf-models-official"),
    "tf_keras_version": tf_keras.__version__,
    "python": sys.version.split()[0],
    "experiment": EXPERIMENT,
    "input": [int(s) for s in scene["padded_hw"]],
    "dtype": tf_keras.mixed_precision.global_policy().name,
    "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "roi_aligner_sample_offset": config.task.model.roi_aligner.sample_offset,
    "rpn": config.task.model.roi_generator.as_dict(),
    "roi_sampler": config.task.model.roi_sampler.as_dict(),
    "detection_generator": config.task.model.detection_generator.as_dict(),
  })
  print("RESULT " + json.dumps(result, default=str), flush=True)


if __name__ == "__main__":
  main()
