"""TensorBoard summaries of the training loop, and detections drawn on a fixed batch.

The summaries are written with the core `tf.summary.write` op and the
metadata TensorBoard's plugins expect, because `tf.summary.scalar` and
`tf.summary.image` need the (optional) tensorboard package:

* scalars: a float32 scalar, plugin "scalars";
* images: a string tensor ``[width, height, png]``, plugin "images" (one
  image per tag, so images of different sizes can be written side by side).

`PredictionImages` runs a detector in inference mode on a batch of the input
pipeline and draws its detections (`tfdet.visualization.draw_detections`) on
the images with the normalization and padding undone.
"""


import numpy as np
import tensorflow as tf
from tensorflow.core.framework import summary_pb2

from tfdet import visualization
from tfdet.data import keys, transforms
from tfdet.modeling.detectors import outputs as out
from tfdet.ops import masks as mask_ops


def _metadata(plugin_name):
  metadata = summary_pb2.SummaryMetadata()
  metadata.plugin_data.plugin_name = plugin_name
  return metadata


def scalar(name, value, step):
  """Writes a TensorBoard scalar to the default summary writer."""
  tf.summary.write(name, tf.constant(value, tf.float32), step=step,
                   metadata=_metadata("scalars"))


def image(name, pixels, step):
  """Writes one [H, W, 3] uint8 image (PNG) to the default summary writer."""
  pixels = tf.convert_to_tensor(pixels, tf.uint8)
  height, width = pixels.shape[0], pixels.shape[1]
  tensor = tf.stack([tf.constant(str(width)), tf.constant(str(height)),
                     tf.io.encode_png(pixels)])
  tf.summary.write(name, tensor, step=step, metadata=_metadata("images"))


def display_image(image_pixels, image_info, *, channel_order="bgr",
                  pixel_means=transforms.DETECTRON_PIXEL_MEANS, pixel_stds=(1.0, 1.0, 1.0)):
  """Undoes `transforms.normalize_image` and the canvas padding of one batch image.

  Args:
    image_pixels: [Hc, Wc, 3] float, a normalized, padded image of a batch.
    image_info: [5] (resized h, resized w, scale, original h, original w).
    channel_order, pixel_means, pixel_stds: the pipeline's normalization.

  Returns:
    [h, w, 3] uint8 RGB, the resized image (h, w = image_info[:2]).
  """
  height, width = int(round(float(image_info[0]))), int(round(float(image_info[1])))
  pixels = np.asarray(image_pixels, np.float32)[:height, :width]
  pixels = pixels * np.asarray(pixel_stds, np.float32) + np.asarray(pixel_means, np.float32)
  if channel_order == "bgr":
    pixels = pixels[..., ::-1]
  return np.clip(np.round(pixels), 0, 255).astype(np.uint8)


class PredictionImages:
  """Draws a detector's predictions on the first images of a batch.

  Called as ``(model, batch) -> list of [h, w, 3] uint8``: runs
  ``model(images, training=False)`` (a tf.function, traced on first use) on
  the first `num_images` images of `batch` and draws boxes, "class score"
  labels, masks (pasted at 0.5) and, when the outputs have
  `outputs.DETECTION_KEYPOINTS`, keypoints
  on each resized image. Boxes come out of the model in original-image
  pixels; they are multiplied by IMAGE_INFO's scale to fit the resized image.
  A model without a box head (RPN only) gets its `max_proposals` best
  proposals drawn instead (resized-image pixels, objectness scores, labelled
  "RPN"). Padding rows of an eval batch (IMAGE_INFO all zero) are skipped.

  Args:
    num_images: images drawn.
    class_names: {class id: name}; None shows ids.
    score_threshold: detections below it are not drawn.
    max_proposals: proposals drawn for an RPN-only model.
    channel_order, pixel_means, pixel_stds: the input pipeline's normalization.
  """

  def __init__(self, *, num_images=2, class_names=None, score_threshold=0.5, max_proposals=20,
               channel_order="bgr", pixel_means=transforms.DETECTRON_PIXEL_MEANS,
               pixel_stds=(1.0, 1.0, 1.0)):
    self.num_images = int(num_images)
    self.class_names = class_names
    self.score_threshold = float(score_threshold)
    self.max_proposals = int(max_proposals)
    self.normalization = dict(channel_order=channel_order, pixel_means=pixel_means,
                              pixel_stds=pixel_stds)
    self._model = None
    self._infer = None

  def __call__(self, model, batch):
    batch = {k: v[:self.num_images] for k, v in batch.items()}
    if self._model is not model:
      self._model = model
      self._infer = tf.function(lambda b: model(b, training=False))
    outputs = {k: v.numpy() for k, v in self._infer(batch).items()}
    return self.draw(batch, outputs, convention=getattr(model, "convention", "detectron"))

  def draw(self, batch, outputs, *, convention):
    """Draws inference `outputs` (numpy, `tfdet.modeling.detectors.outputs` keys) on `batch`.

    Returns:
      list of [h, w, 3] uint8 RGB images, one per non-padding image of the batch.
    """
    infos = np.asarray(batch[keys.IMAGE_INFO], np.float32)
    images = np.asarray(batch[keys.IMAGES], np.float32)
    drawn = []
    for i in range(images.shape[0]):
      info = infos[i]
      if info[2] <= 0:  # an eval padding row
        continue
      pixels = display_image(images[i], info, **self.normalization)
      if out.DETECTION_BOXES not in outputs:
        drawn.append(self._draw_proposals(pixels, outputs, i))
        continue
      n = int(outputs[out.NUM_DETECTIONS][i])
      scale = float(info[2])
      boxes = outputs[out.DETECTION_BOXES][i, :n] * scale  # original -> resized pixels
      extra = {}
      if out.DETECTION_MASKS in outputs:
        extra["masks"] = mask_ops.paste_masks(
            outputs[out.DETECTION_MASKS][i:i + 1, :n], boxes[None], pixels.shape[0],
            pixels.shape[1], convention=convention)[0].numpy()
      if out.DETECTION_KEYPOINTS in outputs:  # [D, J, 3] (x, y, score), original pixels
        points = np.array(outputs[out.DETECTION_KEYPOINTS][i, :n], np.float32)
        points[..., :2] *= scale
        extra["keypoints"] = points
      drawn.append(visualization.draw_detections(
          pixels, boxes, outputs[out.DETECTION_CLASSES][i, :n],
          outputs[out.DETECTION_SCORES][i, :n], class_names=self.class_names,
          score_threshold=self.score_threshold, **extra))
    return drawn

  def _draw_proposals(self, pixels, outputs, i):
    n = int(outputs[out.NUM_PROPOSALS][i])
    scores = outputs[out.PROPOSAL_SCORES][i, :n]
    best = np.argsort(-scores, kind="stable")[:self.max_proposals]
    return visualization.draw_detections(
        pixels, outputs[out.PROPOSALS][i, best], np.zeros(len(best), np.int32), scores[best],
        class_names={0: "RPN"}, score_threshold=self.score_threshold)
