r"""Converts a COCO json (instances_* or person_keypoints_*) and its images to TFRecord shards.

One `tf.train.Example` per image in the layout of `tfdet.data.schema`,
written to ``{output_dir}/{prefix}-00000-of-0000N.tfrecord``, with the
contiguous label map beside them (`schema.LABEL_MAP_FILE`). Cleaning rules
are in `data_prep.coco_annotations`; non-crowd RLE instances also get
polygons traced from their masks (`data_prep.mask_to_polygons`, lossless
unless over a vertex budget, or at ``--polygon_tolerance`` pixels), counted as ``rle_to_polygons`` in the
summary.

Shards are built in parallel (a process pool over shards, whose workers die
with the converter: `data_prep.worker_pool`), each written atomically; a
manifest, ``{output_dir}/manifest-{prefix}.json`` (named so that
``{prefix}-*`` matches shards only), records the finished ones and the
images each skipped (`data_prep.shard_writer`). Rerunning an interrupted job
finishes it; a rerun with a changed json or options redoes it all; a rerun
after image files changed (a skipped corrupt image replaced, say) redoes
the shards that hold them. The input pipeline refuses a set whose manifest
says it is unfinished.

Every image is fully decoded (unless ``verify_images=False``); a decoder
error or a libjpeg warning (damaged JPEG data, `data_prep.image_files`)
is a corrupt image: an error naming the file, or with
``--skip_bad_annotations`` a counted skip (``bad_image``).

Usage:
  python -m data_prep.coco_to_tfrecord \
    --annotations_file=annotations/instances_val2017.json \
    --image_dir=val2017 --output_dir=tfrecords/val --num_shards=8 --num_workers=2
"""

import collections
import os
import time

from absl import app, flags, logging

from data_prep import coco_annotations as anns
from data_prep import image_files, shard_writer, worker_pool
from tfdet.data import schema

SCHEMA_VERSION = 1
_LOG_EVERY = 500
_MAX_MESSAGES = 20


def image_example(image, image_dir, category_to_class, has_keypoints, stats, *, verify=True,
                  polygon_tolerance=None):
  """Builds the `tf.train.Example` of one image, counting skipped instances in ``stats``."""
  data, image_format = image_files.read_image(anns.image_path(image_dir, image), image,
                                              verify=verify)
  instances = []
  for ann in image.annotations:
    instance, reason = anns.clean_instance(ann, image, category_to_class, has_keypoints,
                                           polygon_tolerance=polygon_tolerance)
    if instance is None:
      stats["skipped"][reason] += 1
    else:
      instances.append(instance)
  stats["instances"] += len(instances)
  stats["crowd"] += sum(i.is_crowd for i in instances)
  stats["rle_to_polygons"] += sum(i.polygons_from_rle for i in instances)
  stats["images_without_instances"] += not instances
  return schema.make_example(
      encoded_image=data, image_format=image_format, image_id=image.image_id,
      filename=image.file_name, height=image.height, width=image.width,
      boxes_xywh=[i.box_xywh for i in instances], classes=[i.class_id for i in instances],
      category_ids=[i.category_id for i in instances], is_crowd=[i.is_crowd for i in instances],
      areas=[i.area for i in instances], annotation_ids=[i.annotation_id for i in instances],
      polygons=[i.polygons for i in instances], rles=[i.rle for i in instances],
      keypoints=[i.keypoints for i in instances] if has_keypoints else None)


def _new_stats():
  return {"images": 0, "instances": 0, "crowd": 0, "images_without_instances": 0,
          "rle_to_polygons": 0, "skipped": collections.Counter(), "messages": []}


def _convert_shard(task):
  """Writes one shard (in this process or a pool worker).

  Returns:
    (name, records, stats, inputs: `image_files.files_digest` of its images
    taken before reading them, skipped_images: [{image_id, file_name,
    error, sha256}] of the images skipped as bad).
  """
  (path, images, image_dir, category_to_class, has_keypoints, skip_bad, verify,
   polygon_tolerance) = task
  stats = _new_stats()
  name = os.path.basename(path)
  inputs = image_files.files_digest(image_dir, images)
  skipped_images = []

  def records():
    for n, image in enumerate(images):
      worker_pool.check_parent()
      if n and n % _LOG_EVERY == 0:
        logging.info("%s: %d/%d images", name, n, len(images))
      try:
        example = image_example(image, image_dir, category_to_class, has_keypoints, stats,
                                verify=verify, polygon_tolerance=polygon_tolerance)
      except anns.BadInputError as e:
        if not skip_bad:
          raise
        stats["skipped"][anns.SKIP_BAD_IMAGE] += 1
        stats["messages"].append(str(e))
        skipped_images.append({
            "image_id": image.image_id, "file_name": image.file_name, "error": str(e),
            "sha256": image_files.content_sha256(anns.image_path(image_dir, image))})
        continue
      stats["images"] += 1
      yield example.SerializeToString()

  count = shard_writer.write_shard_atomic(path, records(),
                                          before_commit=worker_pool.check_parent)
  stats["skipped"] = dict(stats["skipped"])
  stats["messages"] = stats["messages"][:_MAX_MESSAGES]
  return name, count, stats, inputs, skipped_images


