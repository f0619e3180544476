"""Keypoints from heatmaps, as Detectron's heatmaps_to_keypoints does it.

For each detection (x1, y1, x2, y2) in original-image pixels and each of its
J heatmaps (logits, S x S over the box):

1. w = max(x2 - x1, 1), h = max(y2 - y1, 1) (no "+1"), and the heatmap is
   resized to ceil(h) x ceil(w) with OpenCV's bicubic interpolation
   (``cv2.resize(..., INTER_CUBIC)``: Keys' kernel with a = -0.75,
   half-pixel centres, edge pixels repeated), `cubic_resize`;
2. the keypoint is the first maximum of the resized map (row-major), at
   cell (x_int, y_int): x = x1 + (x_int + 0.5) * w / ceil(w), likewise y;
3. its score is the resized logit there (Detectron's ``logit`` row).

Detectron loops over detections in numpy; here `tf.map_fn` runs one
detection at a time (each has its own resized size), so the op works in
graphs and SavedModels. The resize is separable and uses four taps per
output pixel, as OpenCV's does.
"""

import tensorflow as tf

CUBIC_A = -0.75  # OpenCV's INTER_CUBIC kernel parameter


def _cubic_taps(src_size, dst_size):
  """Indices [dst, 4] (clamped to the source) and weights [dst, 4] of a 1-D cubic resize."""
  dst = tf.cast(tf.range(dst_size), tf.float64)
  scale = tf.cast(src_size, tf.float64) / tf.cast(dst_size, tf.float64)
  fx = tf.cast((dst + 0.5) * scale - 0.5, tf.float32)  # OpenCV: double product, float result
  sx = tf.math.floor(fx)
  t = fx - sx
  a = CUBIC_A
  w0 = ((a * (t + 1.0) - 5.0 * a) * (t + 1.0) + 8.0 * a) * (t + 1.0) - 4.0 * a
  w1 = ((a + 2.0) * t - (a + 3.0)) * t * t + 1.0
  w2 = ((a + 2.0) * (1.0 - t) - (a + 3.0)) * (1.0 - t) * (1.0 - t) + 1.0
  w3 = 1.0 - w0 - w1 - w2
  offsets = tf.constant([-1, 0, 1, 2], tf.int32)
  index = tf.clip_by_value(tf.cast(sx, tf.int32)[:, None] + offsets, 0, src_size - 1)
  return index, tf.stack([w0, w1, w2, w3], axis=1)


def cubic_resize(image, height, width):
  """OpenCV-style bicubic resize of [H, W, C] float32 to [height, width, C] (module docstring)."""
  image = tf.convert_to_tensor(image, tf.float32)
  src_h, src_w = tf.shape(image)[0], tf.shape(image)[1]
  rows, row_w = _cubic_taps(src_h, height)  # [height, 4]
  cols, col_w = _cubic_taps(src_w, width)  # [width, 4]
  # Vertical first on the small source, then horizontal: 4 taps each.
  tall = tf.einsum("yk,ykwc->ywc", row_w, tf.gather(image, rows))  # [height, W, C]
  return tf.einsum("xk,yxkc->yxc", col_w, tf.gather(tall, cols, axis=1))  # [height, width, C]


def _one_detection(heatmaps, box):
  """[S, S, J] logits and a [4] box -> [J, 3] (x, y, score)."""
  width = tf.maximum(box[2] - box[0], 1.0)
  height = tf.maximum(box[3] - box[1], 1.0)
  width_ceil = tf.math.ceil(width)
  height_ceil = tf.math.ceil(height)
  resized = cubic_resize(heatmaps, tf.cast(height_ceil, tf.int32),
                         tf.cast(width_ceil, tf.int32))  # [h, w, J]
  w = tf.shape(resized)[1]
  flat = tf.reshape(resized, [-1, tf.shape(resized)[2]])  # [h * w, J]
  position = tf.argmax(flat, axis=0, output_type=tf.int32)  # first maximum, row-major
  score = tf.gather_nd(flat, tf.stack([position, tf.range(tf.shape(flat)[1])], axis=1))
  x_int = tf.cast(position % w, tf.float32)
  y_int = tf.cast(position // w, tf.float32)
  x = (x_int + 0.5) * (width / width_ceil) + box[0]
  y = (y_int + 0.5) * (height / height_ceil) + box[1]
  return tf.stack([x, y, score], axis=-1)


def heatmaps_to_keypoints(heatmaps, boxes):
  """Keypoints of detections from their heatmaps (module docstring).

  Args:
    heatmaps: [B, D, S, S, J] float32 logits.
    boxes: [B, D, 4] float32 detections in original-image pixels.

  Returns:
    [B, D, J, 3] float32 (x, y, score) in original-image pixels.
  """
  heatmaps = tf.convert_to_tensor(heatmaps, tf.float32)
  boxes = tf.convert_to_tensor(boxes, tf.float32)
  shape = tf.shape(heatmaps)
  flat_maps = tf.reshape(heatmaps, tf.concat([[-1], shape[2:]], 0))  # [B*D, S, S, J]
  flat_boxes = tf.reshape(boxes, [-1, 4])
  num_keypoints = heatmaps.shape[-1]
  points = tf.map_fn(lambda args: _one_detection(*args), (flat_maps, flat_boxes),
                     fn_output_signature=tf.TensorSpec([num_keypoints, 3], tf.float32))
  return tf.reshape(points, tf.concat([shape[:2], [-1, 3]], 0))
