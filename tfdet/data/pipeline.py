"""The tf.data input pipeline: TFRecord shards -> batches of `tfdet.data.keys` dicts.

Training (Detectron's roidb + minibatch loader, as a stream):

  files (sorted, sharded per input pipeline) -> shuffled each epoch -> repeat
  -> parallel interleave of TFRecord readers -> shuffle buffer
  -> parse annotations -> drop images Detectron's filter_for_training drops
  -> decode, random flip (in original pixels), random scale from `scales`,
     resize, normalize, pad to the aspect group's static canvas, pad gt
  -> aspect grouping (landscape and portrait images never share a batch)
  -> prefetch.

Eval: files in order, every image kept, no augmentation, one scale; batches
are still grouped by aspect (deterministically) so they fit the same two
canvases as training; the final partial batch of each group is padded to the
batch size with empty images whose IMAGE_ID is -1 (or left partial with
``pad_final_batch=False``). IMAGE_ID and IMAGE_INFO map predictions back:
``original = resized / IMAGE_INFO[:, 2]``.

Input checks, before tf.data reads anything (`list_files`): every matched
file must be a TFRecord shard (its first record header is checked, so a
json, an empty file or a temporary file is named instead of failing later
as "corrupted record at 0"), and where the converter's manifest
(``manifest-<prefix>.json``, `manifest_file_name`) sits beside the shards,
their conversion must be finished and the shards unchanged since. Training
also refuses an input that can never yield a batch
(`check_yields_training_images`) instead of waiting forever.

Differences from Detectron, all by design:

* Detectron pads each minibatch to its own largest image; here every batch is
  padded to its aspect group's static canvas (more zero padding at the
  bottom/right, same image content and IMAGE_INFO).
* Detectron doubles the roidb with flipped copies; a flip probability of 0.5
  per visit is the streaming equivalent.
* Detectron's epoch is a permutation of the whole roidb; here it is a file
  shuffle plus a `shuffle_buffer`-sized record shuffle.
"""

from collections.abc import Sequence

import tensorflow as tf

from tfdet.data import decoder, keys, transforms
from tfdet.data.shard_files import list_files

MODES = ("train", "eval")
_PAD_IDS = {keys.IMAGE_ID: -1, keys.GT_POLYGON_IDS: -1}


@tf.autograph.experimental.do_not_convert
def _orientation_key(example):
  """0 for landscape (w >= h), 1 for portrait, from IMAGE_INFO's original size."""
  info = example[keys.IMAGE_INFO]
  return tf.cast(info[4] < info[3], tf.int64)


@tf.autograph.experimental.do_not_convert
def _pad_batch(batch, batch_size):
  """Pads the leading (batch) dimension of every tensor to `batch_size`."""
  out = {}
  for key, value in batch.items():
    padded = transforms.pad_rows(value, batch_size, _PAD_IDS.get(key, 0))
    out[key] = padded
  return out