def _split(items, num_shards):
  """Contiguous, balanced chunks (json order is kept across shards)."""
  base, extra = divmod(len(items), num_shards)
  chunks, start = [], 0
  for i in range(num_shards):
    end = start + base + (i < extra)
    chunks.append(items[start:end])
    start = end
  return chunks


def _job_fingerprint(annotations_file, image_dir, options):
  """Hash of the json's bytes, the options and the image folder's path.

  Image files are not part of it: each finished shard's manifest entry has a
  digest of its images' names, sizes and modification times and the content
  hash of the images it skipped (`_pending_shards`), so changed images redo
  their shards only.
  """
  return shard_writer.fingerprint(files=[annotations_file], options=options,
                                  extra=[os.path.abspath(image_dir)])


def _pending_shards(manifest, images, image_dir):
  """The (name, images) of the shards to convert: not finished, or finished from other inputs.

  A finished shard is converted again when an image it skipped as bad has
  changed content (it was fixed, or added when missing), or when any of its
  image files changed size or modification time (`image_files.files_digest`);
  the reason is logged.
  """
  pending = []
  for index, chunk in enumerate(_split(images, manifest.num_shards)):
    name = shard_writer.shard_name(manifest.prefix, index, manifest.num_shards)
    if manifest.is_done(name):
      skipped_now = {f: image_files.content_sha256(os.path.join(image_dir, f))
                     for f in manifest.skipped_files(name)}
      reason = manifest.check_shard(name, image_files.files_digest(image_dir, chunk),
                                    skipped_now)
      if reason is None:
        continue
      logging.info("converting %s again: %s", name, reason)
      manifest.drop(name)
    pending.append((name, chunk))
  manifest.save()
  return pending


def convert_coco(annotations_file, image_dir, output_dir, *, num_shards=1, num_workers=1,
                 skip_bad_annotations=False, prefix=None, verify_images=True,
                 polygon_tolerance=None):
  """Converts a COCO json and its images to TFRecord shards (resumable).

  Args:
    annotations_file: instances_*.json or person_keypoints_*.json.
    image_dir: folder of the images (``file_name`` is relative to it).
    output_dir: where shards, the manifest and label_map.json go.
    num_shards: number of shards.
    num_workers: processes; 1 converts in this process.
    skip_bad_annotations: skip and count bad annotations/images instead of raising.
    prefix: shard name prefix; default the json's base name.
    verify_images: fully decode every image and check its size.
    polygon_tolerance: Douglas-Peucker tolerance (pixels) of the polygons
      traced from non-crowd RLE masks; 0 keeps the exact pixel-edge outline;
      None: adaptive (`coco_annotations.clean_instance`).

  Returns:
    The summary dict: images, instances, crowd, images_without_instances,
    rle_to_polygons (non-crowd RLE instances given traced polygons), skipped (reason -> count), shards, records per shard, messages.

  Raises:
    BadInputError: on bad input unless ``skip_bad_annotations``; shards
      finished before the error stay (and are in the manifest).
  """
  if num_shards < 1 or num_workers < 1:
    raise ValueError("num_shards and num_workers must be >= 1")
  if polygon_tolerance is not None and polygon_tolerance < 0:
    raise ValueError(f"polygon_tolerance must be >= 0, got {polygon_tolerance}")
  prefix = prefix or os.path.splitext(os.path.basename(annotations_file))[0]
  start = time.time()
  dataset = anns.load_dataset(annotations_file, skip_bad_annotations=skip_bad_annotations)
  os.makedirs(output_dir, exist_ok=True)
  options = {"num_shards": num_shards, "prefix": prefix, "skip_bad": skip_bad_annotations,
             "verify_images": verify_images, "schema_version": SCHEMA_VERSION,
             "polygon_tolerance": (None if polygon_tolerance is None
                                   else float(polygon_tolerance))}
  job = _job_fingerprint(annotations_file, image_dir, options)
  removed = shard_writer.remove_leftover_tmp(output_dir, prefix)
  if removed:
    logging.info("removed leftovers of an interrupted run: %s", removed)
  shard_writer.write_json_atomic(os.path.join(output_dir, schema.LABEL_MAP_FILE),
                                 dataset.label_map)
  manifest = shard_writer.Manifest.load_or_reset(output_dir, prefix, job, num_shards)
  tasks = [(os.path.join(output_dir, name), images, image_dir, dataset.category_to_class,
            dataset.has_keypoints, skip_bad_annotations, verify_images, polygon_tolerance)
           for name, images in _pending_shards(manifest, dataset.images, image_dir)]
  logging.info("%s: %d images, %d shards (%d already done), %d workers", annotations_file,
               len(dataset.images), num_shards, num_shards - len(tasks), num_workers)

  def finished(result):
    name, count, stats, inputs, skipped_images = result
    manifest.add(name, count, stats, inputs=inputs, skipped_images=skipped_images)
    logging.info("wrote %s: %d records (%d/%d shards done, %.0f s)", name, count,
                 len(manifest.shards), num_shards, time.time() - start)

  if num_workers == 1 or len(tasks) <= 1:
    for task in tasks:
      finished(_convert_shard(task))
  else:
    with worker_pool.pool(min(num_workers, len(tasks))) as pool:
      for result in pool.imap_unordered(_convert_shard, tasks):
        finished(result)
  summary = summarize(manifest, dataset)
  log_summary(summary)
  return summary


