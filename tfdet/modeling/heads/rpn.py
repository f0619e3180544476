"""The RPN head: one small conv net shared by every pyramid level.

3x3 conv (ReLU) -> 1x1 conv to A objectness logits (sigmoid, one per anchor)
and 1x1 conv to 4A box deltas, as Detectron's rpn_heads / FPN RPN (weights
GaussianFill std 0.01, zero bias). For FPN the same layers serve P2..P6.
"""

import keras

from tfdet.modeling.detectors import outputs as out


def gaussian_fill(std):
  """caffe2's GaussianFill: normal with mean 0 and the given std."""
  return keras.initializers.RandomNormal(stddev=std)


def build_rpn_head(*, in_channels, num_anchors, conv_dim=None, name="rpn_head"):
  """A keras.Model from one feature map to its RPN outputs.

  Args:
    in_channels: channels of the feature maps (256 for FPN, 1024 for C4).
    num_anchors: A, anchors per location (3 for FPN levels, 15 for C4).
    conv_dim: width of the 3x3 conv; Detectron uses in_channels.
    name: model name; Detectron's blob names prefix its layers.

  Returns:
    keras.Model: [B, H, W, in_channels] -> {out.RPN_LOGITS: [B, H, W, A],
    out.RPN_DELTAS: [B, H, W, 4A]} (deltas ordered anchor-major: channel
    4a + k is coordinate k of anchor a).
  """
  conv_dim = conv_dim or in_channels
  x = keras.Input((None, None, in_channels))
  h = keras.layers.Conv2D(conv_dim, 3, padding="same", activation="relu",
                          kernel_initializer=gaussian_fill(0.01), name="conv_rpn")(x)
  logits = keras.layers.Conv2D(num_anchors, 1, kernel_initializer=gaussian_fill(0.01),
                               name="rpn_cls_logits")(h)
  deltas = keras.layers.Conv2D(4 * num_anchors, 1, kernel_initializer=gaussian_fill(0.01),
                               name="rpn_bbox_pred")(h)
  return keras.Model(x, {out.RPN_LOGITS: logits, out.RPN_DELTAS: deltas}, name=name)
