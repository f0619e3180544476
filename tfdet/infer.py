r"""Runs a detector on image files and writes annotated images and COCO-format results.

  python -m tfdet.infer --saved_model=/tmp/run/export/1 --input=img.jpg --input=folder/ \
    --output_dir=/tmp/out [--score_threshold=0.5] [--label_map=label_map.json] \
    [--on_error=skip|stop]
  python -m tfdet.infer --gin_file=models/mask_rcnn_fpn.gin --model_dir=/tmp/run ...

With --saved_model the exported ``serving_bytes`` signature runs (no tfdet op
library needed; the box convention comes from the export's
``assets.extra/tfdet_export.json``); otherwise the detector the config names,
with the checkpoint's weights, is wrapped in the same
`serving.DetectionModule` in process (resized and padded as the config's eval
pipeline). What is drawn follows the outputs' keys: detections (with masks
and keypoints when present) or, for an RPN-only model, its best proposals
(class 0, labelled "proposal").

Outputs. Each image is written as ``<stem>.png`` (PNG inputs) or
``<stem>.jpg`` with boxes, labels, blended masks and, for keypoint models,
keypoints above --keypoint_threshold joined by COCO's skeleton
(`tfdet.visualization`). ``<stem>`` is the input's own; an input whose stem
another input already has (two folders holding ``img.jpg``; the comparison
ignores case) gets ``<stem>-2``, ``<stem>-3``, ... ``results.json`` holds
every detection above the threshold as COCO results: ``image_id`` is the
input's index, ``file_name`` its (unique) name ``<stem><input suffix>``,
``path`` the input path as given; ``category_id`` from the label map, else
the class id; masks as RLE; keypoints as COCO's ``[x, y, v] * 17`` with
v = 1, as Detectron writes them, plus ``keypoint_scores``, the 17 keypoint
scores. ``errors.json`` lists the images that could not be read
(``[{"path", "error"}]``), only when there are any.

A run is all or nothing in --output_dir: everything is written into a
partial folder on the same file system (``<output_dir>.partial-XXXX`` beside
a new --output_dir, which it then becomes by one rename;
``infer.partial-XXXX`` inside an existing one) and moved in only when the
run completes, ``results.json`` last, after the previous run's
``results.json`` and ``errors.json`` are removed. A run that fails or is
interrupted leaves --output_dir as it was (the previous run's files intact)
and removes its partial folder (a killed process can leave that folder
behind, but no file of --output_dir changes). Files of an earlier run that
this run does not overwrite (other names) stay; ``results.json`` and
``errors.json`` always describe this run alone. An output that would
overwrite one of the inputs is refused before anything runs.

Unreadable images (missing, not JPEG/PNG, corrupt). --on_error=skip (the
default) goes on with the others, logs each one by path, lists them in
``errors.json`` and exits with status 1 after writing the good images (as
``cp -r`` or ``rsync`` report files they could not copy: one bad photo in a
folder of thousands costs neither the others nor a silent success; scripts
see the status). A run in which no image could be read writes nothing.
--on_error=stop stops at the first one, naming it, and writes nothing
(exit status 1). An input folder without images, or an input path that does
not exist, is a usage error before the model loads.
"""

import dataclasses
import json
import os
import re
import shutil
import sys
import uuid

from tfdet import console

if __name__ == "__main__":  # before TensorFlow is imported
  console.hide_tf_cpp_logs()

import numpy as np
import tensorflow as tf
from absl import app, flags, logging

from tfdet import gin_files, visualization
from tfdet.data import decoder
from tfdet.evaluation import coco, runner
from tfdet.export import serving
from tfdet.modeling.detectors import outputs as out
from tfdet.ops import masks as mask_ops
from tfdet.training import checkpoints

FLAGS = flags.FLAGS
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
RESULTS_FILE = "results.json"
ERRORS_FILE = "errors.json"
PARTIAL_SUFFIX = ".partial-"
PROPOSAL_LABEL = "proposal"
ON_ERROR = ("skip", "stop")


