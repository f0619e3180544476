"""Times TF Model Garden's RetinaNet R-50-FPN inference (the side-by-side peer of tfdet's).

Runs INSIDE the Model Garden virtual environment (TF 2.20, tf_keras / Keras 2), never in
tfdet's; it does not import tfdet. Set the environment up first:

  benchmarks/peers/setup_model_garden.sh            # creates .venv-model-garden (or $MG_VENV)
  .venv-model-garden/bin/python benchmarks/peers/model_garden_retinanet.py \
      [--warmup 2] [--runs 5] [--threads N | --intra_op_threads N --inter_op_threads M]

The model is the Model Garden's experiment ``retinanet_resnetfpn_coco``
(``official.core.exp_factory.get_exp_config``) exactly as shipped, except
``task.model.input_size = [800, 1344, 3]`` (H x W; 1344 is 1333 padded to a multiple of 128)
and ``task.validation_data.global_batch_size = 1``. It is built the way the task's
``build_model`` builds it, with ``official.vision.modeling.factory.build_retinanet``, from
random weights (no checkpoint is read). The config's ``runtime.mixed_precision_dtype``
(bfloat16) is applied by the training driver (``official/vision/train.py``), not by
``build_retinanet``; it is left unapplied here, so the model runs in float32, as Detectron's.

On one random 800x1344x3 input (batch 1; ``image_shape`` 800x1333, the image inside the
padding, to which the boxes are clipped), three ``tf.function``s are timed separately:

* dense: backbone (ResNet-50) + decoder (FPN) + head (RetinaNetHead), producing the raw
  class and box outputs of every level P3..P7;
* post: the model's detection generator (``MultilevelDetectionGenerator``: multilevel box
  decoding and clipping, then per-class NMS with the config's settings), given the dense
  outputs and the anchors (``official.vision.ops.anchor.Anchor`` for the input size);
* whole: ``model(images, image_shape=..., anchor_boxes=..., training=False)``, to check that
  whole ~= dense + post (``whole_vs_parts_max_abs_diff`` checks it computes the same outputs).

With random weights the head's prior-probability bias (0.01) puts every score under the
0.05 threshold, so post is timed a second time, ``post_loaded``: the same traced function
given class logits whose probabilities are uniform in [0, 1] (many candidates reach the
top-k and the NMS, as with a trained model on a busy image), as tfdet's side does.

Each function's first call (tracing included) is timed on its own and left out; then
``--warmup`` rounds, then ``--runs`` timed rounds, a round calling every function in turn
(dense, post, post_loaded, whole; each call fetching its outputs) so that a busy machine's
drift hits them alike. One line
``RESULT {json}`` is printed on stdout, in the form benchmarks/bench_retinanet.py reads:
the medians (``dense_s``, ``post_s``, ``whole_s``, ``post_loaded_s``), every timed call
(``*_all``), the first calls (``first_call_s`` for whole, ``dense_first_call_s``, ...), the
parameter count, the peak RSS, ``num_detections`` / ``num_scores_above_threshold``, and the
detection generator and anchor settings, for comparison with Detectron's RetinaNet (P3-P7,
3 scales, 3 aspect ratios, anchor size 4, top 1000 per level, score threshold 0.05, NMS 0.5,
100 detections). The Model Garden's ``pre_nms_top_k`` (5000) is per class over all levels
together, not per level as in Detectron.
"""

import argparse
import importlib.metadata
import json
import resource
import statistics
import sys
import time

import numpy as np

INPUT_HW = (800, 1344)  # the model's input: 1333 padded to a multiple of 128
VALID_HW = (800, 1333)  # the image inside it, given as image_shape
EXPERIMENT = "retinanet_resnetfpn_coco"


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--warmup", type=int, default=2, help="untimed calls after the first")
  parser.add_argument("--runs", type=int, default=5, help="timed calls; the median is reported")
  parser.add_argument("--threads", type=int, default=None,
                      help="shorthand: intra- and inter-op threads both set to this")
  parser.add_argument("--intra_op_threads", type=int, default=None,
                      help="tf.config.threading intra-op threads (default: TF's)")
  parser.add_argument("--inter_op_threads", type=int, default=None,
                      help="tf.config.threading inter-op threads (default: TF's)")
  parser.add_argument("--seed", type=int, default=0)
  return parser.parse_args(argv)


def build_config():
  """The shipped experiment config, with only the input size and the batch size changed."""
  from official.core import exp_factory
  from official.vision import configs  # noqa: F401 (registers the vision experiments)

  config = exp_factory.get_exp_config(EXPERIMENT)
  config.override({
    "task": {
      "model": {"input_size": [INPUT_HW[0], INPUT_HW[1], 3]},
      "validation_data": {"global_batch_size": 1},
    },
  }, is_strict=True)
  config.validate()
  config.lock()
  return config