def build_dataset(file_pattern, *, mode, batch_size, input_context=None,
                  convention="detectron", scales=(800,), max_size=1333, size_divisibility=32,
                  max_instances=100, max_polygon_vertices=256, flip_probability=0.5,
                  keypoints_only=False, filter_empty=True, aspect_grouping=True,
                  shuffle_buffer=1024, deterministic=False, seed=None,
                  num_parallel_calls=tf.data.AUTOTUNE, cycle_length=16,
                  with_proposals=False, max_proposals=2000, channel_order="bgr",
                  pixel_means=transforms.DETECTRON_PIXEL_MEANS, pixel_stds=(1.0, 1.0, 1.0),
                  pad_final_batch=True, prefetch=tf.data.AUTOTUNE):
  """Builds the training or evaluation `tf.data.Dataset` of batch dicts.

  Args:
    file_pattern: glob (or sequence of globs) of TFRecord shards.
    mode: "train" (shuffle, augment, repeat forever) or "eval" (one ordered pass).
    batch_size: images per batch **per replica** (per input pipeline). Under a
      `tf.distribute` strategy pass
      `input_context.get_per_replica_batch_size(global_batch_size)`.
    input_context: optional `tf.distribute.InputContext`. With
      num_input_pipelines > 1, pipeline i reads files[i::n] (when there are
      at least n files; otherwise every pipeline reads all files and keeps
      records i, i + n, ...), so pipelines see disjoint data.
    convention: box convention of every output box, "detectron" or "modern".
    scales: shorter-side targets. Training picks one per image uniformly
      (Detectron's TRAIN.SCALES, e.g. 640..800 step 32 for Keypoint R-CNN);
      eval needs exactly one (TEST.SCALE).
    max_size: cap on the longer side (TRAIN/TEST.MAX_SIZE).
    size_divisibility: canvas sides are multiples of it (32 FPN, 128
      RetinaNet, 1 C4).
    max_instances: M, ground-truth rows per image (extra instances dropped).
    max_polygon_vertices: V, polygon vertices per instance (see keys.GT_POLYGONS).
    flip_probability: horizontal flip probability (training only).
    keypoints_only: training keeps only images with an instance with visible
      keypoints (Detectron's has_visible_keypoints, for Keypoint R-CNN).
    filter_empty: training drops images without a non-crowd valid instance
      (with proposals: without one and without any proposal), as
      Detectron's filter_for_training.
    aspect_grouping: batch landscape and portrait images separately, each on
      its canvas (`transforms.canvas_shapes`); False: one square canvas.
    shuffle_buffer: records in the shuffle buffer (training).
    deterministic: same seed -> identical batches (ordered parallel maps);
      a None seed then means seed 0.
    seed: int seed of every random choice (file order, shuffle, flips, scales).
    num_parallel_calls: parallelism of the parse/decode maps.
    cycle_length: files read concurrently (training).
    with_proposals: also decode, filter and pad precomputed proposals.
    max_proposals: P, proposals kept per image (TRAIN/TEST.PROPOSAL_LIMIT).
    channel_order, pixel_means, pixel_stds: image normalization
      (`transforms.normalize_image`); the default is Detectron's.
    pad_final_batch: eval pads each final partial batch to `batch_size`
      (IMAGE_ID -1, NUM_GT 0); False leaves it partial.
    prefetch: batches to prefetch.

  Returns:
    `tf.data.Dataset` of dicts keyed by `tfdet.data.keys` (shapes there). With
    aspect grouping each batch's IMAGES is [B, Hl, Wl, 3] or [B, Wl, Hl, 3]
    (static per batch; the dataset's element_spec says [B, None, None, 3]);
    without it [B, S, S, 3] statically.

  Raises:
    ValueError: bad arguments; matched files that are not shards or belong
      to an unfinished conversion (`list_files`); in training, records of
      which none passes the filters, or none at all (naming the pattern and
      why; `check_yields_training_images`).
  """
  if mode not in MODES:
    raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
  training = mode == "train"
  scales = [float(s) for s in scales]
  if not training and len(scales) != 1:
    raise ValueError(f"eval uses one scale, got {scales}")
  if deterministic and seed is None:
    seed = 0
  landscape, portrait = transforms.canvas_shapes(
      scales=scales, max_size=max_size, size_divisibility=size_divisibility,
      aspect_grouping=aspect_grouping)
  num_pipelines = input_context.num_input_pipelines if input_context else 1
  pipeline_id = input_context.input_pipeline_id if input_context else 0

  files = list_files(file_pattern)
  shard_records = num_pipelines > 1 and len(files) < num_pipelines
  if num_pipelines > 1 and not shard_records:
    files = files[pipeline_id::num_pipelines]

  # The mapped functions have no Python control flow on tensors: skip autograph (faster tracing).
  @tf.autograph.experimental.do_not_convert
  def parse(serialized):
    return decoder.parse_annotations(
        serialized, convention=convention, max_polygon_vertices=max_polygon_vertices,
        with_proposals=with_proposals, max_proposals=max_proposals)

  @tf.autograph.experimental.do_not_convert
  def usable(example):
    """[] bool: the image has a foreground RoI (a valid non-crowd instance, or a proposal)."""
    has_rois = decoder.has_non_crowd_gt(example)
    if with_proposals:
      has_rois |= tf.shape(example[keys.PROPOSALS])[0] > 0
    return has_rois

  @tf.autograph.experimental.do_not_convert
  def keep(example):
    ok = tf.constant(True)
    if filter_empty:
      ok &= usable(example)
    if keypoints_only:
      ok &= decoder.has_visible_keypoints(example)
    return ok

  if training:
    records = tf.data.TFRecordDataset(files)
    if shard_records:
      records = records.shard(num_pipelines, pipeline_id)
    where = f" (input pipeline {pipeline_id} of {num_pipelines})" if num_pipelines > 1 else ""
    check_yields_training_images(
        records.map(parse), keep, usable, file_pattern=f"{file_pattern!r}{where}",
        filter_empty=filter_empty, keypoints_only=keypoints_only, with_proposals=with_proposals)

  if training and not shard_records:
    ds = tf.data.Dataset.from_tensor_slices(files)
    ds = ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True).repeat()
    ds = ds.interleave(tf.data.TFRecordDataset, cycle_length=min(cycle_length, len(files)),
                       block_length=1, num_parallel_calls=tf.data.AUTOTUNE,
                       deterministic=deterministic)
  else:
    ds = tf.data.TFRecordDataset(files)
    if shard_records:
      ds = ds.shard(num_pipelines, pipeline_id)
    if training:
      ds = ds.repeat()
  if training and shuffle_buffer > 1:
    ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)

  map_deterministic = deterministic or not training
  ds = ds.map(parse, num_parallel_calls=num_parallel_calls, deterministic=map_deterministic)
  if training and (filter_empty or keypoints_only):
    ds = ds.filter(keep)

  @tf.autograph.experimental.do_not_convert
  def preprocess(example, random_value):
    seed_pair = tf.stack([random_value, tf.constant(pipeline_id, tf.int64)])
    return preprocess_example(
        example, seed=seed_pair, training=training, convention=convention, scales=scales,
        max_size=max_size, landscape_canvas=landscape, portrait_canvas=portrait,
        max_instances=max_instances, flip_probability=flip_probability,
        with_proposals=with_proposals, max_proposals=max_proposals,
        channel_order=channel_order, pixel_means=pixel_means, pixel_stds=pixel_stds)

  ds = tf.data.Dataset.zip((ds, tf.data.Dataset.random(seed=seed)))
  ds = ds.map(preprocess, num_parallel_calls=num_parallel_calls, deterministic=map_deterministic)

  if aspect_grouping:
    ds = ds.group_by_window(
        key_func=_orientation_key,
        reduce_func=tf.autograph.experimental.do_not_convert(
            lambda _, window: window.batch(batch_size, drop_remainder=training)),
        window_size=batch_size)
  else:
    ds = ds.batch(batch_size, drop_remainder=training)
  if not training and pad_final_batch:
    ds = ds.map(lambda batch: _pad_batch(batch, batch_size))
  if not aspect_grouping and (training or pad_final_batch):
    ds = ds.map(lambda batch: _ensure_image_shape(batch, batch_size, landscape))

  options = tf.data.Options()
  options.deterministic = deterministic or not training
  ds = ds.with_options(options)
  return ds.prefetch(prefetch)