def define_flags():
  console.define_flags()
  flags.DEFINE_string("saved_model", None, "An exported SavedModel directory.")
  flags.DEFINE_multi_string("gin_file", [], "Gin files (instead of --saved_model).")
  flags.DEFINE_multi_string("gin_param", [], "Gin bindings.")
  flags.DEFINE_string("model_dir", None, "Training directory (with --gin_file).")
  flags.DEFINE_string("checkpoint", None, "Checkpoint (default: the latest in model_dir).")
  flags.DEFINE_multi_string("input", None, "Image files or folders of images.")
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
  flags.DEFINE_enum("on_error", "skip", list(ON_ERROR),
                    "An unreadable input image: skip it (the others are written, it is listed "
                    "in errors.json, exit status 1) or stop (nothing written, exit status 1).")
  flags.mark_flags_as_required(["input", "output_dir"])


class ImageReadError(ValueError):
  """An input image that cannot be read or decoded as JPEG/PNG (`path`, `reason`)."""

  def __init__(self, path, reason):
    super().__init__(f"cannot read image {path}: {reason}")
    self.path = path
    self.reason = reason


class NoImagesReadError(ValueError):
  """None of a run's images could be read (each one's path and reason in the message)."""


@dataclasses.dataclass
class InferenceRun:
  """What `infer_images` did.

  Attributes:
    results: the COCO result dicts written to results.json.
    written: (input path, annotated image file name) of each image written.
    failures: (input path, reason) of each image skipped as unreadable.
  """
  results: list
  written: list
  failures: list


def list_images(inputs):
  """Image paths from files and folders (folders: their .jpg/.jpeg/.png files, sorted).

  Raises:
    ValueError: naming an input that does not exist or a folder without images.
  """
  paths = []
  for item in inputs:
    if tf.io.gfile.isdir(item):
      found = sorted(os.path.join(item, f) for f in tf.io.gfile.listdir(item)
                     if f.lower().endswith(IMAGE_SUFFIXES))
      found = [p for p in found if not tf.io.gfile.isdir(p)]
      if not found:
        raise ValueError(f"no images found in folder {item} (looked for files ending in "
                         f"{', '.join(IMAGE_SUFFIXES)})")
      paths += found
    elif tf.io.gfile.exists(item):
      paths.append(item)
    else:
      raise ValueError(f"input {item} does not exist")
  return paths


def output_stems(paths):
  """Unique output stems, one per input: its own, or ``<stem>-2``, ... when taken.

  Stems are compared ignoring case (one folder may not hold both ``A.jpg`` and
  ``a.jpg`` on macOS and Windows); a generated stem never equals any input's.
  """
  own = [os.path.splitext(os.path.basename(p))[0] for p in paths]
  reserved = {s.casefold() for s in own}
  taken, stems = set(), []
  for stem in own:
    unique, k = stem, 2
    while unique.casefold() in taken:
      unique = f"{stem}-{k}"
      k += 1
      if unique.casefold() in reserved:
        unique = stem  # another input's own stem: try the next number
    taken.add(unique.casefold())
    stems.append(unique)
  return stems


def _annotated_name(stem, path):
  return stem + (".png" if path.lower().endswith(".png") else ".jpg")


def plan_outputs(paths, output_dir):
  """The annotated image file name of each input in `output_dir` (see the module docstring).

  Raises:
    ValueError: no paths, `output_dir` is a file, or an output would overwrite an input.
  """
  if not paths:
    raise ValueError("no images to annotate")
  if os.path.exists(output_dir) and not os.path.isdir(output_dir):
    raise ValueError(f"output_dir {output_dir} exists and is not a folder")
  names = [_annotated_name(s, p) for s, p in zip(output_stems(paths), paths, strict=True)]
  inputs = {os.path.realpath(p): p for p in paths}
  for name in (*names, RESULTS_FILE, ERRORS_FILE):
    target = os.path.realpath(os.path.join(output_dir, name))
    if target in inputs:
      raise ValueError(f"output_dir {output_dir}: writing {name} would overwrite the input "
                       f"image {inputs[target]}; choose another output_dir")
  return names