def build_model(task_config):
  """As ``official.vision.tasks.retinanet.RetinaNetTask.build_model``, without a checkpoint."""
  import tf_keras
  from official.vision.modeling import factory

  input_specs = tf_keras.layers.InputSpec(shape=[None] + list(task_config.model.input_size))
  l2_weight_decay = task_config.losses.l2_weight_decay
  l2_regularizer = tf_keras.regularizers.l2(l2_weight_decay / 2.0) if l2_weight_decay else None
  return factory.build_retinanet(input_specs=input_specs, model_config=task_config.model,
                                 l2_regularizer=l2_regularizer)


def make_anchors(model_config, batch_size):
  """Multilevel anchors {level: [batch, H_l, W_l, 4 * A]} for the input size."""
  import tensorflow as tf
  from official.vision.ops import anchor

  boxes = anchor.Anchor(
    min_level=model_config.min_level,
    max_level=model_config.max_level,
    num_scales=model_config.anchor.num_scales,
    aspect_ratios=model_config.anchor.aspect_ratios,
    anchor_size=model_config.anchor.anchor_size,
    image_size=INPUT_HW,
  ).multilevel_boxes
  return {level: tf.tile(b[None], [batch_size, 1, 1, 1]) for level, b in boxes.items()}


def timed_call(fn, *args):
  """(seconds, outputs) of one call, its outputs fetched (``.numpy()``) as tfdet's side of
  benchmarks/bench_retinanet.py does, so that the call is timed to its end on any device."""
  import tensorflow as tf

  start = time.perf_counter()
  out = fn(*args)
  tf.nest.map_structure(lambda x: x.numpy(), out)
  return time.perf_counter() - start, out


def time_rounds(calls, warmup, runs):
  """{name: [seconds of each timed call]} of ``calls`` ({name: (fn, args)}, already called
  once), after ``warmup`` rounds; each round calls every fn in turn, so that the machine's
  drift hits all of them alike."""
  times = {name: [] for name in calls}
  for r in range(warmup + runs):
    for name, (fn, args) in calls.items():
      seconds, _ = timed_call(fn, *args)
      if r >= warmup:
        times[name].append(seconds)
  return times


