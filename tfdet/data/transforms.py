"""Per-image transforms of a decoded example: flip, resize, normalize, pad.

Pure TF functions on one image's dict (the layout of `tfdet.data.decoder`:
``decoder.IMAGE`` [H, W, 3] plus per-instance ``keys.GT_*`` tensors with a
leading instance dimension N). Nothing branches in Python on tensor values,
so they run inside `tf.data` maps and graphs.

Order, as Detectron: the flip happens in **original** pixels (Detectron's
roidb stores flipped copies of the original annotations, x -> W - 1 - x),
then image and geometry are scaled by one factor ``im_scale``
(prep_im_for_blob; Detectron multiplies every box coordinate by it, also the
inclusive x2), then normalized and zero-padded at the bottom/right.
"""

import tensorflow as tf

from tfdet.data import decoder, keys, schema
from tfdet.ops import boxes as box_ops

# Detectron's PIXEL_MEANS, in BGR order.
DETECTRON_PIXEL_MEANS = (102.9801, 115.9465, 122.7717)


def round_up(value, divisor):
  """Smallest multiple of `divisor` >= `value` (Python ints)."""
  return -(-int(value) // int(divisor)) * int(divisor)


def canvas_shapes(*, scales, max_size, size_divisibility, aspect_grouping=True):
  """Static (height, width) canvases per aspect group.

  Args:
    scales: target shorter sides; the canvas holds the largest.
    max_size: cap on the longer side.
    size_divisibility: canvas sides are multiples of it (32 FPN, 128 RetinaNet, 1 C4).
    aspect_grouping: False gives one square canvas for every image.

  Returns:
    (landscape (h, w), portrait (h, w)) Python int pairs; equal when not grouping.
  """
  long_side = round_up(max_size, size_divisibility)
  if not aspect_grouping:
    return (long_side, long_side), (long_side, long_side)
  short_side = round_up(min(max(scales), max_size), size_divisibility)
  return (short_side, long_side), (long_side, short_side)


def compute_scale(height, width, *, scale, max_size):
  """Detectron's prep_im_for_blob scale: shorter side to `scale`, longer at most `max_size`.

  im_scale = scale / min(h, w), replaced by max_size / max(h, w) when
  round(im_scale * max(h, w)) > max_size. Computed in float64 as numpy does.

  Args:
    height, width: [] int or float, the original size.
    scale: [] int or float, the target shorter side.
    max_size: Python number.

  Returns:
    [] float32 im_scale.
  """
  h = tf.cast(height, tf.float64)
  w = tf.cast(width, tf.float64)
  size_min, size_max = tf.minimum(h, w), tf.maximum(h, w)
  s = tf.cast(scale, tf.float64) / size_min
  s = tf.where(tf.round(s * size_max) > max_size, tf.cast(max_size, tf.float64) / size_max, s)
  return tf.cast(s, tf.float32)


def resized_size(height, width, im_scale):
  """[2] int32 (round(h * s), round(w * s)), the size OpenCV's resize gives."""
  hw = tf.cast(tf.stack([height, width]), tf.float64) * tf.cast(im_scale, tf.float64)
  return tf.cast(tf.round(hw), tf.int32)


def flip_polygons(polygons, polygon_ids, image_width, *, convention):
  """Mirrors polygon vertices: x -> W - x ("modern") or W - 1 - x (Detectron's flip_segms).

  Args:
    polygons: [..., V, 2] float (x, y).
    polygon_ids: [..., V] int, -1 for padding vertices (left at 0).
    image_width: [] float.
    convention: "detectron" or "modern".
  """
  right = tf.cast(image_width, polygons.dtype) - box_ops.box_offset(convention)
  x = tf.where(polygon_ids >= 0, right - polygons[..., 0], 0.0)
  return tf.stack([x, polygons[..., 1]], axis=-1)


def flip_keypoints(keypoints, image_width, *, convention):
  """Detectron's flip_keypoints: swap left/right, mirror x, keep x = 0 where visibility is 0.

  Args:
    keypoints: [..., 17, 3] float (x, y, visibility), COCO order.
    image_width: [] float.
    convention: x -> W - 1 - x ("detectron") or W - x ("modern").
  """
  kps = tf.gather(keypoints, list(schema.KEYPOINT_FLIP_PERMUTATION), axis=-2)
  right = tf.cast(image_width, kps.dtype) - box_ops.box_offset(convention)
  x = tf.where(kps[..., 2] > 0.0, right - kps[..., 0], 0.0)
  return tf.stack([x, kps[..., 1], kps[..., 2]], axis=-1)


def flip_example(example, *, convention):
  """Flips the image (IMAGE [H, W, 3]) and all its geometry left-right, in its own pixels."""
  out = dict(example)
  image = example[decoder.IMAGE]
  width = tf.cast(tf.shape(image)[1], tf.float32)
  out[decoder.IMAGE] = tf.reverse(image, axis=[1])
  out[keys.GT_BOXES] = box_ops.flip_horizontal(example[keys.GT_BOXES], width,
                                               convention=convention)
  out[keys.GT_POLYGONS] = flip_polygons(example[keys.GT_POLYGONS],
                                        example[keys.GT_POLYGON_IDS], width,
                                        convention=convention)
  out[keys.GT_KEYPOINTS] = flip_keypoints(example[keys.GT_KEYPOINTS], width,
                                          convention=convention)
  if keys.PROPOSALS in example:
    out[keys.PROPOSALS] = box_ops.flip_horizontal(example[keys.PROPOSALS], width,
                                                  convention=convention)
  return out


def random_flip(example, *, probability, seed, convention):
  """Applies `flip_example` with the given probability.

  Args:
    example: per-image dict.
    probability: Python float in [0, 1].
    seed: [2] int stateless seed.
    convention: "detectron" or "modern".
  """
  do_flip = tf.random.stateless_uniform([], seed=seed) < probability
  return tf.cond(do_flip, lambda: flip_example(example, convention=convention),
                 lambda: dict(example))


def choose_scale(scales, seed):
  """[] float32: one of `scales` (Python list), uniformly, from a [2] stateless seed."""
  index = tf.random.stateless_uniform([], seed=seed, minval=0, maxval=len(scales),
                                      dtype=tf.int32)
  return tf.gather(tf.constant(scales, tf.float32), index)


def resize_example(example, *, scale, max_size):
  """Resizes the image (bilinear) and scales the geometry by im_scale.

  Args:
    example: per-image dict with IMAGE [H, W, 3] (any dtype).
    scale: [] target shorter side.
    max_size: Python number, cap on the longer side.

  Returns:
    (example with IMAGE [round(H * s), round(W * s), 3] float32 and the
    geometry times s, im_scale [] float32).
  """
  image = example[decoder.IMAGE]
  height, width = tf.shape(image)[0], tf.shape(image)[1]
  im_scale = compute_scale(height, width, scale=scale, max_size=max_size)
  out = dict(example)
  out[decoder.IMAGE] = tf.image.resize(tf.cast(image, tf.float32),
                                       resized_size(height, width, im_scale),
                                       method="bilinear")
  out[keys.GT_BOXES] = example[keys.GT_BOXES] * im_scale
  out[keys.GT_POLYGONS] = example[keys.GT_POLYGONS] * im_scale
  kps = example[keys.GT_KEYPOINTS]
  out[keys.GT_KEYPOINTS] = tf.concat([kps[..., :2] * im_scale, kps[..., 2:]], axis=-1)
  if keys.PROPOSALS in example:
    out[keys.PROPOSALS] = example[keys.PROPOSALS] * im_scale
  return out, im_scale


def normalize_image(image, *, channel_order="bgr", pixel_means=DETECTRON_PIXEL_MEANS,
                    pixel_stds=(1.0, 1.0, 1.0)):
  """(image - means) / stds in the requested channel order.

  Args:
    image: [H, W, 3] RGB (as decoded), any real dtype.
    channel_order: "bgr" (Detectron, OpenCV) or "rgb".
    pixel_means, pixel_stds: 3 values in `channel_order`.

  Returns:
    [H, W, 3] float32.
  """
  if channel_order not in ("bgr", "rgb"):
    raise ValueError(f"channel_order must be 'bgr' or 'rgb', got {channel_order!r}")
  image = tf.cast(image, tf.float32)
  if channel_order == "bgr":
    image = tf.reverse(image, axis=[-1])
  return (image - tf.constant(pixel_means, tf.float32)) / tf.constant(pixel_stds, tf.float32)


def pad_image(image, height, width):
  """Zero-pads [h, w, C] at the bottom/right to [height, width, C] (height >= h, width >= w)."""
  return tf.image.pad_to_bounding_box(image, 0, 0, height, width)


def pad_rows(x, rows, value=0):
  """Truncates or pads the leading dimension of `x` to `rows` (static) with `value`."""
  x = x[:rows]
  paddings = [[0, rows - tf.shape(x)[0]]] + [[0, 0]] * (x.shape.rank - 1)
  x = tf.pad(x, paddings, constant_values=tf.cast(value, x.dtype))
  return tf.ensure_shape(x, [rows] + x.shape[1:].as_list())


def pad_instances(example, *, max_instances, convention):
  """Drops zero-area ground truth, pads/truncates it to M rows and adds the masks.

  Instances whose box has x2 <= x1 or y2 <= y1 are dropped; the first
  `max_instances` of the rest are kept (crowd included, flagged).

  Args:
    example: per-image dict with GT_* [N, ...].
    max_instances: M.
    convention: "detectron" or "modern" (validated; both use x2 > x1).

  Returns:
    dict with GT_BOXES [M, 4], GT_CLASSES [M] (0 padding), GT_IS_CROWD [M],
    GT_POLYGONS [M, V, 2], GT_POLYGON_IDS [M, V] (-1 padding),
    GT_KEYPOINTS [M, 17, 3], GT_VALID [M] bool and NUM_GT [] int32.
  """
  box_ops.box_offset(convention)
  boxes = example[keys.GT_BOXES]
  keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
  out = dict(example)
  pad_values = {keys.GT_POLYGON_IDS: -1}
  for key in (keys.GT_BOXES, keys.GT_CLASSES, keys.GT_IS_CROWD, keys.GT_POLYGONS,
              keys.GT_POLYGON_IDS, keys.GT_KEYPOINTS):
    out[key] = pad_rows(tf.boolean_mask(example[key], keep), max_instances,
                        pad_values.get(key, 0))
  num = tf.minimum(tf.reduce_sum(tf.cast(keep, tf.int32)), max_instances)
  out[keys.NUM_GT] = num
  out[keys.GT_VALID] = tf.range(max_instances) < num
  return out


def pad_proposals(example, *, max_proposals):
  """Pads PROPOSALS [K, 4] / PROPOSAL_SCORES [K] to P rows and adds PROPOSALS_VALID [P]."""
  out = dict(example)
  k = tf.minimum(tf.shape(example[keys.PROPOSALS])[0], max_proposals)
  out[keys.PROPOSALS] = pad_rows(example[keys.PROPOSALS], max_proposals)
  out[keys.PROPOSAL_SCORES] = pad_rows(example[keys.PROPOSAL_SCORES], max_proposals)
  out[keys.PROPOSALS_VALID] = tf.range(max_proposals) < k
  return out