def read_image(path):
  """(encoded bytes [] string tensor, [H, W, 3] uint8 array) of an image file.

  Decoded as the serving signatures decode (`decoder.decode_image`: JPEG or PNG).

  Raises:
    ImageReadError: naming `path`, when it cannot be read or decoded.
  """
  try:
    encoded = tf.io.read_file(path)
    image = decoder.decode_image(encoded).numpy()
  except tf.errors.OpError as e:
    raise ImageReadError(path, _op_error_reason(e)) from e
  return encoded, image


def _op_error_reason(error):
  """TF's message of an eager op error without its "{{function_node ...}}" and "[Op:...]" parts."""
  reason = re.sub(r"\{\{function_node [^}]*\}\}", "", error.message.strip().splitlines()[0])
  return re.sub(r"\[Op:[^\]]*\].*$", "", reason).strip() or type(error).__name__


def _detections(outputs, image, *, score_threshold, convention, class_names):
  """Serving outputs of one image -> the kept detections (numpy, original pixels).

  Returns:
    dict: boxes [D, 4], scores [D], classes [D], masks None or [D, H, W] pasted,
    keypoints None or [D, J, 3], names (class id -> label) and proposals (bool:
    an RPN-only model, whose proposals are the detections, class 0).
  """
  if out.DETECTION_BOXES in outputs:
    n = int(outputs[out.NUM_DETECTIONS][0])
    keep = outputs[out.DETECTION_SCORES][0, :n] >= score_threshold
    det = dict(boxes=outputs[out.DETECTION_BOXES][0, :n][keep],
               classes=outputs[out.DETECTION_CLASSES][0, :n][keep],
               scores=outputs[out.DETECTION_SCORES][0, :n][keep], names=class_names,
               proposals=False)
  else:  # an RPN-only model: its proposals (original pixels, best first) as class 0
    n = int(outputs[out.NUM_PROPOSALS][0])
    keep = outputs[out.PROPOSAL_SCORES][0, :n] >= score_threshold
    boxes = outputs[out.PROPOSALS][0, :n][keep]
    det = dict(boxes=boxes, scores=outputs[out.PROPOSAL_SCORES][0, :n][keep],
               classes=np.zeros(len(boxes), np.int32), names={0: PROPOSAL_LABEL},
               proposals=True)
  det["masks"] = det["keypoints"] = None
  if out.DETECTION_MASKS in outputs:
    det["masks"] = mask_ops.paste_masks(
        outputs[out.DETECTION_MASKS][0, :n][keep][None], det["boxes"][None], image.shape[0],
        image.shape[1], convention=convention)[0].numpy()
  if out.DETECTION_KEYPOINTS in outputs:
    det["keypoints"] = outputs[out.DETECTION_KEYPOINTS][0, :n][keep]  # [D', J, 3] original px
  return det


def _coco_entries(index, det, *, convention, class_to_category):
  """COCO result dicts of one image's `_detections`."""
  mapping = {int(c): int(c) for c in det["classes"]}
  if class_to_category and not det["proposals"]:
    mapping = class_to_category
  count = len(det["boxes"])
  entries = coco.detections_to_coco(index, det["boxes"], det["scores"], det["classes"], count,
                                    class_to_category=mapping, convention=convention,
                                    masks=det["masks"])
  if det["keypoints"] is not None:
    kp_entries = coco.keypoints_to_coco(index, det["keypoints"], det["scores"], det["classes"],
                                        count, class_to_category=mapping)
    for entry, kp, kp_entry in zip(entries, det["keypoints"], kp_entries, strict=True):
      entry["keypoints"] = kp_entry["keypoints"]
      entry["keypoint_scores"] = [float(v) for v in kp[:, 2]]
  return entries


