"""The evaluation loop: a model over an eval data set -> COCO results, AP, proposal AR.

`run_model` runs a detector (``training=False``) over batches of
`tfdet.data.pipeline.build_dataset(mode="eval")` (padding images, IMAGE_ID
-1, skipped) and collects COCO result dicts (`coco.detections_to_coco`:
boxes already in original pixels; masks pasted into each image's original
size, IMAGE_INFO[:, 3:5]; keypoints, already in original pixels, by
`coco.keypoints_to_coco`) and the proposals in original pixels.
`evaluate` writes ``bbox_results.json`` / ``segm_results.json`` /
``keypoints_results.json``, runs pycocotools (keypoints against a
person_keypoints json) and Detectron's proposal recall, and writes
``metrics.json`` and TensorBoard scalars into ``output_dir``; a model with
proposals also gets them written as ``proposals.npz``
(`tfdet.data.proposal_files`: what `data_prep.add_proposals` reads into shards
for the models that train from precomputed proposals). Proposal AR follows
Detectron's own path: its test_net re-reads the proposal file through the
roidb before scoring it (boxes clipped to the image, duplicates removed, boxes
with a side of 2 pixels or less dropped: `decoder.decode_proposals`), so
"proposals/AR@100" and "proposals/AR@1000" are computed on those. Nothing is
written before the check that the annotations hold every evaluated image
(`check_image_ids`; the command line checks the shards' ids,
`shard_image_ids`, before the model runs).

What is evaluated follows the keys of the detector's outputs, whatever the
family: boxes (`outputs.DETECTION_BOXES`), masks, keypoints, proposals
(`outputs.PROPOSALS`: an R-CNN's, from its RPN or its precomputed proposals;
RetinaNet has none).
"""

import json
import os

import numpy as np
import tensorflow as tf
from absl import logging
from tensorflow.core.framework import summary_pb2

from tfdet.data import decoder, keys, proposal_files, schema, shard_files
from tfdet.evaluation import coco
from tfdet.evaluation import proposals_recall as recall
from tfdet.modeling.detectors import outputs as out
from tfdet.ops import masks as mask_ops

