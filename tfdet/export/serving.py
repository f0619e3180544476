"""A `tf.Module` with TF Serving signatures around a built detector.

The module wraps a model built with ``implementation="reference"`` (the
pure-TF RoIAlign and proposal ops), so the exported graph holds only stock
TensorFlow ops and runs on stock TF Serving without tfdet's op library.

Signatures (B images per request):

* ``serving_default``: ``images`` [B, H, W, 3] uint8 RGB, any H and W (one
  size per request, as a tensor demands).
* ``serving_bytes``: ``encoded_images`` [B] string, JPEG or PNG, each of its
  own size.
* ``serving_tf_example``: ``serialized_examples`` [B] string, serialized
  `tf.train.Example`s with the image under `tfdet.data.schema.IMAGE_ENCODED`
  (the records of `data_prep`, or a client's own with just that feature).

Preprocessing in the graph is the eval path of `tfdet.data`: Detectron's
``im_scale`` (shorter side to ``scale``, longer at most ``max_size``,
`transforms.compute_scale`), bilinear resize to ``round(size * im_scale)``,
channel order and mean/std normalization (`transforms.normalize_image`), zero
padding at the bottom/right to the batch's largest resized image rounded up
to ``size_divisibility``; IMAGE_INFO is (resized_h, resized_w, im_scale,
original_h, original_w) per image.

Outputs (D = detections_per_image, M = mask resolution; a model's outputs
only, e.g. no masks from Faster R-CNN):

* ``detection_boxes`` [B, D, 4] float32 (x1, y1, x2, y2) in each image's
  original pixels, in the model's box convention;
* ``detection_scores`` [B, D] float32, ``detection_classes`` [B, D] int32
  contiguous class ids 1..K (the label map turns them into category ids),
  ``num_detections`` [B] int32 (rows past it are padding);
* ``detection_masks`` [B, D, M, M] float32 mask probabilities in each box's
  frame (mask models). They are not pasted into the image: pasted masks are
  [D, H, W] per image, do not batch across sizes and make responses of
  ~100 x H x W values; a client pastes them (`tfdet.ops.masks.paste_masks`,
  as `tfdet.infer` does);
* ``detection_keypoints`` [B, D, J, 3] float32 (keypoint models): per
  detection, J keypoints (17 COCO keypoints in COCO's order) as (x, y,
  score), x and y in each image's original pixels like the boxes (the frame
  of COCO's keypoint annotations), score the heatmap logit at the keypoint
  (`tfdet.modeling.detectors.outputs` has the details);
* ``image_info`` [B, 5] float32, as above;
* RPN-only models: ``proposals`` [B, P, 4] in original pixels,
  ``proposal_scores`` [B, P], ``num_proposals`` [B].
"""

import json
import os

import tensorflow as tf
from absl import logging

from tfdet.data import decoder, keys, schema, transforms
from tfdet.modeling.detectors import outputs as out

DEFAULT_SIGNATURE = "serving_default"
BYTES_SIGNATURE = "serving_bytes"
TF_EXAMPLE_SIGNATURE = "serving_tf_example"
IMAGE_INFO = keys.IMAGE_INFO  # served as the batch key is named


class NotServableError(ValueError):
  """The model cannot run on bare images (it reads precomputed proposals)."""


