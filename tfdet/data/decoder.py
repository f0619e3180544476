"""Decodes one serialized `tf.train.Example` (`tfdet.data.schema`) into dense tensors.

Decoding happens in two steps so that the input pipeline can drop images by
their annotations before paying for the image decode:

* `parse_annotations` turns the record into the annotation tensors (unpadded
  instance dimension ``N``), applying Detectron's ``_add_gt_annotations``
  sanitation: boxes converted to ``(x1, y1, x2, y2)`` of the chosen
  convention and clipped to the image; an instance is kept only if its
  segmentation area is positive and ``x2 > x1`` and ``y2 > y1`` (so in the
  "detectron" convention a box at most 1 pixel wide is dropped, as there);
* `decode_image` decodes the JPEG/PNG bytes to uint8 RGB.

`decode` does both. The returned dict uses the batch keys of
`tfdet.data.keys` for the per-instance tensors (without the batch and
padding dimensions) plus the decoder-only keys below.
"""

import tensorflow as tf

from tfdet.data import keys, schema
from tfdet.ops import boxes as box_ops

# Decoder-only keys of the per-image dict.
ENCODED_IMAGE = "encoded_image"  # [] string, the JPEG/PNG bytes
IMAGE = "image"  # [H, W, 3] uint8 RGB (after decode_image)
ORIGINAL_SIZE = "original_size"  # [2] int32 (height, width) from the record

# Detectron's min_proposal_size: proposals must have both sides > 2 pixels.
MIN_PROPOSAL_SIZE = 2.0


def decode_image(encoded):
  """Decodes JPEG or PNG bytes into a uint8 RGB image.

  JPEGs use the accurate integer DCT (libjpeg's default, which OpenCV and so
  Detectron use) rather than TF's fast default.

  Args:
    encoded: [] string.

  Returns:
    [H, W, 3] uint8; grayscale images are expanded to 3 channels.
  """
  image = tf.cond(
      tf.io.is_jpeg(encoded),
      lambda: tf.io.decode_jpeg(encoded, channels=3, dct_method="INTEGER_ACCURATE"),
      lambda: tf.io.decode_png(encoded, channels=3, dtype=tf.uint8))
  image.set_shape([None, None, 3])
  return image


def _xywh_to_xyxy(xywh, height, width, *, convention):
  """[N, 4] COCO xywh -> clipped [N, 4] xyxy of the convention (Detectron's xywh_to_xyxy)."""
  off = box_ops.box_offset(convention)
  xy = xywh[:, :2]
  x2y2 = xy + tf.maximum(xywh[:, 2:] - off, 0.0)
  boxes = tf.concat([xy, x2y2], axis=1)
  size = tf.cast(tf.stack([height, width]), tf.float32)
  return box_ops.clip_to_image(boxes, size, convention=convention)