METRICS_FILE = "metrics.json"
PROPOSALS_FILE = "proposals.npz"
KEYPOINT_RESULTS_FILE = "keypoints_results.json"
_SCALAR_METADATA = summary_pb2.SummaryMetadata(
    plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"))


def load_label_map(path):
  """label_map.json (data_prep's build_label_map) -> ({class: category_id}, {class: name})."""
  with open(path) as f:
    classes = json.load(f)["classes"]
  return ({int(k): int(v["category_id"]) for k, v in classes.items()},
          {int(k): v["name"] for k, v in classes.items()})


def annotation_image_ids(annotations_file):
  """The image ids of a COCO json (its "images" list).

  Raises:
    ValueError: naming the file, when it is not json or has no "images" list.
  """
  with open(annotations_file) as f:
    try:
      data = json.load(f)
    except json.JSONDecodeError as e:
      raise ValueError(f"{annotations_file} is not valid json: {e}") from e
  if not isinstance(data, dict) or not isinstance(data.get("images"), list):
    raise ValueError(f"{annotations_file} is not a COCO annotations json (no 'images' list)")
  return [int(image["id"]) for image in data["images"]]


def shard_image_ids(file_pattern):
  """The image ids (`schema.IMAGE_ID`) of every record of the shards, in file order.

  One pass over the records that parses only the id (no image is decoded).
  """
  spec = {schema.IMAGE_ID: tf.io.FixedLenFeature([], tf.int64)}
  ds = tf.data.TFRecordDataset(shard_files.list_files(file_pattern))
  ds = ds.batch(1024).map(lambda s: tf.io.parse_example(s, spec)[schema.IMAGE_ID])
  return [int(i) for batch in ds for i in batch.numpy()]


def check_image_ids(image_ids, known_ids, *, annotations_file, source, show=10):
  """Raises ValueError unless `image_ids` is non-empty and every id is one of `known_ids`.

  Args:
    image_ids: the ids of the images being evaluated.
    known_ids: the image ids of `annotations_file`.
    annotations_file: named in the message.
    source: what `image_ids` come from (e.g. the shards' pattern), named in the message.
    show: how many missing ids the message lists (the smallest).
  """
  if not len(image_ids):
    raise ValueError(f"{source} has no images to evaluate")
  missing = sorted(set(image_ids) - {int(i) for i in known_ids})
  if missing:
    listed = ", ".join(str(i) for i in missing[:show])
    more = f" and {len(missing) - show} more" if len(missing) > show else ""
    raise ValueError(
        f"{annotations_file} has no image with id {listed}{more}: {len(missing)} of the "
        f"{len(set(image_ids))} images of {source} are missing from it (the annotations json "
        "and the images do not match)")


# What a detector reads of an eval batch: the image, and the precomputed proposals of
# the shards that have them (models that read them: Detectron's two-stage recipe).
MODEL_INPUTS = (keys.IMAGES, keys.IMAGE_INFO, keys.PROPOSALS, keys.PROPOSAL_SCORES,
                keys.PROPOSALS_VALID)


def run_model(model, dataset, *, class_to_category, convention, mask_threshold=0.5,
              keypoint_confidence="bbox"):
  """Runs a detector over an eval data set.

  Args:
    model: a built detector.
    dataset: batches of `tfdet.data.keys` (eval mode).
    class_to_category: contiguous class id -> data set category id.
    convention: the model's box convention.
    mask_threshold: mask binarization threshold (0.5).
    keypoint_confidence: how keypoint instances are scored
      (`coco.KEYPOINT_CONFIDENCES`; "bbox" as Detectron's 12_2017 configs).

  Returns:
    `new_results()` filled by `collect_batch`: "proposals" {image_id: [P, 4]
    original pixels, score order} (empty for a model without proposals),
    "image_ids" (list) and, only for the outputs the model has, "bbox",
    "segm" and "keypoints" (lists of COCO results).
  """
  predict = tf.function(lambda batch: model(batch, training=False), reduce_retracing=True)
  results = new_results()
  for batch in dataset:
    outputs = predict({k: batch[k] for k in MODEL_INPUTS if k in batch})
    collect_batch(results, outputs, batch[keys.IMAGE_ID], batch[keys.IMAGE_INFO],
                  class_to_category=class_to_category, convention=convention,
                  mask_threshold=mask_threshold, keypoint_confidence=keypoint_confidence)
  return results


def new_results():
  """The empty results `collect_batch` fills: what was seen adds its keys."""
  return {"proposals": {}, "proposal_scores": {}, "image_sizes": {}, "image_ids": []}


_COLLECTED = (out.PROPOSALS, out.PROPOSAL_SCORES, out.NUM_PROPOSALS, out.DETECTION_BOXES, out.DETECTION_SCORES,
              out.DETECTION_CLASSES, out.NUM_DETECTIONS, out.DETECTION_MASKS,
              out.DETECTION_KEYPOINTS)


def collect_batch(results, outputs, image_ids, image_info, *, class_to_category, convention,
                  mask_threshold=0.5, keypoint_confidence="bbox"):
  """Adds one batch of detector outputs to `run_model`'s results (in place).

  The conversion `run_model` applies to each batch, for loops that produce
  detector outputs their own way (test-time augmentation, oracles in tests).

  Args:
    results: the dict being filled (`new_results`): "proposals" and
      "image_ids", and "bbox", "segm", "keypoints" from the first batch whose
      outputs have DETECTION_BOXES, DETECTION_MASKS, DETECTION_KEYPOINTS.
    outputs: the detector's output dict (`tfdet.modeling.detectors.outputs`;
      tensors or arrays): proposals (PROPOSALS, NUM_PROPOSALS), detections
      (DETECTION_BOXES, ..., NUM_DETECTIONS) or both.
    image_ids: [B] data set image ids; -1 rows (padding images) are skipped.
    image_info: [B, 5] (`keys.IMAGE_INFO`).
    class_to_category, convention, mask_threshold, keypoint_confidence: as
      `run_model`.
  """
  outputs = {k: np.asarray(outputs[k]) for k in _COLLECTED if k in outputs}
  ids = np.asarray(image_ids)
  info = np.asarray(image_info)
  for key, kind in ((out.DETECTION_BOXES, "bbox"), (out.DETECTION_MASKS, "segm"),
                    (out.DETECTION_KEYPOINTS, "keypoints")):
    if key in outputs:
      results.setdefault(kind, [])
  for i, image_id in enumerate(ids):
    if image_id < 0:
      continue
    results["image_ids"].append(int(image_id))
    if out.PROPOSALS in outputs:
      n_prop = int(outputs[out.NUM_PROPOSALS][i])
      results["proposals"][int(image_id)] = outputs[out.PROPOSALS][i, :n_prop] / info[i, 2]
      scores = outputs.get(out.PROPOSAL_SCORES, np.zeros(outputs[out.PROPOSALS].shape[:2]))
      results["proposal_scores"][int(image_id)] = scores[i, :n_prop]
      results["image_sizes"][int(image_id)] = (int(info[i, 3]), int(info[i, 4]))
    if out.DETECTION_BOXES not in outputs:
      continue
    n = int(outputs[out.NUM_DETECTIONS][i])
    boxes = outputs[out.DETECTION_BOXES][i, :n]
    scores = outputs[out.DETECTION_SCORES][i, :n]
    classes = outputs[out.DETECTION_CLASSES][i, :n]
    pasted = None
    if out.DETECTION_MASKS in outputs:
      pasted = mask_ops.paste_masks(
          outputs[out.DETECTION_MASKS][i:i + 1, :n], boxes[None], int(info[i, 3]),
          int(info[i, 4]), threshold=mask_threshold, convention=convention)[0].numpy()
    dets = coco.detections_to_coco(
        image_id, boxes, scores, classes, n, class_to_category=class_to_category,
        convention=convention, masks=pasted)
    results["bbox"] += [{k: v for k, v in d.items() if k != "segmentation"} for d in dets]
    if pasted is not None:
      results["segm"] += dets
    if out.DETECTION_KEYPOINTS in outputs:
      results["keypoints"] += coco.keypoints_to_coco(
          image_id, outputs[out.DETECTION_KEYPOINTS][i, :n], scores, classes, n,
          class_to_category=class_to_category, confidence=keypoint_confidence)


def evaluate(model, dataset, *, annotations_file, label_map_file, output_dir, convention,
             step=None, proposal_limits=(100, 1000), run_fn=None,
             keypoint_annotations_file=None, keypoint_confidence=None):
  """Evaluates a detector and writes results, metrics.json and TensorBoard scalars.

  Boxes, masks and keypoints are evaluated when the collected results have
  them (`collect_batch`: the model's outputs had them), proposal recall when
  proposals were collected. Keypoint results go to
  ``keypoints_results.json`` and pycocotools' "keypoints" evaluation runs
  against `keypoint_annotations_file`, or against `annotations_file` when
  that defines keypoints itself (Detectron evaluates keypoint models on the
  person_keypoints json, boxes included). Without keypoint ground truth the
  results are written and the AP is skipped with a warning.

  Everything is checked before anything is written to `output_dir`: the
  annotation files load, every evaluated image id is one of their images
  (`check_image_ids`), and keypoint ground truth matches keypoint results.

  Args:
    model: a built detector.
    dataset: eval batches (`build_dataset(mode="eval")`).
    annotations_file: the COCO ground-truth json of the same images.
    label_map_file: label_map.json beside the shards.
    output_dir: where results, metrics.json and the event files go
      (``model_dir/eval``).
    convention: the model's box convention.
    step: global step of the checkpoint (TensorBoard x axis; None: 0).
    proposal_limits: proposal counts of the AR metrics.
    run_fn: None (`run_model`) or a function with `run_model`'s signature
      and result that produces the detections (e.g. test-time augmentation).
    keypoint_annotations_file: None, or a COCO json with keypoint annotations
      of the same images (e.g. ``person_keypoints_val2017.json``); giving it
      for a model without keypoint outputs is an error.
    keypoint_confidence: None (the run function's default: "bbox", as
      Detectron) or one of `coco.KEYPOINT_CONFIDENCES`, passed to the run
      function as ``keypoint_confidence``.

  Returns:
    dict of metrics: "bbox/AP", ..., "segm/AP", ... (`coco.STAT_NAMES`),
    "keypoints/AP", ... (`coco.KEYPOINT_STAT_NAMES`, keypoint models) and
    "proposals/AR@100", ... (Detectron's proposal AR).

  Raises:
    ValueError: the data set has images the annotations lack, or yielded no
      image; keypoint ground truth without keypoint results or without
      keypoints. Nothing is written then.
  """
  class_to_category, _ = load_label_map(label_map_file)
  gt = coco.load_ground_truth(annotations_file)  # before the run: a bad file fails fast
  kp_gt = None
  if keypoint_annotations_file is not None:
    kp_gt = coco.load_ground_truth(keypoint_annotations_file)
  options = {} if keypoint_confidence is None else {"keypoint_confidence": keypoint_confidence}
  collected = (run_fn or run_model)(model, dataset, class_to_category=class_to_category,
                                    convention=convention, **options)
  image_ids = collected["image_ids"]
  source = "the evaluated data set"
  check_image_ids(image_ids, gt.getImgIds(), annotations_file=annotations_file, source=source)
  if kp_gt is not None:
    check_image_ids(image_ids, kp_gt.getImgIds(), annotations_file=keypoint_annotations_file,
                    source=source)
  kp_gt = _keypoint_ground_truth(collected, gt, kp_gt, keypoint_annotations_file)
  os.makedirs(output_dir, exist_ok=True)
  metrics = {}
  for iou_type in ("bbox", "segm"):
    if iou_type not in collected:
      continue
    with open(os.path.join(output_dir, f"{iou_type}_results.json"), "w") as f:
      json.dump(collected[iou_type], f)
    stats, _ = coco.evaluate(gt, collected[iou_type], iou_type, image_ids=image_ids)
    metrics.update({f"{iou_type}/{k}": v for k, v in stats.items()})
  metrics.update(_keypoint_metrics(collected, kp_gt, output_dir))
  if collected["proposals"]:
    metrics.update(_proposal_file_and_recall(collected, gt, image_ids, output_dir,
                                             limits=proposal_limits, convention=convention))
  metrics = {k: float(v) for k, v in metrics.items()}
  record = dict(metrics, step=int(step or 0), num_images=len(image_ids))
  with open(os.path.join(output_dir, METRICS_FILE), "w") as f:
    json.dump(record, f, indent=1, sort_keys=True)
  writer = tf.summary.create_file_writer(output_dir)
  with writer.as_default():
    for name, value in metrics.items():
      # tf.summary.scalar needs the tensorboard package; the scalars plugin's
      # metadata on a plain summary.write is the same event without it.
      tf.summary.write(f"eval/{name}", tf.constant(value, tf.float32), step=int(step or 0),
                       metadata=_SCALAR_METADATA)
  writer.flush()
  return metrics


def _proposal_file_and_recall(collected, gt, image_ids, output_dir, *, limits, convention):
  """Writes PROPOSALS_FILE and returns Detectron's proposal AR of it (module docstring)."""
  ids = sorted(set(image_ids))
  file_boxes = [recall.to_file_boxes(collected["proposals"][i], convention) for i in ids]
  scores = [collected["proposal_scores"].get(i, np.zeros(len(b))) for i, b in zip(
      ids, file_boxes, strict=True)]
  proposal_files.save_proposals_npz(os.path.join(output_dir, PROPOSALS_FILE), file_boxes,
                                    scores, ids)
  images = []
  for image_id, boxes, score in zip(ids, file_boxes, scores, strict=True):
    gt_boxes, areas = recall.ground_truth_from_coco(gt, image_id, convention=convention)
    height, width = collected["image_sizes"][image_id]
    read_back, _ = decoder.decode_proposals(
        boxes.reshape(-1), score, height, width, convention=convention,
        max_proposals=len(boxes))
    images.append({"proposals": read_back.numpy(), "gt_boxes": gt_boxes, "gt_areas": areas})
  ar = recall.proposal_metrics(images, limits=limits, convention=convention)
  return {f"proposals/{k}": v for k, v in ar.items()}


def _keypoint_ground_truth(collected, gt, kp_gt, keypoint_annotations_file):
  """The COCO object keypoint AP runs against, or None when it is skipped (see `evaluate`).

  Raises:
    ValueError: `keypoint_annotations_file` given but no keypoints were
      collected, or it defines no keypoints.
  """
  if "keypoints" not in collected:
    if keypoint_annotations_file is not None:
      raise ValueError("keypoint_annotations_file given, but the results have no keypoints "
                       f"(the model outputs no {out.DETECTION_KEYPOINTS}, or run_fn does not "
                       "collect them)")
    return None
  if kp_gt is None:
    kp_gt = gt
  if not coco.has_keypoints(kp_gt):
    if keypoint_annotations_file is not None:
      raise ValueError(f"{keypoint_annotations_file} defines no keypoints (no category with "
                       "a 'keypoints' list)")
    logging.warning("the model outputs keypoints but the annotations define none: keypoint AP "
                    "skipped (pass keypoint_annotations_file, e.g. person_keypoints_*.json)")
    return None
  return kp_gt


def _keypoint_metrics(collected, kp_gt, output_dir):
  """Writes keypoints_results.json (when collected) and returns {"keypoints/AP": ...}.

  `kp_gt`: `_keypoint_ground_truth`'s (None: no keypoint AP).
  """
  if "keypoints" not in collected:
    return {}
  with open(os.path.join(output_dir, KEYPOINT_RESULTS_FILE), "w") as f:
    json.dump(collected["keypoints"], f)
  if kp_gt is None:
    return {}
  stats, _ = coco.evaluate(kp_gt, collected["keypoints"], "keypoints",
                           image_ids=collected["image_ids"])
  return {f"keypoints/{k}": v for k, v in stats.items()}