def infer_images(detect_bytes, paths, output_dir, *, score_threshold, convention,
                 class_to_category=None, class_names=None,
                 keypoint_threshold=visualization.KEYPOINT_THRESHOLD, on_error="skip"):
  """Runs `detect_bytes` on each image and moves the finished run into `output_dir`.

  Args:
    detect_bytes: [1] encoded image -> the serving outputs (`serving`).
    paths: image files (see `list_images`).
    output_dir: where the drawn images, results.json and errors.json go (module
      docstring: names, all-or-nothing writing).
    score_threshold: detections below it are dropped.
    convention: the model's box convention.
    class_to_category: contiguous class id -> category id (None: the id).
    class_names: class id -> name for the labels (None: the id).
    keypoint_threshold: keypoints at or below it are not drawn (all are written).
    on_error: "skip" (unreadable images are logged, listed in errors.json and
      in the returned failures) or "stop" (the first one raises).

  Returns:
    an `InferenceRun`.

  Raises:
    ImageReadError: with on_error="stop", the first unreadable image; nothing is written.
    NoImagesReadError: no image could be read (with on_error="skip"); nothing is written.
    ValueError: bad arguments (`plan_outputs`); nothing is written.
  """
  if on_error not in ON_ERROR:
    raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
  output_dir = os.path.abspath(output_dir)
  names = plan_outputs(paths, output_dir)
  stems = [os.path.splitext(n)[0] for n in names]
  staging = _staging_folder(output_dir)
  run = InferenceRun(results=[], written=[], failures=[])
  try:
    for index, (path, name, stem) in enumerate(zip(paths, names, stems, strict=True)):
      try:
        encoded, image = read_image(path)
      except ImageReadError as e:
        if on_error == "stop":
          raise
        logging.error("skipped: %s", e)
        run.failures.append((path, e.reason))
        continue
      outputs = {k: v.numpy() for k, v in detect_bytes(tf.reshape(encoded, [1])).items()}
      det = _detections(outputs, image, score_threshold=score_threshold, convention=convention,
                        class_names=class_names)
      drawn = visualization.draw_detections(
          image, det["boxes"], det["classes"], det["scores"], masks=det["masks"],
          keypoints=det["keypoints"], class_names=det["names"], score_threshold=0.0,
          keypoint_threshold=keypoint_threshold)
      visualization.encode_image(drawn, os.path.join(staging, name))
      for entry in _coco_entries(index, det, convention=convention,
                                 class_to_category=class_to_category):
        entry["file_name"] = stem + os.path.splitext(path)[1]
        entry["path"] = path
        run.results.append(entry)
      run.written.append((path, name))
      logging.info("%s -> %s: %d detections >= %.2f", path, name, len(det["boxes"]),
                   score_threshold)
    if not run.written:
      raise NoImagesReadError(
          f"none of the {len(paths)} images could be read (nothing written to {output_dir}): "
          + "; ".join(f"{p}: {r}" for p, r in run.failures))
    if run.failures:
      with open(os.path.join(staging, ERRORS_FILE), "w") as f:
        json.dump([{"path": p, "error": r} for p, r in run.failures], f, indent=1)
    with open(os.path.join(staging, RESULTS_FILE), "w") as f:
      json.dump(run.results, f)
    _move_into_place(staging, output_dir)
  finally:
    shutil.rmtree(staging, ignore_errors=True)  # gone already after a completed move
  return run


def _staging_folder(output_dir):
  """A new folder on `output_dir`'s file system (renames into it cannot fail across devices).

  Inside `output_dir` when it exists (``infer.partial-XXXX``: it may be a mount
  point), else beside it (``<output_dir>.partial-XXXX``).
  """
  # os.mkdir, not tempfile.mkdtemp: the folder may become output_dir, with the umask's mode.
  suffix = PARTIAL_SUFFIX + uuid.uuid4().hex[:8]
  if os.path.isdir(output_dir):
    staging = os.path.join(output_dir, "infer" + suffix)
  else:
    os.makedirs(os.path.dirname(output_dir), exist_ok=True)
    staging = output_dir + suffix
  os.mkdir(staging)
  return staging