class DetectionModule(tf.Module):
  """Preprocessing + model + output selection, with the serving signatures.

  Args:
    model: a built detector (``implementation="reference"`` for stock TF
      Serving; its weights are exported).
    scale: target shorter side (TEST.SCALE, 800).
    max_size: cap on the longer side (TEST.MAX_SIZE, 1333).
    size_divisibility: the padded canvas' sides are multiples of it (32 FPN).
    channel_order, pixel_means, pixel_stds: as `transforms.normalize_image`.
  """

  def __init__(self, model, *, scale=800, max_size=1333, size_divisibility=32,
               channel_order="bgr", pixel_means=transforms.DETECTRON_PIXEL_MEANS,
               pixel_stds=(1.0, 1.0, 1.0), name="detection_module"):
    super().__init__(name=name)
    if getattr(model, "reads_precomputed_proposals", False):
      raise NotServableError(
          "this model reads precomputed proposals (it has no RPN), so images alone cannot be "
          "served or inferred: export or run the end-to-end model of the same family, or "
          "evaluate this one on shards with proposals (tfdet.evaluate)")
    if getattr(model, "jit_compile_inference", False):
      # A SavedModel with XLA-compiled functions needs a server built with XLA.
      logging.info("export: the model's jit_compile_inference is turned off for serving")
      model.jit_compile_inference = False
    self.model = model
    self._scale = float(scale)
    self._max_size = float(max_size)
    self._divisor = int(size_divisibility)
    self._detect_one_fn = None
    self._norm = dict(channel_order=channel_order, pixel_means=tuple(pixel_means),
                      pixel_stds=tuple(pixel_stds))

  # ------------------------------------------------------- preprocessing
  def preprocess(self, image):
    """One image -> a one-image batch dict of `tfdet.data.keys`.

    Args:
      image: [H, W, 3] uint8 RGB.

    Returns:
      dict with IMAGES [1, Hp, Wp, 3] float32 (the resized, normalized image
      zero-padded at the bottom/right to multiples of the divisor) and
      IMAGE_INFO [1, 5] float32.
    """
    shape = tf.shape(image)
    height, width = shape[0], shape[1]
    im_scale = transforms.compute_scale(height, width, scale=self._scale,
                                        max_size=self._max_size)
    size = transforms.resized_size(height, width, im_scale)
    resized = tf.image.resize(tf.cast(image, tf.float32), size, method="bilinear")
    normalized = transforms.normalize_image(resized, **self._norm)
    canvas = (size + self._divisor - 1) // self._divisor * self._divisor
    padded = transforms.pad_image(normalized, canvas[0], canvas[1])
    info = tf.stack([tf.cast(size[0], tf.float32), tf.cast(size[1], tf.float32), im_scale,
                     tf.cast(height, tf.float32), tf.cast(width, tf.float32)])
    return {keys.IMAGES: padded[None], keys.IMAGE_INFO: info[None]}

  # ------------------------------------------------------------ forward
  def detect_one(self, image):
    """[H, W, 3] uint8 -> the serving outputs of one image (no batch axis)."""
    batch = self.preprocess(image)
    result = self.model(batch, training=False)
    info = batch[keys.IMAGE_INFO]
    if out.DETECTION_BOXES not in result:  # RPN only: proposals back to original pixels
      served = {out.PROPOSALS: result[out.PROPOSALS] / info[:, 2][:, None, None],
                out.PROPOSAL_SCORES: result[out.PROPOSAL_SCORES],
                out.NUM_PROPOSALS: result[out.NUM_PROPOSALS]}
    else:
      # Boxes and keypoints come out of the model in original pixels already.
      names = (out.DETECTION_BOXES, out.DETECTION_SCORES, out.DETECTION_CLASSES,
               out.NUM_DETECTIONS, out.DETECTION_MASKS, out.DETECTION_KEYPOINTS)
      served = {name: result[name] for name in names if name in result}
    served[IMAGE_INFO] = info
    return {name: value[0] for name, value in served.items()}

  def detect(self, image_fn, count):
    """Runs `detect_one` on `image_fn(i)` for i < count and stacks the outputs.

    Images are run one at a time, each on its own canvas (the batch axis of
    the model stays static, and no image's output depends on the others').

    Args:
      image_fn: index -> [H_i, W_i, 3] uint8 RGB.
      count: [] int32, B.

    Returns:
      dict name -> [B, ...] (module docstring).
    """
    one = self._traced_detect_one()
    specs = {name: tf.TensorSpec([None] * t.shape.rank, t.dtype)
             for name, t in one.structured_outputs.items()}
    return tf.map_fn(lambda i: one(image_fn(i)), tf.range(count), fn_output_signature=specs)

  def _traced_detect_one(self):
    # Traced once and called by every signature (the model is the slow part to trace).
    if self._detect_one_fn is None:
      self._detect_one_fn = tf.function(self.detect_one).get_concrete_function(
          tf.TensorSpec([None, None, 3], tf.uint8))
    return self._detect_one_fn

  @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")])
  def serve_images(self, images):
    """[B, H, W, 3] uint8 RGB -> outputs (module docstring)."""
    return self.detect(lambda i: images[i], tf.shape(images)[0])

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="encoded_images")])
  def serve_bytes(self, encoded_images):
    """[B] JPEG/PNG bytes -> outputs."""
    return self.detect(lambda i: decoder.decode_image(encoded_images[i]),
                       tf.shape(encoded_images)[0])

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="serialized_examples")])
  def serve_tf_example(self, serialized_examples):
    """[B] serialized tf.Example with schema.IMAGE_ENCODED -> outputs."""
    parsed = tf.io.parse_example(
        serialized_examples, {schema.IMAGE_ENCODED: tf.io.FixedLenFeature([], tf.string)})
    encoded = parsed[schema.IMAGE_ENCODED]
    return self.detect(lambda i: decoder.decode_image(encoded[i]), tf.shape(encoded)[0])

  def signatures(self):
    """The signature dict for `tf.saved_model.save`."""
    return {
        DEFAULT_SIGNATURE: self.serve_images.get_concrete_function(),
        BYTES_SIGNATURE: self.serve_bytes.get_concrete_function(),
        TF_EXAMPLE_SIGNATURE: self.serve_tf_example.get_concrete_function(),
    }


# Beside the graph (TF Serving ignores assets.extra/): what a client needs to
# read the outputs, above all the box convention of detection_boxes.
EXPORT_INFO_FILE = os.path.join("assets.extra", "tfdet_export.json")


def export_saved_model(model, export_dir, **preprocessing):
  """Writes a SavedModel of `DetectionModule(model, **preprocessing)` with its signatures.

  Also writes `EXPORT_INFO_FILE`: {"convention", "scale", "max_size",
  "size_divisibility"} (`read_export_info`).

  Args:
    model: a built detector whose ops are the pure-TF references.
    export_dir: output folder.
    **preprocessing: `DetectionModule` settings (scale, max_size, ...).

  Returns:
    the DetectionModule.
  """
  if getattr(model, "implementation", "reference") != "reference":
    raise ValueError("export a model built with implementation='reference' (stock TF ops only)")
  module = DetectionModule(model, **preprocessing)
  tf.saved_model.save(module, export_dir, signatures=module.signatures())
  info = {"convention": model.convention, "scale": module._scale, "max_size": module._max_size,
          "size_divisibility": module._divisor}
  path = os.path.join(export_dir, EXPORT_INFO_FILE)
  tf.io.gfile.makedirs(os.path.dirname(path))
  with tf.io.gfile.GFile(path, "w") as f:
    f.write(json.dumps(info, indent=1))
  return module


def read_export_info(export_dir):
  """The `EXPORT_INFO_FILE` of a SavedModel as a dict ({} for one exported without it)."""
  path = os.path.join(export_dir, EXPORT_INFO_FILE)
  if not tf.io.gfile.exists(path):
    return {}
  with tf.io.gfile.GFile(path) as f:
    return json.loads(f.read())
