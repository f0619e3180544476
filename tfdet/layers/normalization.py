"""Normalization layers and the factory that picks one by name.

Detectron freezes BatchNorm into a per-channel affine transform
(``AffineChannel``: ``y = x * scale + bias``, with the ImageNet statistics
folded into scale and bias and never updated). The other choices are for
models trained with normalization (GroupNorm models, modern recipes).
"""

import keras

NORMS = ("frozen_bn", "bn", "sync_bn", "gn")


@keras.saving.register_keras_serializable(package="tfdet")
class AffineChannel(keras.layers.Layer):
  """Frozen BatchNorm: ``y = x * scale + bias`` per channel (last axis).

  Scale and bias are weights (so checkpoints and converted Detectron
  weights fill them) that are never trained: the layer is created with
  ``trainable=False`` unless told otherwise.

  Args:
    epsilon: unused by the affine itself; kept so that BatchNorm statistics
      can be folded as scale = gamma / sqrt(var + epsilon) by converters.
  """

  def __init__(self, *, epsilon=1e-5, trainable=False, **kwargs):
    super().__init__(trainable=trainable, **kwargs)
    self.epsilon = epsilon

  def build(self, input_shape):
    channels = input_shape[-1]
    self.scale = self.add_weight(name="scale", shape=(channels,), initializer="ones")
    self.bias = self.add_weight(name="bias", shape=(channels,), initializer="zeros")

  def call(self, inputs):
    return inputs * keras.ops.cast(self.scale, inputs.dtype) + keras.ops.cast(
        self.bias, inputs.dtype)

  def get_config(self):
    config = super().get_config()
    config.update(epsilon=self.epsilon)
    return config


def make_norm(norm, *, name, num_groups=32, momentum=0.9, epsilon=1e-5):
  """A normalization layer by name.

  Args:
    norm: "frozen_bn" (Detectron's AffineChannel), "bn" (trainable
      BatchNorm, per-replica statistics), "sync_bn" (BatchNorm with
      statistics synchronized across replicas), or "gn" (GroupNorm).
    name: the layer's name.
    num_groups: GroupNorm's groups (Detectron: 32).
    momentum, epsilon: BatchNorm / GroupNorm parameters.

  Returns:
    a keras Layer acting on the last (channel) axis.
  """
  if norm == "frozen_bn":
    return AffineChannel(epsilon=epsilon, name=name)
  if norm in ("bn", "sync_bn"):
    return keras.layers.BatchNormalization(momentum=momentum, epsilon=epsilon,
                                           synchronized=norm == "sync_bn", name=name)
  if norm == "gn":
    return keras.layers.GroupNormalization(groups=num_groups, epsilon=epsilon, name=name)
  raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