def _move_into_place(staging, output_dir):
  """Moves a finished run from `staging` into `output_dir`, results.json last.

  A new `output_dir` is one rename. Into an existing one the previous run's
  results.json and errors.json are removed first, so that a move interrupted
  half way leaves no results.json that looks complete.
  """
  if not os.path.lexists(output_dir):
    os.rename(staging, output_dir)
    return
  for stale in (RESULTS_FILE, ERRORS_FILE):
    if os.path.lexists(os.path.join(output_dir, stale)):
      os.remove(os.path.join(output_dir, stale))
  for name in sorted(os.listdir(staging), key=lambda n: n == RESULTS_FILE):
    os.replace(os.path.join(staging, name), os.path.join(output_dir, name))
  os.rmdir(staging)


def annotate(detect_bytes, paths, output_dir, *, score_threshold, convention,
             class_to_category=None, class_names=None,
             keypoint_threshold=visualization.KEYPOINT_THRESHOLD, on_error="skip"):
  """`infer_images`, returning only the list of COCO result dicts written to results.json."""
  return infer_images(detect_bytes, paths, output_dir, score_threshold=score_threshold,
                      convention=convention, class_to_category=class_to_category,
                      class_names=class_names, keypoint_threshold=keypoint_threshold,
                      on_error=on_error).results


def _load_detector():
  """(detect_bytes, convention) of --saved_model, or of --gin_file with the checkpoint."""
  if FLAGS.saved_model:
    detect_bytes = tf.saved_model.load(FLAGS.saved_model).signatures[serving.BYTES_SIGNATURE]
    convention = (FLAGS.convention or serving.read_export_info(FLAGS.saved_model).get("convention")
                  or "detectron")
    return (lambda encoded: detect_bytes(encoded_images=encoded)), convention
  gin_files.parse(FLAGS.gin_file, FLAGS.gin_param)
  model, _, _ = checkpoints.load_for_inference(gin_files.detector_spec(), FLAGS.model_dir,
                                               FLAGS.checkpoint)
  try:
    module = serving.DetectionModule(model, **gin_files.eval_preprocessing(
        scale=FLAGS.scale, max_size=FLAGS.max_size, size_divisibility=FLAGS.size_divisibility))
  except serving.NotServableError as e:
    sys.exit(f"tfdet.infer: {e}")
  # The closure keeps `module` alive: its tf.function methods hold it only weakly.
  return (lambda encoded: module.serve_bytes(encoded)), model.convention


def main(argv):
  del argv
  console.configure(FLAGS.tf_logs)
  try:
    paths = list_images(FLAGS.input)
  except ValueError as e:
    raise app.UsageError(f"--input: {e}") from e
  try:
    plan_outputs(paths, os.path.abspath(FLAGS.output_dir))
  except ValueError as e:
    raise app.UsageError(f"--output_dir: {e}") from e
  run, convention = _load_detector()
  class_to_category = class_names = None
  if FLAGS.label_map:
    class_to_category, class_names = runner.load_label_map(FLAGS.label_map)
  try:
    done = infer_images(run, paths, FLAGS.output_dir, score_threshold=FLAGS.score_threshold,
                        convention=convention, class_to_category=class_to_category,
                        class_names=class_names, keypoint_threshold=FLAGS.keypoint_threshold,
                        on_error=FLAGS.on_error)
  except ImageReadError as e:
    sys.exit(f"tfdet.infer: {e}\n--on_error=stop: nothing was written to {FLAGS.output_dir} "
             "(--on_error=skip goes on with the other images)")
  except NoImagesReadError as e:
    sys.exit(f"tfdet.infer: {e}")
  if done.failures:
    sys.exit(f"tfdet.infer: {len(done.failures)} of {len(paths)} images could not be read and "
             f"were skipped (listed in {os.path.join(FLAGS.output_dir, ERRORS_FILE)}):\n"
             + "\n".join(f"  {p}: {r}" for p, r in done.failures))
  logging.info("%d images -> %s", len(done.written), FLAGS.output_dir)


if __name__ == "__main__":
  define_flags()
  app.run(main)
