r"""Evaluates checkpoints of a detector on COCO-format data (entry point).

  python -m tfdet.evaluate --gin_file=models/mask_rcnn_fpn.gin \
    --gin_param='eval/pipeline.build_dataset.file_pattern = "/data/coco/val-*"' \
    --model_dir=/tmp/run --annotations_file=/data/coco/instances_val2017.json [--watch]

The model is the detector the config names (its `spec.DetectorSpec`); the
data set is
`pipeline.build_dataset(mode="eval")` under the gin scope ``eval/`` (bind its
file_pattern, scales, max_size, ... there), with --file_pattern and
--batch_size as overrides. The label map defaults to ``label_map.json``
beside the shards. Results, metrics.json and TensorBoard scalars go to
``model_dir/eval`` (one ``metrics.json`` per evaluation, the last one kept;
``metrics-<step>.json`` too). With --watch every new checkpoint is
evaluated as it appears, until none comes for --watch_timeout seconds.

Before the model is built, the image ids of the shards are read (a pass over
the records parsing only the id) and compared with the annotations json's
images: a shard image that --annotations_file (or --keypoint_annotations_file)
lacks is a usage error naming both and the missing ids, and nothing is written.

With --tta the detections come from test-time augmentation
(`tfdet.evaluation.tta`, Detectron's TEST.BBOX_AUG / MASK_AUG / KPS_AUG):
bind `tta.TTAConfig` in a gin file or --gin_param (with the import lines
``from __gin__ import dynamic_registration`` and ``from tfdet.evaluation
import tta``), e.g. ``tta.TTAConfig.h_flip = True``. Without the flag, TTA
runs when the gin files bind `tta.TTAConfig` (as Detectron runs it when its
config enables TEST.BBOX_AUG: the X-152 model-zoo row includes
evaluation/detectron_tta.gin); --notta turns it off. The original images are
read from the same shards and preprocessed as the ``eval/`` pipeline
bindings say (its scale is the identity transform's), one image at a time;
--batch_size does not apply.
"""

import functools
import json
import os
import shutil

from tfdet import console

if __name__ == "__main__":  # before TensorFlow is imported
  console.hide_tf_cpp_logs()

import gin
import tensorflow as tf
from absl import app, flags, logging

from tfdet import gin_files
from tfdet.data import pipeline, schema, shard_files
from tfdet.evaluation import runner, tta
from tfdet.training import checkpoints

FLAGS = flags.FLAGS


def define_flags():
  console.define_flags()
  flags.DEFINE_multi_string("gin_file", [], "Gin files (relative to gin_configs/ or paths).")
  flags.DEFINE_multi_string("gin_param", [], "Gin bindings, applied after the files.")
  flags.DEFINE_string("model_dir", None, "Training directory (checkpoints); eval/ goes here.")
  flags.DEFINE_string("checkpoint", None, "Checkpoint to evaluate (default: the latest).")
  flags.DEFINE_string("annotations_file", None, "COCO ground-truth json of the eval images.")
  flags.DEFINE_string("label_map", None, "label_map.json (default: beside the shards).")
  flags.DEFINE_string("file_pattern", None, "Eval shards (overrides the gin binding).")
  flags.DEFINE_integer("batch_size", 1, "Eval images per batch.")
  flags.DEFINE_bool("watch", False, "Evaluate every new checkpoint as it appears.")
  flags.DEFINE_integer("watch_timeout", 3600, "Stop watching after this many idle seconds.")
  flags.DEFINE_string("output_dir", None, "Default: model_dir/eval.")
  flags.DEFINE_string("keypoint_annotations_file", None,
                      "COCO keypoint json of the eval images (person_keypoints_*.json): keypoint "
                      "AP for models that output detection_keypoints (default: "
                      "--annotations_file when it has keypoints).")
  flags.DEFINE_enum("keypoint_confidence", None, ["bbox", "logit"],
                    "Keypoint instance score (default bbox, as Detectron's configs).")
  flags.DEFINE_bool("tta", None, "Test-time augmentation as the gin-bound tta.TTAConfig says "
                    "(default: when the gin files bind tta.TTAConfig).")
  flags.mark_flags_as_required(["model_dir", "annotations_file"])


def build_eval_dataset(file_pattern, batch_size):
  """`pipeline.build_dataset(mode="eval")` with the gin bindings of scope ``eval/``."""
  build = gin_files.configurable(pipeline.build_dataset)
  kwargs = dict(mode="eval", batch_size=batch_size)
  if file_pattern:
    kwargs["file_pattern"] = file_pattern
  with gin.config_scope("eval"):
    return build(**kwargs)


