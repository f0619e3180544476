"""Detectron's BilinearInterpolation: a fixed x`scale` upsampling by a transposed conv.

Detectron upsamples keypoint heatmaps with a ConvTranspose whose kernel
(``2 * scale`` wide, stride ``scale``, padding ``scale / 2``) is the
bilinear filter of ``upsample_filt`` on each channel's own diagonal and is
never trained. Its output is ``scale`` times the input's size; the border
rows weigh the missing neighbours as zero, as Caffe2's does.
"""

import keras
import numpy as np
import tensorflow as tf


def bilinear_filter(size):
  """Detectron's upsample_filt: [size, size] bilinear weights."""
  factor = (size + 1) // 2
  center = factor - 1 if size % 2 == 1 else factor - 0.5
  og = np.ogrid[:size, :size]
  return ((1 - np.abs(og[0] - center) / factor)
          * (1 - np.abs(og[1] - center) / factor)).astype(np.float32)


@keras.saving.register_keras_serializable(package="tfdet")
class BilinearUpsampling(keras.layers.Layer):
  """Upsamples [B, H, W, C] to [B, scale H, scale W, C] (module docstring).

  Args:
    scale: an even upsampling factor (Detectron's KRCNN.UP_SCALE, 2).
  """

  def __init__(self, scale=2, **kwargs):
    super().__init__(trainable=False, **kwargs)
    if scale < 2 or scale % 2:
      raise ValueError(f"BilinearUpsampling needs an even scale >= 2, got {scale}")
    self.scale = int(scale)

  def call(self, x):
    channels = x.shape[-1]
    size = 2 * self.scale
    kernel = np.zeros((size, size, channels, channels), np.float32)
    kernel[:, :, range(channels), range(channels)] = bilinear_filter(size)[:, :, None]
    shape = tf.shape(x)
    out_shape = tf.stack([shape[0], shape[1] * self.scale, shape[2] * self.scale, channels])
    # SAME crops (size - scale) / 2 = scale / 2 per side: Caffe2's pad.
    return tf.nn.conv2d_transpose(x, tf.constant(kernel, x.dtype), out_shape,
                                  strides=self.scale, padding="SAME")

  def compute_output_shape(self, input_shape):
    b, h, w, c = input_shape
    return (b, None if h is None else h * self.scale, None if w is None else w * self.scale, c)

  def get_config(self):
    return {**super().get_config(), "scale": self.scale}