def check_yields_training_images(examples, keep, usable, *, file_pattern, filter_empty,
                                 keypoints_only, with_proposals):
  """Raises if no parsed record passes the training filter (training would wait forever).

  Training repeats its records forever and filters them, so an input with no
  record that passes never yields a batch, without a word. This reads the
  records once, in order, and stops at the first that passes (normally the
  first record); only when none does it counts why. Skipped outside eager
  execution (reading a data set needs it).

  Args:
    examples: `tf.data.Dataset` of `decoder.parse_annotations` dicts, one
      bounded pass over this input pipeline's records.
    keep: the training filter, example -> [] bool.
    usable: example -> [] bool, whether the image has a foreground RoI.
    file_pattern: how to name the input in the error.
    filter_empty, keypoints_only, with_proposals: as `build_dataset`.

  Raises:
    ValueError: naming ``file_pattern`` and why nothing passes.
  """
  if not tf.executing_eagerly():
    return
  for _ in examples.filter(keep).take(1):
    return

  @tf.autograph.experimental.do_not_convert
  def flags(example):
    has_usable, has_kps = usable(example), decoder.has_visible_keypoints(example)
    return tf.cast(tf.stack([True, has_usable, has_kps, has_usable & has_kps]), tf.int64)

  total, n_usable, n_kps, n_both = examples.map(flags).reduce(
      tf.zeros([4], tf.int64), lambda acc, x: acc + x).numpy().tolist()
  roi = "a usable instance (a non-crowd box of positive size and area" + (
      ", or a proposal)" if with_proposals else ")")
  if total == 0:
    why = "its files hold no records"
  elif filter_empty and n_usable == 0:
    why = (f"none of its {total} images has {roi}; filter_empty=True drops such images, as "
           "Detectron's filter_for_training")
  elif keypoints_only and n_kps == 0:
    why = (f"none of its {total} images has an instance with visible keypoints "
           "(keypoints_only=True, for Keypoint R-CNN)")
  else:
    why = (f"none of its {total} images has both {roi} and visible keypoints ({n_usable} have the "
           f"first, {n_kps} the second; {n_both} both)")
  raise ValueError(f"{file_pattern}: training would wait forever for its first batch: {why}")


