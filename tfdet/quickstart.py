r"""The quickstart: synthetic data -> train -> evaluate -> export -> infer.

  python -m tfdet.quickstart [--work_dir=/tmp/tfdet_quickstart] [--gin_param=...]
  python -m tfdet.quickstart --gin_file=quickstart/retinanet_tiny.gin --work_dir=/tmp/qs_retina

1. generates the built-in synthetic COCO data set and its TFRecord shards
   (first use only; `tfdet.data.synthetic.ensure_synthetic_tfrecords`);
2. trains ``--gin_file`` (default ``gin_configs/quickstart/mask_rcnn_tiny_fpn.gin``;
   any detector family: the config names it) and resumes if the work dir
   already has checkpoints;
3. evaluates the last checkpoint on the validation split with pycocotools
   (box AP, mask AP for mask models, written to ``eval/metrics.json``);
4. exports a SavedModel with stock-TF ops only;
5. runs the SavedModel on a few validation images and writes annotated
   copies and a COCO results json;

and prints where everything went and how long each stage took.
"""

import json
import os
import time

from tfdet import console

if __name__ == "__main__":  # before TensorFlow is imported
  console.hide_tf_cpp_logs()

import gin
from absl import app, flags, logging

from tfdet import gin_files
from tfdet.data import synthetic
from tfdet.evaluation import runner
from tfdet.export import serving
from tfdet.training import checkpoints

FLAGS = flags.FLAGS
GIN_FILE = "quickstart/mask_rcnn_tiny_fpn.gin"


def define_flags():
  flags.DEFINE_string("gin_file", GIN_FILE, "The config trained (relative to gin_configs/ or "
                      "a path); quickstart/retinanet_tiny.gin trains a RetinaNet.")
  flags.DEFINE_string("work_dir", "/tmp/tfdet_quickstart", "Data, checkpoints and outputs.")
  flags.DEFINE_multi_string("gin_param", [], "Extra gin bindings, e.g. 'train.run.max_iter=50'.")
  flags.DEFINE_integer("num_infer_images", 4, "Validation images annotated by infer.")
  flags.DEFINE_integer("num_train_images", 400, "Synthetic training images (first use).")
  flags.DEFINE_integer("num_val_images", 50, "Synthetic validation images (first use).")
  flags.DEFINE_enum("style", "simple", synthetic.STYLES, "Synthetic data style (first use).")
  flags.DEFINE_list("image_size", ["160", "224"], "Synthetic images' shorter side: min,max.")
  console.define_flags()


def main(argv):
  del argv
  import tensorflow as tf

  # The entry points' flags are defined only when they run as scripts.
  from tfdet import evaluate as evaluate_lib
  from tfdet import infer as infer_lib
  from tfdet import train as train_module

  console.configure(FLAGS.tf_logs)
  work = FLAGS.work_dir
  model_dir = os.path.join(work, "model")
  timings = {}
  start = time.time()
  data = synthetic.ensure_synthetic_tfrecords(os.path.join(work, "data"), num_workers=2,
                                              num_train_images=FLAGS.num_train_images,
                                              num_val_images=FLAGS.num_val_images,
                                              style=FLAGS.style,
                                              image_size=tuple(int(v) for v in FLAGS.image_size))
  timings["data"] = time.time() - start

  train_pattern = data["instances"]["train"]
  gin_files.parse([FLAGS.gin_file],
                  [f'train/inputs.build_input.file_pattern = "{train_pattern}"', *FLAGS.gin_param])
  detector = gin_files.detector_spec()
  train_module.check_config(train_module.run, detector)
  t = time.time()
  gin.get_configurable(train_module.run)(model_dir=model_dir, model_fn=detector.build,
                                         loss_fn=detector.loss, config_text=gin.config_str())
  timings["train"] = time.time() - t

  t = time.time()
  model, step, _ = checkpoints.load_for_inference(detector, model_dir)
  dataset = evaluate_lib.build_eval_dataset(data["instances"]["val"], batch_size=2)
  label_map = data["label_map"]["instances"]
  eval_dir = os.path.join(work, "eval")
  metrics = runner.evaluate(model, dataset,
                            annotations_file=data["annotations"]["val"]["instances"],
                            label_map_file=label_map, output_dir=eval_dir,
                            convention=model.convention, step=step)
  timings["evaluate"] = time.time() - t

  t = time.time()
  export_dir = os.path.join(work, "export", "1")
  reference = detector.build_model(implementation="reference")
  reference.set_weights(model.get_weights())
  serving.export_saved_model(reference, export_dir, **gin_files.eval_preprocessing())
  timings["export"] = time.time() - t

  t = time.time()
  loaded = tf.saved_model.load(export_dir)
  detect = loaded.signatures[serving.BYTES_SIGNATURE]
  images = infer_lib.list_images([os.path.join(work, "data", "coco", "val")])
  class_to_category, class_names = runner.load_label_map(label_map)
  infer_dir = os.path.join(work, "infer")
  infer_lib.annotate(lambda encoded: detect(encoded_images=encoded),
                     images[:FLAGS.num_infer_images], infer_dir, score_threshold=0.5,
                     convention=model.convention, class_to_category=class_to_category,
                     class_names=class_names)
  timings["infer"] = time.time() - t
  timings["total"] = time.time() - start

  summary = {
      "box AP": metrics.get("bbox/AP"), "mask AP": metrics.get("segm/AP"),
      "checkpoint step": step, "model_dir": model_dir, "metrics": eval_dir,
      "saved_model": export_dir, "annotated images": infer_dir,
      "seconds": {k: round(v, 1) for k, v in timings.items()},
  }
  with open(os.path.join(work, "quickstart_summary.json"), "w") as f:
    json.dump(summary, f, indent=1)
  logging.info("quickstart summary:\n%s", json.dumps(summary, indent=1))
  print(json.dumps(summary, indent=1))


if __name__ == "__main__":
  define_flags()
  app.run(main)
