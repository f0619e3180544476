"""Mask R-CNN mask heads: RoI features -> class-specific mask logits.

* ``build_fpn_mask_head`` (Detectron's mask_rcnn_fcn_head_v1up4convs): four
  3x3 convs of 256 with ReLU, a 2x2 stride-2 transposed conv of 256 with
  ReLU, a 1x1 conv to K + 1 class-specific masks: 14x14 features -> 28x28.
* ``build_c4_mask_head`` (mask_rcnn_fcn_head_v0upshare): the box head's res5
  features (7x7, shared) -> 2x2 stride-2 transposed conv of 256 with ReLU ->
  1x1 conv: 14x14 masks.

Weights use MSRAFill (Detectron's MRCNN.CONV_INIT), biases zero. Outputs are
logits (sigmoid per pixel); channel c is class c's mask.
"""

import keras

from tfdet.modeling.backbones.resnet import msra_init
from tfdet.modeling.detectors import outputs as out


def _upsample_and_predict(x, *, num_classes, conv_dim, class_agnostic):
  x = keras.layers.Conv2DTranspose(conv_dim, 2, strides=2, activation="relu",
                                   kernel_initializer=msra_init(), name="conv5_mask")(x)
  return keras.layers.Conv2D(1 if class_agnostic else num_classes, 1,
                             kernel_initializer=msra_init(), name="mask_fcn_logits")(x)


def build_fpn_mask_head(*, num_classes, in_channels=256, roi_size=14, num_convs=4,
                        conv_dim=256, class_agnostic=False, name="mask_head"):
  """FPN's mask head: [R, 14, 14, C] -> {out.MASK_LOGITS: [R, 28, 28, K + 1]}."""
  x = keras.Input((roi_size, roi_size, in_channels))
  h = x
  for i in range(num_convs):
    h = keras.layers.Conv2D(conv_dim, 3, padding="same", activation="relu",
                            kernel_initializer=msra_init(), name=f"mask_fcn{i + 1}")(h)
  logits = _upsample_and_predict(h, num_classes=num_classes, conv_dim=conv_dim,
                                 class_agnostic=class_agnostic)
  return keras.Model(x, {out.MASK_LOGITS: logits}, name=name)


def build_c4_mask_head(*, num_classes, in_channels=2048, roi_size=7, conv_dim=256,
                       class_agnostic=False, name="mask_head"):
  """C4's mask head on shared res5 features: [R, 7, 7, 2048] -> [R, 14, 14, K + 1]."""
  x = keras.Input((roi_size, roi_size, in_channels))
  logits = _upsample_and_predict(x, num_classes=num_classes, conv_dim=conv_dim,
                                 class_agnostic=class_agnostic)
  return keras.Model(x, {out.MASK_LOGITS: logits}, name=name)
