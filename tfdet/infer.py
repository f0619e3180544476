r"""Runs a detector on image files and writes annotated images and COCO-format results.

  python -m tfdet.infer --saved_model=/tmp/run/export/1 --input=img.jpg --input=folder/ \
    --output_dir=/tmp/out [--score_threshold=0.5] [--label_map=label_map.json]
  python -m tfdet.infer --gin_file=models/mask_rcnn_fpn.gin --model_dir=/tmp/run ...

With --saved_model the exported ``serving_bytes`` signature runs (no tfdet op
library needed; the box convention comes from the export's
``assets.extra/tfdet_export.json``); otherwise the detector the config names,
with the checkpoint's weights, is wrapped in the same
`serving.DetectionModule` in process (resized and padded as the config's eval
pipeline). What is drawn follows the outputs' keys: detections (with masks
and keypoints when present) or, for an RPN-only model, its best proposals
(class 0, labelled "proposal"). Each image is
written as ``<name>.png`` (PNG inputs) or ``<name>.jpg`` with boxes, labels,
blended masks and, for keypoint models, keypoints above --keypoint_threshold
joined by COCO's skeleton (`tfdet.visualization`), and ``results.json``
holds every detection above the threshold as COCO results (``image_id`` is
the input's index, ``file_name`` added; ``category_id`` from the label map,
else the class id; masks as RLE; keypoints as COCO's ``[x, y, v] * 17``
with v = 1, as Detectron writes them, plus ``keypoint_scores``, the 17
keypoint scores).
"""

import json
import os

import numpy as np
import tensorflow as tf
from absl import app, flags, logging

from tfdet import gin_files, visualization
from tfdet.evaluation import coco, runner
from tfdet.export import serving
from tfdet.modeling.detectors import outputs as out
from tfdet.ops import masks as mask_ops
from tfdet.training import checkpoints

FLAGS = flags.FLAGS
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
RESULTS_FILE = "results.json"
PROPOSAL_LABEL = "proposal"


def define_flags():
  flags.DEFINE_string("saved_model", None, "An exported SavedModel directory.")
  flags.DEFINE_multi_string("gin_file", [], "Gin files (instead of --saved_model).")
  flags.DEFINE_multi_string("gin_param", [], "Gin bindings.")
  flags.DEFINE_string("model_dir", None, "Training directory (with --gin_file).")
  flags.DEFINE_string("checkpoint", None, "Checkpoint (default: the latest in model_dir).")
  flags.DEFINE_multi_string("input", [], "Image files or folders of images.")
  flags.DEFINE_string("output_dir", None, "Where annotated images and results.json go.")
  flags.DEFINE_float("score_threshold", 0.5, "Detections below it are dropped.")
  flags.DEFINE_float("keypoint_threshold", visualization.KEYPOINT_THRESHOLD,
                     "Keypoints with a score (heatmap logit) at or below it are not drawn.")
  flags.DEFINE_string("label_map", None, "label_map.json for class names and category ids.")
  flags.DEFINE_string("convention", None, "Box convention of a SavedModel exported without "
                      "tfdet_export.json (mask pasting, COCO widths); otherwise the model's own.")
  flags.DEFINE_integer("scale", None, "Shorter side (with --gin_file; default: the "
                       "eval/pipeline.build_dataset binding, else 800; a SavedModel has its own).")
  flags.DEFINE_integer("max_size", None, "Longer-side cap (with --gin_file; default: the "
                       "eval/pipeline.build_dataset binding, else 1333).")
  flags.DEFINE_integer("size_divisibility", None, "Canvas multiple (with --gin_file; default: "
                       "the config's).")
  flags.mark_flags_as_required(["input", "output_dir"])


def list_images(inputs):
  """Image paths from files and folders (folders: their images, sorted)."""
  paths = []
  for item in inputs:
    if tf.io.gfile.isdir(item):
      paths += sorted(os.path.join(item, f) for f in tf.io.gfile.listdir(item)
                      if f.lower().endswith(IMAGE_SUFFIXES))
    else:
      paths.append(item)
  return paths


