"""R-CNN box heads: RoI features -> class logits and class-specific deltas.

* ``build_mlp_box_head`` (FPN, Detectron's add_roi_2mlp_head): flatten the
  7x7 RoI features, fc6 and fc7 of 1024 with ReLU (XavierFill).
* ``build_res5_box_head`` (C4, ResNet's add_ResNet_roi_conv5_head): the res5
  stage on 14x14 RoI features (stride 2 in its first block, so 7x7 out),
  then a 7x7 average pool to 2048.

Both end in Detectron's predictor: ``cls_score`` (K + 1 logits, softmax,
GaussianFill std 0.01) and ``bbox_pred`` (4 (K + 1) deltas, std 0.001; class
c's deltas are channels 4c..4c+3; class-agnostic regression has 2 classes).
Features are NHWC, so fc6's input is flattened (y, x, c) where Detectron's
NCHW blob flattens (c, y, x): converted weights need that permutation.
"""

import keras

from tfdet.modeling.backbones import resnet
from tfdet.modeling.backbones.fpn import xavier_fill
from tfdet.modeling.detectors import outputs as out
from tfdet.modeling.heads.rpn import gaussian_fill

RES5_FEATURES = "res5_features"


def _predictor(x, *, num_classes, class_agnostic=False):
  logits = keras.layers.Dense(num_classes, kernel_initializer=gaussian_fill(0.01),
                              name="cls_score")(x)
  reg_classes = 2 if class_agnostic else num_classes
  deltas = keras.layers.Dense(4 * reg_classes, kernel_initializer=gaussian_fill(0.001),
                              name="bbox_pred")(x)
  return logits, deltas


def build_mlp_box_head(*, num_classes, in_channels=256, roi_size=7, hidden_dim=1024,
                       class_agnostic=False, name="box_head"):
  """FPN's 2-fc box head.

  Args:
    num_classes: K + 1, background included (81 for COCO).
    in_channels: RoI feature channels (256).
    roi_size: RoI feature resolution (7).
    hidden_dim: fc width (FAST_RCNN.MLP_HEAD_DIM, 1024).
    class_agnostic: MODEL.CLS_AGNOSTIC_BBOX_REG.

  Returns:
    keras.Model: [R, roi_size, roi_size, in_channels] -> {out.CLASS_LOGITS:
    [R, K + 1], out.BOX_DELTAS: [R, 4 (K + 1)]}.
  """
  x = keras.Input((roi_size, roi_size, in_channels))
  h = keras.layers.Flatten(name="roi_feat_flatten")(x)
  h = keras.layers.Dense(hidden_dim, activation="relu", kernel_initializer=xavier_fill(),
                         name="fc6")(h)
  h = keras.layers.Dense(hidden_dim, activation="relu", kernel_initializer=xavier_fill(),
                         name="fc7")(h)
  logits, deltas = _predictor(h, num_classes=num_classes, class_agnostic=class_agnostic)
  return keras.Model(x, {out.CLASS_LOGITS: logits, out.BOX_DELTAS: deltas}, name=name)


def build_res5_box_head(*, num_classes, depth=50, num_groups=1, width_per_group=64,
                        stride_in_1x1=True, norm="frozen_bn", roi_size=14,
                        class_agnostic=False, width_divisor=1, name="box_head"):
  """C4's res5 box head; also returns the res5 features for the C4 mask head.

  Args:
    num_classes: K + 1.
    depth, num_groups, width_per_group, stride_in_1x1, norm: the trunk's
      settings (res5 has 3 blocks at every depth; inner width 8x the res2 one).
    roi_size: RoI feature resolution (14; the first block's stride is
      roi_size // 7, as Detectron's).
    width_divisor: as the trunk's (tiny test models only).

  Returns:
    keras.Model: [R, roi_size, roi_size, 1024] -> {out.CLASS_LOGITS, out.BOX_DELTAS,
    RES5_FEATURES: [R, roi_size / stride, roi_size / stride, 2048]}.
  """
  del depth  # res5 has 3 blocks in ResNet-50/101/152 alike
  x = keras.Input((roi_size, roi_size, resnet.STAGE_CHANNELS["res4"] // width_divisor))
  res5 = resnet.resnet_stage(x, stage="res5", num_blocks=3,
                             dim_inner=num_groups * width_per_group * 8 // width_divisor,
                             stride=max(roi_size // 7, 1), num_groups=num_groups,
                             stride_in_1x1=stride_in_1x1, norm=norm,
                             width_divisor=width_divisor)
  pooled = keras.layers.GlobalAveragePooling2D(name="res5_pool")(res5)
  logits, deltas = _predictor(pooled, num_classes=num_classes, class_agnostic=class_agnostic)
  return keras.Model(x, {out.CLASS_LOGITS: logits, out.BOX_DELTAS: deltas, RES5_FEATURES: res5},
                     name=name)