def main(argv=None):
  args = parse_args(argv)
  import tensorflow as tf
  import tf_keras

  intra = args.intra_op_threads if args.intra_op_threads is not None else args.threads
  inter = args.inter_op_threads if args.inter_op_threads is not None else args.threads
  if intra is not None:
    tf.config.threading.set_intra_op_parallelism_threads(intra)
  if inter is not None:
    tf.config.threading.set_inter_op_parallelism_threads(inter)

  config = build_config()
  model_config = config.task.model
  batch_size = config.task.validation_data.global_batch_size
  tf.random.set_seed(args.seed)
  model = build_model(config.task)

  rng = np.random.default_rng(args.seed)
  images = tf.constant(rng.normal(0, 50, [batch_size, *INPUT_HW, 3]).astype(np.float32))
  # The image's own size inside the padded input (MG clips the boxes to it).
  image_shape = tf.constant([list(VALID_HW)] * batch_size, tf.float32)
  anchors = make_anchors(model_config, batch_size)

  @tf.function
  def dense(images):
    features = model.backbone(images, training=False)
    features = model.decoder(features, training=False)
    raw_scores, raw_boxes, _ = model.head(features, training=False)
    return raw_scores, raw_boxes

  @tf.function
  def post(raw_boxes, raw_scores, anchors, image_shape):
    return model.detection_generator(raw_boxes, raw_scores, anchors, image_shape)

  @tf.function
  def whole(images, image_shape, anchors):
    return model(images, image_shape=image_shape, anchor_boxes=anchors, training=False)

  # First calls (tracing included), each timed on its own.
  dense_first, (raw_scores, raw_boxes) = timed_call(dense, images)
  post_first, detections = timed_call(post, raw_boxes, raw_scores, anchors, image_shape)
  # Class probabilities uniform in [0, 1] (same shapes and dtypes: no new trace), so that
  # the top-k and NMS see many candidates, as with a trained model on a busy image.
  loaded_scores = {
    level: tf.cast(tf.math.log(u / (1.0 - u)), s.dtype)
    for level, s in raw_scores.items()
    for u in [tf.constant(rng.uniform(1e-3, 1 - 1e-3, tuple(s.shape)).astype(np.float32))]}
  loaded_first, loaded_detections = timed_call(
    post, raw_boxes, loaded_scores, anchors, image_shape)
  whole_first, outputs = timed_call(whole, images, image_shape, anchors)

  times = time_rounds({
    "dense": (dense, (images,)),
    "post": (post, (raw_boxes, raw_scores, anchors, image_shape)),
    "post_loaded": (post, (raw_boxes, loaded_scores, anchors, image_shape)),
    "whole": (whole, (images, image_shape, anchors)),
  }, args.warmup, args.runs)
  dense_all, post_all = times["dense"], times["post"]
  loaded_all, whole_all = times["post_loaded"], times["whole"]

  num_params = sum(int(tf.size(w)) for w in model.weights)  # with BN statistics, as Keras counts
  num_trainable = sum(int(tf.size(w)) for w in model.trainable_weights)
  generator = model.detection_generator.get_config()
  threshold = generator["pre_nms_score_threshold"]
  # (anchor, class) scores over the threshold, without the background class 0, as the
  # generator counts them before its top-k.
  num_above = sum(
    int(tf.reduce_sum(tf.cast(
      tf.sigmoid(tf.reshape(tf.cast(s, tf.float32), [-1, model_config.num_classes])[:, 1:])
      > threshold, tf.int32)))
    for s in raw_scores.values())

  def max_abs_diff(a, b):
    return max(float(tf.reduce_max(tf.abs(tf.cast(a[k], tf.float32) - tf.cast(b[k], tf.float32))))
               for k in b)

  # whole computes what dense + post compute: its raw outputs and detections against theirs.
  whole_check = {
    "cls_outputs": max_abs_diff(outputs["cls_outputs"], raw_scores),
    "box_outputs": max_abs_diff(outputs["box_outputs"], raw_boxes),
    "detections": max_abs_diff(
      outputs, {k: detections[k] for k in ("detection_boxes", "detection_scores")}),
  }

  result = {
    "library": "model_garden",
    "tf_version": tf.__version__,
    "models_version": importlib.metadata.version("tf-models-official"),
    "tf_keras_version": tf_keras.__version__,
    "python": sys.version.split()[0],
    "experiment": EXPERIMENT,
    "input": list(INPUT_HW),
    "batch_size": batch_size,
    "image_shape": list(VALID_HW),
    "dtype": tf_keras.mixed_precision.global_policy().name,
    "config_runtime_mixed_precision_dtype": config.runtime.mixed_precision_dtype,
    "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
    "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
    "warmup": args.warmup,
    "runs": args.runs,
    "dense_s": statistics.median(dense_all),
    "post_s": statistics.median(post_all),
    "whole_s": statistics.median(whole_all),
    "post_loaded_s": statistics.median(loaded_all),
    "first_call_s": whole_first,
    "dense_first_call_s": dense_first,
    "post_first_call_s": post_first,
    "post_loaded_first_call_s": loaded_first,
    "dense_all": dense_all,
    "post_all": post_all,
    "whole_all": whole_all,
    "post_loaded_all": loaded_all,
    "num_params": num_params,
    "num_trainable_params": num_trainable,
    "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "num_classes": model_config.num_classes,
    "backbone": f"{model_config.backbone.type}-{model_config.backbone.resnet.model_id}",
    "decoder": model_config.decoder.type,
    "head_num_convs": model_config.head.num_convs,
    "head_num_filters": model_config.head.num_filters,
    "min_level": model_config.min_level,
    "max_level": model_config.max_level,
    "num_scales": model_config.anchor.num_scales,
    "aspect_ratios": list(model_config.anchor.aspect_ratios),
    "anchor_size": model_config.anchor.anchor_size,
    "num_anchors": int(sum(a.shape[1] * a.shape[2] * a.shape[3] // 4 for a in anchors.values())),
    "apply_nms": generator["apply_nms"],
    "pre_nms_top_k": generator["pre_nms_top_k"],
    "pre_nms_top_k_scope": "per class, over all levels together",
    "pre_nms_score_threshold": threshold,
    "nms_iou_threshold": generator["nms_iou_threshold"],
    "max_num_detections": generator["max_num_detections"],
    "nms_version": generator["nms_version"],
    "use_batched_nms": generator["nms_version"] == "batched",
    "use_class_agnostic_nms": generator["use_class_agnostic_nms"],
    "use_cpu_nms": generator["use_cpu_nms"],
    "soft_nms_sigma": generator["soft_nms_sigma"],
    "num_scores_above_threshold": num_above,
    "num_detections": [int(n) for n in detections["num_detections"]],
    "num_detections_loaded": [int(n) for n in loaded_detections["num_detections"]],
    "whole_vs_parts_max_abs_diff": whole_check,
    "config_changes": {"task.model.input_size": [INPUT_HW[0], INPUT_HW[1], 3],
                       "task.validation_data.global_batch_size": batch_size},
  }
  print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
  main()
