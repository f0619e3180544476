r"""Exports a trained detector as a SavedModel for TF Serving (entry point).

  python -m tfdet.export --gin_file=models/mask_rcnn_fpn.gin --model_dir=/tmp/run \
    --export_dir=/tmp/run/export/1 [--checkpoint=PATH] [--scale=800 --max_size=1333]

The detector the config names (its `spec.DetectorSpec`) is built with
``implementation="reference"`` (pure-TF ops, so stock TF Serving runs the
graph), the checkpoint's weights are restored into it, and
`serving.export_saved_model` writes the signatures described in
`tfdet.export.serving` (their outputs are the model's: masks for mask
models, ``detection_keypoints`` for keypoint models). The in-graph resize
and the canvas multiple are the config's eval ones (`gin_files.eval_preprocessing`:
128 for RetinaNet, 32 for FPN R-CNN) unless a flag overrides them.

(This is ``tfdet/export/__main__.py``: a ``tfdet/export.py`` module would be
shadowed by the ``tfdet/export/`` package.)
"""

import sys

from tfdet import console

if __name__ == "__main__":  # before TensorFlow is imported
  console.hide_tf_cpp_logs()

from absl import app, flags, logging

from tfdet import gin_files
from tfdet.export import serving
from tfdet.training import checkpoints

FLAGS = flags.FLAGS


def define_flags():
  flags.DEFINE_multi_string("gin_file", [], "Gin files (relative to gin_configs/ or paths).")
  flags.DEFINE_multi_string("gin_param", [], "Gin bindings, applied after the files.")
  flags.DEFINE_string("model_dir", None, "Training directory (checkpoints).")
  flags.DEFINE_string("checkpoint", None, "Checkpoint to export (default: the latest).")
  flags.DEFINE_string("export_dir", None, "Where the SavedModel goes (e.g. .../export/1).")
  flags.DEFINE_integer("scale", None, "Shorter side of the in-graph resize (TEST.SCALE; "
                       "default: the eval/pipeline.build_dataset binding, else 800).")
  flags.DEFINE_integer("max_size", None, "Longer-side cap (TEST.MAX_SIZE; default: the "
                       "eval/pipeline.build_dataset binding, else 1333).")
  flags.DEFINE_integer("size_divisibility", None, "Canvas multiple (default: the config's, "
                       "e.g. 32 FPN R-CNN, 128 RetinaNet, 1 C4).")
  flags.mark_flags_as_required(["model_dir", "export_dir"])
  console.define_flags()


def main(argv):
  del argv
  console.configure(FLAGS.tf_logs)
  gin_files.parse(FLAGS.gin_file, FLAGS.gin_param)
  model, _, _ = checkpoints.load_for_inference(gin_files.detector_spec(), FLAGS.model_dir,
                                               FLAGS.checkpoint, implementation="reference")
  try:
    serving.export_saved_model(model, FLAGS.export_dir, **gin_files.eval_preprocessing(
        scale=FLAGS.scale, max_size=FLAGS.max_size, size_divisibility=FLAGS.size_divisibility))
  except serving.NotServableError as e:
    sys.exit(f"tfdet.export: {e}\nnothing was written to {FLAGS.export_dir}")
  logging.info("exported to %s", FLAGS.export_dir)


if __name__ == "__main__":
  define_flags()
  app.run(main)