def summarize(manifest, dataset):
  """Totals over every shard of the job (including ones finished by an earlier run)."""
  total = _new_stats()
  records = {}
  for name in sorted(manifest.shards):
    info = manifest.shards[name]
    records[name] = info["records"]
    for key in ("images", "instances", "crowd", "images_without_instances", "rle_to_polygons"):
      total[key] += info["stats"].get(key, 0)
    total["skipped"].update(info["stats"].get("skipped", {}))
    total["messages"].extend(info["stats"].get("messages", []))
  if dataset.bad_annotations:
    total["skipped"][anns.SKIP_BAD_ANNOTATION] += dataset.bad_annotations
    total["messages"] = dataset.bad_annotation_messages[:_MAX_MESSAGES] + total["messages"]
  total["skipped"] = dict(total["skipped"])
  total["shards"] = records
  return total


def log_summary(summary):
  logging.info("summary: %d images written (%d without instances), %d instances (%d crowd, "
               "%d non-crowd RLE given polygons), %d shards", summary["images"],
               summary["images_without_instances"], summary["instances"], summary["crowd"],
               summary["rle_to_polygons"], len(summary["shards"]))
  for reason, count in sorted(summary["skipped"].items()):
    logging.info("  skipped %d: %s", count, reason)
  for message in summary["messages"][:_MAX_MESSAGES]:
    logging.info("  %s", message)


FLAGS = flags.FLAGS


def _define_flags():
  """CLI flags, defined only when run as a program (importers keep a clean flag namespace)."""
  flags.DEFINE_string("annotations_file", None, "COCO json (instances_* or person_keypoints_*).")
  flags.DEFINE_string("image_dir", None, "Folder of the images.")
  flags.DEFINE_string("output_dir", None, "Where the shards go.")
  flags.DEFINE_integer("num_shards", 8, "Number of shards.")
  flags.DEFINE_integer("num_workers", 2, "Worker processes.")
  flags.DEFINE_bool("skip_bad_annotations", False,
                    "Skip and count bad annotations and images instead of stopping.")
  flags.DEFINE_string("prefix", None, "Shard name prefix (default: the json's base name).")
  flags.DEFINE_float("polygon_tolerance", None,
                     "Douglas-Peucker tolerance (pixels) of the polygons traced from non-crowd "
                     "RLE masks; 0 keeps the exact pixel-edge outline; unset: lossless "
                     "(0.49) unless an instance needs over 192 vertices, then coarser.")
  flags.mark_flags_as_required(["annotations_file", "image_dir", "output_dir"])


def main(argv):
  del argv
  try:
    convert_coco(FLAGS.annotations_file, FLAGS.image_dir, FLAGS.output_dir,
                 num_shards=FLAGS.num_shards, num_workers=FLAGS.num_workers,
                 skip_bad_annotations=FLAGS.skip_bad_annotations, prefix=FLAGS.prefix,
                 polygon_tolerance=FLAGS.polygon_tolerance)
  except anns.BadInputError as e:
    hint = "" if FLAGS.skip_bad_annotations else (
        " (if it is an annotation or an image, --skip_bad_annotations skips and counts it)")
    logging.error("bad input: %s%s", e, hint)
    raise SystemExit(1) from e


if __name__ == "__main__":
  _define_flags()
  app.run(main)
