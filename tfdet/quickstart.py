r"""The quickstart: synthetic data -> train -> evaluate -> export -> infer.

  python -m tfdet.quickstart [--work_dir=/tmp/tfdet_quickstart] [--gin_param=...]

1. generates the built-in synthetic COCO data set and its TFRecord shards
   (first use only; `tfdet.data.synthetic.ensure_synthetic_tfrecords`);
2. trains ``gin_configs/quickstart/mask_rcnn_tiny_fpn.gin`` (resumes if the
   work dir already has checkpoints);
3. evaluates the last checkpoint on the validation split with pycocotools
   (box and mask AP, written to ``eval/metrics.json``);
4. exports a SavedModel with stock-TF ops only;
5. runs the SavedModel on a few validation images and writes annotated
   copies and a COCO results json;

and prints where everything went and how long each stage took.
"""

import json
import os
import time

import gin
from absl import app, flags, logging

from tfdet import gin_files
from tfdet.data import pipeline, synthetic
from tfdet.evaluation import runner
from tfdet.export import serving
from tfdet.modeling.detectors import builders

FLAGS = flags.FLAGS
GIN_FILE = "quickstart/mask_rcnn_tiny_fpn.gin"


def define_flags():
  flags.DEFINE_string("work_dir", "/tmp/tfdet_quickstart", "Data, checkpoints and outputs.")
  flags.DEFINE_multi_string("gin_param", [], "Extra gin bindings, e.g. 'train.run.max_iter=50'.")
  flags.DEFINE_integer("num_infer_images", 4, "Validation images annotated by infer.")
  flags.DEFINE_integer("num_train_images", 400, "Synthetic training images (first use).")
  flags.DEFINE_integer("num_val_images", 50, "Synthetic validation images (first use).")
  flags.DEFINE_enum("style", "simple", synthetic.STYLES, "Synthetic data style (first use).")
  flags.DEFINE_list("image_size", ["160", "224"], "Synthetic images' shorter side: min,max.")


def main(argv):
  del argv
  import tensorflow as tf

  from tfdet import infer as infer_lib  # its flags are defined only when run as a script
  from tfdet import train as train_module

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
  gin_files.parse([GIN_FILE], [f'train/inputs.build_input.file_pattern = "{train_pattern}"',
                               *FLAGS.gin_param])
  os.makedirs(model_dir, exist_ok=True)
  with open(os.path.join(model_dir, "config.gin"), "w") as f:
    f.write(gin.config_str())
  t = time.time()
  gin.get_configurable(train_module.run)(model_dir=model_dir)
  timings["train"] = time.time() - t

  t = time.time()
  model = gin.get_configurable(builders.build_rcnn)()
  model(serving.dummy_batch(), training=False)
  step = runner.restore(model, runner.checkpoint_path(model_dir))
  scale, max_size = gin_files.eval_resize()
  dataset = pipeline.build_dataset(data["instances"]["val"], mode="eval", batch_size=2,
                                   scales=(scale,), max_size=max_size)
  label_map = data["label_map"]["instances"]
  eval_dir = os.path.join(work, "eval")
  metrics = runner.evaluate(model, dataset,
                            annotations_file=data["annotations"]["val"]["instances"],
                            label_map_file=label_map, output_dir=eval_dir,
                            convention=model.convention, step=step)
  timings["evaluate"] = time.time() - t

  t = time.time()
  export_dir = os.path.join(work, "export", "1")
  reference = gin.get_configurable(builders.build_rcnn)(implementation="reference")
  reference(serving.dummy_batch(), training=False)
  reference.set_weights(model.get_weights())
  serving.export_saved_model(reference, export_dir, scale=scale, max_size=max_size)
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
