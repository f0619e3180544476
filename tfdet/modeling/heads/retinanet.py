"""RetinaNet's head: a class tower and a box tower, shared by every pyramid level.

Detectron's retinanet_heads.add_fpn_retinanet_outputs: each tower is
`num_convs` 3x3 convs of `conv_dim` with ReLU (not shared between the two
towers), then a 3x3 conv to A x K class logits (sigmoid, one per anchor and
foreground class) or to A x 4 class-agnostic box deltas. Weights are
GaussianFill std 0.01 with zero bias, except the class logits' bias,
-log((1 - prior) / prior), so that every anchor starts as background with
probability 1 - prior. The same layers serve P3..P7. Layer names follow
Detectron's blobs (``retnet_cls_conv_n0``, ``retnet_bbox_pred``, ...).

Channel layouts follow Detectron's (N, A * K, H, W) blobs in NHWC: class
channel ``a * K + k`` is class k + 1 of anchor a, box channel ``a * 4 + c``
coordinate c of anchor a.
"""

import math

import keras

from tfdet.modeling.detectors import outputs as out
from tfdet.modeling.heads.rpn import gaussian_fill


def prior_bias(prior_prob):
  """The class logits' initial bias: sigmoid(bias) = prior_prob."""
  return -math.log((1.0 - prior_prob) / prior_prob)


def _tower(x, *, prefix, num_convs, conv_dim):
  for i in range(num_convs):
    x = keras.layers.Conv2D(conv_dim, 3, padding="same", activation="relu",
                            kernel_initializer=gaussian_fill(0.01), name=f"{prefix}_n{i}")(x)
  return x


def build_retinanet_head(*, in_channels, num_anchors, num_classes, num_convs=4, conv_dim=None,
                         prior_prob=0.01, name="retinanet_head"):
  """A keras.Model from one feature map to its RetinaNet outputs.

  Args:
    in_channels: channels of the pyramid levels (256).
    num_anchors: A, anchors per location (9).
    num_classes: K, foreground classes (80 for COCO; no background logit).
    num_convs: convs per tower (RETINANET.NUM_CONVS, 4).
    conv_dim: tower width; Detectron uses in_channels.
    prior_prob: RETINANET.PRIOR_PROB (0.01).
    name: model name.

  Returns:
    keras.Model: [B, H, W, in_channels] -> {out.RETINANET_LOGITS:
    [B, H, W, A * K], out.RETINANET_DELTAS: [B, H, W, A * 4]}.
  """
  conv_dim = conv_dim or in_channels
  x = keras.Input((None, None, in_channels))
  cls_tower = _tower(x, prefix="retnet_cls_conv", num_convs=num_convs, conv_dim=conv_dim)
  box_tower = _tower(x, prefix="retnet_bbox_conv", num_convs=num_convs, conv_dim=conv_dim)
  logits = keras.layers.Conv2D(
      num_anchors * num_classes, 3, padding="same", kernel_initializer=gaussian_fill(0.01),
      bias_initializer=keras.initializers.Constant(prior_bias(prior_prob)),
      name="retnet_cls_pred")(cls_tower)
  deltas = keras.layers.Conv2D(num_anchors * 4, 3, padding="same",
                               kernel_initializer=gaussian_fill(0.01),
                               name="retnet_bbox_pred")(box_tower)
  return keras.Model(x, {out.RETINANET_LOGITS: logits, out.RETINANET_DELTAS: deltas}, name=name)