def annotate(detect_bytes, paths, output_dir, *, score_threshold, convention,
             class_to_category=None, class_names=None,
             keypoint_threshold=visualization.KEYPOINT_THRESHOLD):
  """Runs `detect_bytes` ([1] string -> serving outputs) on each image and writes the outputs.

  Args:
    detect_bytes: [1] encoded image -> the serving outputs (`serving`).
    paths: image files.
    output_dir: where the drawn images and results.json go.
    score_threshold: detections below it are dropped.
    convention: the model's box convention.
    class_to_category: contiguous class id -> category id (None: the id).
    class_names: class id -> name for the labels (None: the id).
    keypoint_threshold: keypoints at or below it are not drawn (all are written).

  Returns:
    the list of COCO result dicts written to results.json.
  """
  tf.io.gfile.makedirs(output_dir)
  results = []
  for index, path in enumerate(paths):
    encoded = tf.io.read_file(path)
    image = tf.io.decode_image(encoded, channels=3, expand_animations=False).numpy()
    outputs = {k: v.numpy() for k, v in detect_bytes(tf.reshape(encoded, [1])).items()}
    names = class_names
    if out.DETECTION_BOXES in outputs:
      n = int(outputs[out.NUM_DETECTIONS][0])
      keep = outputs[out.DETECTION_SCORES][0, :n] >= score_threshold
      boxes = outputs[out.DETECTION_BOXES][0, :n][keep]
      classes = outputs[out.DETECTION_CLASSES][0, :n][keep]
      scores = outputs[out.DETECTION_SCORES][0, :n][keep]
    else:  # an RPN-only model: its proposals (original pixels, best first) as class 0
      n = int(outputs[out.NUM_PROPOSALS][0])
      keep = outputs[out.PROPOSAL_SCORES][0, :n] >= score_threshold
      boxes = outputs[out.PROPOSALS][0, :n][keep]
      scores = outputs[out.PROPOSAL_SCORES][0, :n][keep]
      classes = np.zeros(len(boxes), np.int32)
      names = {0: PROPOSAL_LABEL}
    masks = None
    if out.DETECTION_MASKS in outputs:
      masks = mask_ops.paste_masks(outputs[out.DETECTION_MASKS][0, :n][keep][None],
                                   boxes[None], image.shape[0], image.shape[1],
                                   convention=convention)[0].numpy()
    keypoints = None
    if out.DETECTION_KEYPOINTS in outputs:
      keypoints = outputs[out.DETECTION_KEYPOINTS][0, :n][keep]  # [D', J, 3] original pixels
    drawn = visualization.draw_detections(image, boxes, classes, scores, masks=masks,
                                          keypoints=keypoints, class_names=names,
                                          score_threshold=0.0,
                                          keypoint_threshold=keypoint_threshold)
    stem, suffix = os.path.splitext(os.path.basename(path))
    visualization.encode_image(
        drawn, os.path.join(output_dir, stem + (".png" if suffix.lower() == ".png" else ".jpg")))
    mapping = {int(c): int(c) for c in classes}
    if class_to_category and out.DETECTION_BOXES in outputs:
      mapping = class_to_category
    entries = coco.detections_to_coco(index, boxes, scores, classes, len(boxes),
                                      class_to_category=mapping, convention=convention,
                                      masks=masks)
    if keypoints is not None:
      kp_entries = coco.keypoints_to_coco(index, keypoints, scores, classes, len(boxes),
                                          class_to_category=mapping)
      for entry, kp, kp_entry in zip(entries, keypoints, kp_entries, strict=True):
        entry["keypoints"] = kp_entry["keypoints"]
        entry["keypoint_scores"] = [float(v) for v in kp[:, 2]]
    for entry in entries:
      entry["file_name"] = os.path.basename(path)
      results.append(entry)
    logging.info("%s: %d detections >= %.2f", path, len(boxes), score_threshold)
  with open(os.path.join(output_dir, RESULTS_FILE), "w") as f:
    json.dump(results, f)
  return results


def main(argv):
  del argv
  if FLAGS.saved_model:
    detect_bytes = tf.saved_model.load(FLAGS.saved_model).signatures[serving.BYTES_SIGNATURE]
    run = lambda encoded: detect_bytes(encoded_images=encoded)  # noqa: E731
    convention = (FLAGS.convention or serving.read_export_info(FLAGS.saved_model).get("convention")
                  or "detectron")
  else:
    gin_files.parse(FLAGS.gin_file, FLAGS.gin_param)
    model, _, _ = checkpoints.load_for_inference(gin_files.detector_spec(), FLAGS.model_dir,
                                                 FLAGS.checkpoint)
    convention = model.convention
    module = serving.DetectionModule(model, **gin_files.eval_preprocessing(
        scale=FLAGS.scale, max_size=FLAGS.max_size, size_divisibility=FLAGS.size_divisibility))
    run = module.serve_bytes  # `module` stays referenced: tf.function methods hold it weakly
  class_to_category = class_names = None
  if FLAGS.label_map:
    class_to_category, class_names = runner.load_label_map(FLAGS.label_map)
  annotate(run, list_images(FLAGS.input), FLAGS.output_dir,
           score_threshold=FLAGS.score_threshold, convention=convention,
           class_to_category=class_to_category, class_names=class_names,
           keypoint_threshold=FLAGS.keypoint_threshold)


if __name__ == "__main__":
  define_flags()
  app.run(main)