@tf.autograph.experimental.do_not_convert
def _ensure_image_shape(batch, batch_size, canvas):
  out = dict(batch)
  out[keys.IMAGES] = tf.ensure_shape(batch[keys.IMAGES], [batch_size, *canvas, 3])
  return out


def preprocess_example(example, *, seed, training, convention, scales: Sequence[float],
                       max_size, landscape_canvas, portrait_canvas, max_instances,
                       flip_probability, with_proposals, max_proposals, channel_order,
                       pixel_means, pixel_stds):
  """One parsed record (`decoder.parse_annotations`) -> one image's batch dict (no B axis).

  Args:
    example: dict of `decoder.parse_annotations` (encoded image).
    seed: [2] int64 stateless seed of the flip and scale choices.
    training: random flip and scale (else scales[0], no flip).
    landscape_canvas, portrait_canvas: (height, width) canvases; the image is
      padded to the first if its original width >= height, else the second.
    Other arguments: as `build_dataset`.

  Returns:
    dict of `keys` tensors with per-image shapes ([Hc, Wc, 3], [5], [M, 4], ...).
  """
  example = dict(example)
  example[decoder.IMAGE] = decoder.decode_image(example.pop(decoder.ENCODED_IMAGE))
  example.pop(decoder.ORIGINAL_SIZE, None)
  shape = tf.shape(example[decoder.IMAGE])
  orig_h, orig_w = shape[0], shape[1]
  if training:
    example = transforms.random_flip(
        example, probability=flip_probability, convention=convention,
        seed=tf.random.experimental.stateless_fold_in(seed, 0))
    scale = transforms.choose_scale(scales, tf.random.experimental.stateless_fold_in(seed, 1))
  else:
    scale = scales[0]
  example, im_scale = transforms.resize_example(example, scale=scale, max_size=max_size)
  resized = tf.shape(example[decoder.IMAGE])
  image = transforms.normalize_image(example[decoder.IMAGE], channel_order=channel_order,
                                     pixel_means=pixel_means, pixel_stds=pixel_stds)
  is_landscape = orig_w >= orig_h
  canvas_h = tf.where(is_landscape, landscape_canvas[0], portrait_canvas[0])
  canvas_w = tf.where(is_landscape, landscape_canvas[1], portrait_canvas[1])
  example = transforms.pad_instances(example, max_instances=max_instances,
                                     convention=convention)
  out = {
      keys.IMAGES: transforms.pad_image(image, canvas_h, canvas_w),
      keys.IMAGE_INFO: tf.stack([
          tf.cast(resized[0], tf.float32), tf.cast(resized[1], tf.float32), im_scale,
          tf.cast(orig_h, tf.float32), tf.cast(orig_w, tf.float32)]),
      keys.IMAGE_ID: example[keys.IMAGE_ID],
  }
  for key in (keys.GT_BOXES, keys.GT_CLASSES, keys.GT_IS_CROWD, keys.GT_VALID, keys.NUM_GT,
              keys.GT_POLYGONS, keys.GT_POLYGON_IDS, keys.GT_KEYPOINTS):
    out[key] = example[key]
  if with_proposals:
    example = transforms.pad_proposals(example, max_proposals=max_proposals)
    for key in (keys.PROPOSALS, keys.PROPOSAL_SCORES, keys.PROPOSALS_VALID):
      out[key] = example[key]
  return out