def instance_polygons(polygon_xy, polygon_lengths, polygons_per_instance, num_instances, *,
                      max_vertices):
  """Regroups the schema's flat polygons into per-instance vertex lists of length V.

  Args:
    polygon_xy: [2 * NV] float, every vertex of every polygon, concatenated.
    polygon_lengths: [NP] int, floats per polygon.
    polygons_per_instance: [N] int, polygons per instance.
    num_instances: [] int32, N.
    max_vertices: V, vertices kept per instance; an instance with n > V
      vertices keeps vertex floor(j * n / V) in slot j (uniform decimation).

  Returns:
    (vertices [N, V, 2] float32 (0 for padding), polygon_ids [N, V] int32:
    the index within its instance of the polygon each vertex belongs to, -1
    for padding).
  """
  verts = tf.reshape(tf.cast(polygon_xy, tf.float32), [-1, 2])  # [NV, 2]
  num_verts = tf.shape(verts, out_type=tf.int64)[0]
  verts_per_poly = tf.cast(polygon_lengths, tf.int64) // 2  # [NP]
  polys_per_inst = tf.cast(polygons_per_instance, tf.int64)  # [N]
  n = tf.cast(num_instances, tf.int64)
  num_polys = tf.shape(verts_per_poly, out_type=tf.int64)[0]
  poly_inst = tf.repeat(tf.range(n), polys_per_inst)  # [NP]
  verts_per_inst = tf.math.unsorted_segment_sum(verts_per_poly, poly_inst, n)  # [N]
  first_vert = tf.cumsum(verts_per_inst, exclusive=True)  # [N]
  first_poly = tf.cumsum(polys_per_inst, exclusive=True)  # [N]
  poly_of_vert = tf.repeat(tf.range(num_polys), verts_per_poly)  # [NV]
  rank_of_vert = poly_of_vert - tf.gather(first_poly, tf.gather(poly_inst, poly_of_vert))
  # A sentinel vertex at index NV makes padding gathers valid even when NV = 0.
  verts = tf.concat([verts, tf.zeros([1, 2])], axis=0)
  rank_of_vert = tf.concat([rank_of_vert, [-1]], axis=0)

  slot = tf.range(max_vertices, dtype=tf.int64)[None, :]  # [1, V]
  count = verts_per_inst[:, None]  # [N, 1]
  src = tf.where(count > max_vertices, slot * count // max_vertices, slot)  # [N, V]
  valid = slot < tf.minimum(count, max_vertices)
  src = tf.where(valid, first_vert[:, None] + src, num_verts)
  vertices = tf.gather(verts, src)  # [N, V, 2]
  ids = tf.cast(tf.gather(rank_of_vert, src), tf.int32)
  vertices = tf.ensure_shape(vertices, [None, max_vertices, 2])
  return vertices, tf.ensure_shape(ids, [None, max_vertices])


def _unique_first(boxes):
  """Indices (ascending) of the first occurrence of each box, Detectron's unique_boxes.

  Boxes are hashed as round(box) . (1, 1e3, 1e6, 1e9) in float64, as there.
  """
  v = tf.constant([1.0, 1e3, 1e6, 1e9], tf.float64)
  hashes = tf.linalg.matvec(tf.round(tf.cast(boxes, tf.float64)), v)
  values, idx = tf.unique(hashes)
  positions = tf.range(tf.shape(hashes)[0])
  first = tf.math.unsorted_segment_min(positions, idx, tf.shape(values)[0])
  return tf.sort(first)


def decode_proposals(boxes_flat, scores, height, width, *, convention, max_proposals,
                     min_size=MIN_PROPOSAL_SIZE):
  """Detectron's _add_proposals_from_file for one image.

  The stored proposals are in Detectron's inclusive convention; they are
  clipped to [0, W - 1] x [0, H - 1], de-duplicated (first occurrence kept),
  boxes whose sides (x2 - x1 + 1) are not > min_size dropped, and the first
  max_proposals kept, in the file's order. For "modern", x2 and y2 then get
  +1 (inclusive pixel index -> exclusive edge).

  Args:
    boxes_flat: [4 * K] float.
    scores: [K] float, or [0] when the record has no scores (then zeros).
    height, width: [] int, the original image size.
    convention: "detectron" or "modern", the output convention.
    max_proposals: P, Detectron's PROPOSAL_LIMIT.
    min_size: Detectron's min_proposal_size.

  Returns:
    (boxes [K', 4] float32, scores [K'] float32), K' <= P.
  """
  boxes = tf.reshape(tf.cast(boxes_flat, tf.float32), [-1, 4])
  k = tf.shape(boxes)[0]
  scores = tf.cast(scores, tf.float32)
  scores = tf.pad(scores, [[0, tf.maximum(k - tf.shape(scores)[0], 0)]])[:k]
  size = tf.cast(tf.stack([height, width]), tf.float32)
  boxes = box_ops.clip_to_image(boxes, size, convention="detectron")
  keep = _unique_first(boxes)
  boxes, scores = tf.gather(boxes, keep), tf.gather(scores, keep)
  w, h = box_ops.widths_heights(boxes, convention="detectron")
  big = (w > min_size) & (h > min_size)
  boxes, scores = tf.boolean_mask(boxes, big), tf.boolean_mask(scores, big)
  boxes, scores = boxes[:max_proposals], scores[:max_proposals]
  extra = 1.0 - box_ops.box_offset(convention)  # +1 on x2, y2 for "modern"
  return boxes + tf.constant([0.0, 0.0, extra, extra]), scores


def parse_annotations(serialized, *, convention, max_polygon_vertices, with_proposals=False,
                      max_proposals=2000):
  """Parses one record into annotation tensors (the image stays encoded).

  Args:
    serialized: [] string, a `tf.train.Example` of `tfdet.data.schema`.
    convention: "detectron" or "modern", the box convention of the output.
    max_polygon_vertices: V.
    with_proposals: also decode PROPOSAL_BOXES / PROPOSAL_SCORES.
    max_proposals: P, proposals kept (after Detectron's filters).

  Returns:
    dict with ENCODED_IMAGE [] string, ORIGINAL_SIZE [2] int32, and (N valid
    instances, in record order)
      keys.IMAGE_ID [] int64, keys.GT_BOXES [N, 4] float32,
      keys.GT_CLASSES [N] int32, keys.GT_IS_CROWD [N] bool,
      keys.GT_POLYGONS [N, V, 2] float32, keys.GT_POLYGON_IDS [N, V] int32,
      keys.GT_KEYPOINTS [N, 17, 3] float32 (zeros when the record has none);
    with_proposals adds keys.PROPOSALS [K, 4] and keys.PROPOSAL_SCORES [K].
  """
  f = tf.io.parse_single_example(serialized, schema.feature_spec())
  dense = {k: tf.sparse.to_dense(v) if isinstance(v, tf.SparseTensor) else v
           for k, v in f.items()}
  height, width = dense[schema.IMAGE_HEIGHT], dense[schema.IMAGE_WIDTH]
  classes = dense[schema.CLASS]
  n = tf.shape(classes)[0]
  boxes = _xywh_to_xyxy(tf.reshape(dense[schema.BOX_XYWH], [-1, 4]), height, width,
                        convention=convention)
  polygons, polygon_ids = instance_polygons(
      dense[schema.POLYGON_XY], dense[schema.POLYGON_LENGTHS],
      dense[schema.POLYGONS_PER_INSTANCE], n, max_vertices=max_polygon_vertices)
  kp = dense[schema.KEYPOINTS]
  kp_size = n * schema.NUM_KEYPOINTS * 3
  kp = tf.pad(kp, [[0, tf.maximum(kp_size - tf.shape(kp)[0], 0)]])  # absent -> zeros
  keypoints = tf.reshape(kp, [n, schema.NUM_KEYPOINTS, 3])

  valid = ((dense[schema.AREA] > 0.0) & (boxes[:, 2] > boxes[:, 0])
           & (boxes[:, 3] > boxes[:, 1]))
  out = {
      ENCODED_IMAGE: dense[schema.IMAGE_ENCODED],
      ORIGINAL_SIZE: tf.cast(tf.stack([height, width]), tf.int32),
      keys.IMAGE_ID: dense[schema.IMAGE_ID],
      keys.GT_BOXES: tf.boolean_mask(boxes, valid),
      keys.GT_CLASSES: tf.cast(tf.boolean_mask(classes, valid), tf.int32),
      keys.GT_IS_CROWD: tf.boolean_mask(dense[schema.IS_CROWD], valid) > 0,
      keys.GT_POLYGONS: tf.boolean_mask(polygons, valid),
      keys.GT_POLYGON_IDS: tf.boolean_mask(polygon_ids, valid),
      keys.GT_KEYPOINTS: tf.boolean_mask(keypoints, valid),
  }
  if with_proposals:
    out[keys.PROPOSALS], out[keys.PROPOSAL_SCORES] = decode_proposals(
        dense[schema.PROPOSAL_BOXES], dense[schema.PROPOSAL_SCORES], height, width,
        convention=convention, max_proposals=max_proposals)
  return out


def has_non_crowd_gt(example):
  """[] bool: the image has a valid non-crowd instance (a Detectron foreground RoI)."""
  return tf.reduce_any(tf.logical_not(example[keys.GT_IS_CROWD]))


def has_visible_keypoints(example):
  """[] bool: Detectron's has_visible_keypoints (some instance's visibilities sum > 0)."""
  vis = tf.reduce_sum(example[keys.GT_KEYPOINTS][:, :, 2], axis=1)
  return tf.reduce_any(vis > 0.0)


def decode(serialized, *, convention, max_polygon_vertices, with_proposals=False,
           max_proposals=2000):
  """`parse_annotations` plus IMAGE [H, W, 3] uint8 (the encoded bytes are dropped)."""
  out = parse_annotations(serialized, convention=convention,
                          max_polygon_vertices=max_polygon_vertices,
                          with_proposals=with_proposals, max_proposals=max_proposals)
  out[IMAGE] = decode_image(out.pop(ENCODED_IMAGE))
  return out
