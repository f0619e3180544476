"""Keypoint R-CNN's keypoint head (Detectron's keypoint_rcnn_heads, add_roi_pose_head_v1convX
with USE_DECONV_OUTPUT and UP_SCALE 2).

[R, 14, 14, C] RoI features -> `num_convs` 3x3 convs of `conv_dim` with ReLU
(``conv_fcn1``..) -> a 4x4 stride-2 transposed conv to J heatmaps
(``kps_score_lowres``, 28x28) -> Detectron's fixed bilinear x2 upsampling
(56x56). Weights use MSRAFill (KRCNN.CONV_INIT), biases zero. Outputs are
logits; channel j is keypoint j's heatmap (a softmax over its positions).
"""

import keras

from tfdet.layers.upsampling import BilinearUpsampling
from tfdet.modeling.backbones.resnet import msra_init
from tfdet.modeling.detectors import outputs as out


def build_keypoint_head(*, num_keypoints=17, in_channels=256, roi_size=14, num_convs=8,
                        conv_dim=512, up_scale=2, name="keypoint_head"):
  """[R, roi_size, roi_size, in_channels] -> {out.KEYPOINT_LOGITS: [R, 4 roi, 4 roi, J]}."""
  x = keras.Input((roi_size, roi_size, in_channels))
  h = x
  for i in range(num_convs):
    h = keras.layers.Conv2D(conv_dim, 3, padding="same", activation="relu",
                            kernel_initializer=msra_init(), name=f"conv_fcn{i + 1}")(h)
  h = keras.layers.Conv2DTranspose(num_keypoints, 4, strides=2, padding="same",
                                   kernel_initializer=msra_init(), name="kps_score_lowres")(h)
  if up_scale > 1:
    h = BilinearUpsampling(up_scale, name="kps_score")(h)
  return keras.Model(x, {out.KEYPOINT_LOGITS: h}, name=name)