def _file_pattern():
  if FLAGS.file_pattern:
    return FLAGS.file_pattern
  try:
    return gin.query_parameter("eval/pipeline.build_dataset.file_pattern")
  except ValueError:
    return None  # build_dataset then fails naming the missing argument


def _tta_config():
  """The gin-bound `tta.TTAConfig` (its defaults when no gin file imports tta)."""
  return gin_files.configurable(tta.TTAConfig)()


def build_tta_inputs(file_pattern, convention):
  """(data set, run_fn) of test-time augmentation for `runner.evaluate`.

  The preprocessing is the one of the ``eval/`` pipeline bindings.
  """
  if not file_pattern:
    raise app.UsageError("--tta needs the eval shards: --file_pattern or its gin binding")
  bound = gin_files.bindings(pipeline.build_dataset, scope="eval")
  preprocessing = tta.Preprocessing.from_pipeline_arguments(**bound)
  config = _tta_config()
  logging.info("test-time augmentation: %s, identity %s", config, preprocessing.identity)
  dataset = tta.build_tta_dataset(file_pattern, config=config, preprocessing=preprocessing,
                                  convention=convention)
  return dataset, functools.partial(tta.run_tta, config=config, preprocessing=preprocessing)


def check_annotations_match_shards(file_pattern, annotations):
  """Raises app.UsageError when the shards hold an image that an annotations json lacks.

  Runs before the model is built and before anything is written: one pass
  over the shards' records parsing only their image ids (`runner.shard_image_ids`).

  Args:
    file_pattern: the eval shards.
    annotations: {flag name: COCO json path or None} (--annotations_file,
      --keypoint_annotations_file).
  """
  try:
    ids = runner.shard_image_ids(file_pattern)
  except ValueError as e:  # no shards match
    raise app.UsageError(f"--file_pattern (or its gin binding): {e}") from e
  if not ids:
    raise app.UsageError(f"--file_pattern (or its gin binding): the shards {file_pattern} "
                         "hold no records")
  for flag, path in annotations.items():
    if path is None:
      continue
    try:
      runner.check_image_ids(ids, runner.annotation_image_ids(path), annotations_file=path,
                             source=f"the shards {file_pattern}")
    except (ValueError, OSError) as e:
      raise app.UsageError(f"--{flag}: {e}") from e


def evaluate_checkpoint(model, path, *, file_pattern, label_map, output_dir):
  """Restores `path` into `model`, evaluates it and returns the metrics."""
  step = checkpoints.restore(model, path)
  run_fn = None
  if gin_files.tta_configured() if FLAGS.tta is None else FLAGS.tta:
    dataset, run_fn = build_tta_inputs(file_pattern, model.convention)
  else:
    dataset = build_eval_dataset(file_pattern, FLAGS.batch_size)
  metrics = runner.evaluate(model, dataset, annotations_file=FLAGS.annotations_file,
                            label_map_file=label_map, output_dir=output_dir,
                            convention=model.convention, step=step, run_fn=run_fn,
                            keypoint_annotations_file=FLAGS.keypoint_annotations_file,
                            keypoint_confidence=FLAGS.keypoint_confidence)
  shutil.copy(os.path.join(output_dir, runner.METRICS_FILE),
              os.path.join(output_dir, f"metrics-{step}.json"))
  logging.info("step %d (%s): %s", step, path, json.dumps(metrics, indent=1, sort_keys=True))
  return metrics


def main(argv):
  del argv
  console.configure(FLAGS.tf_logs)
  gin_files.parse(FLAGS.gin_file, FLAGS.gin_param)
  file_pattern = _file_pattern()
  if not (FLAGS.label_map or file_pattern):
    raise app.UsageError("give --label_map, or --file_pattern to find label_map.json")
  if file_pattern:  # else build_dataset fails naming its missing file_pattern
    check_annotations_match_shards(file_pattern, {
        "annotations_file": FLAGS.annotations_file,
        "keypoint_annotations_file": FLAGS.keypoint_annotations_file})
  label_map = FLAGS.label_map or os.path.join(
      os.path.dirname(shard_files.list_files(file_pattern)[0]), schema.LABEL_MAP_FILE)
  output_dir = FLAGS.output_dir or os.path.join(FLAGS.model_dir, "eval")
  model = gin_files.detector_spec().build_model()  # each checkpoint is restored into it
  if FLAGS.watch:
    paths = tf.train.checkpoints_iterator(FLAGS.model_dir, timeout=FLAGS.watch_timeout)
  else:
    paths = [checkpoints.checkpoint_path(FLAGS.model_dir, FLAGS.checkpoint)]
  for path in paths:
    evaluate_checkpoint(model, path, file_pattern=file_pattern, label_map=label_map,
                        output_dir=output_dir)


if __name__ == "__main__":
  define_flags()
  app.run(main)
