"""A grouped 2-D convolution that runs TensorFlow's own kernels on every device.

Keras 3 (TF backend) routes every grouped ``Conv2D`` through an XLA-compiled
function, because grouped convolutions were once unsupported on CPU. On TF
2.21 the CPU kernels (oneDNN) run them, and XLA's CPU code for the gradients
is slow: a 3x3 convolution of 64 groups on [1, 200, 336, 256] (ResNeXt-101
64x4d's res2 at 800x1344) took 82 s forward+backward through Keras against
0.21 s through ``tf.nn.conv2d`` on the same 2 cores (forward 750 ms against
72 ms), which made a ResNeXt training step on CPU 30x slower than a ResNet's.
`GroupedConv2D` is a ``keras.layers.Conv2D`` (same weights, names and
checkpoints) that calls ``tf.nn.conv2d`` itself, in channels-last layout.
"""

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="tfdet")
class GroupedConv2D(keras.layers.Conv2D):
  """``keras.layers.Conv2D`` whose grouped convolution is ``tf.nn.conv2d`` (channels last)."""

  def __init__(self, *args, **kwargs):
    super().__init__(*args, **kwargs)
    if self.data_format != "channels_last":
      raise ValueError(f"GroupedConv2D supports channels_last only, got {self.data_format}")

  def convolution_op(self, inputs, kernel):
    return tf.nn.conv2d(inputs, kernel, strides=[1, *self.strides, 1],
                        padding=self.padding.upper(), dilations=[1, *self.dilation_rate, 1])
