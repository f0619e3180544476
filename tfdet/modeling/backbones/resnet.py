"""ResNet and ResNeXt trunks as Detectron builds them (NHWC, Keras functional).

* Stem: 7x7/2 conv (64, no bias) -> norm -> ReLU -> 3x3/2 max-pool, with
  the symmetric padding caffe2 uses (explicit zero padding, then "valid").
* Bottleneck blocks: 1x1 -> 3x3 (groups, dilation) -> 1x1, norm after each
  conv, projection shortcut (1x1 conv + norm) when the shape changes. The
  stride sits in the first 1x1 when ``stride_in_1x1`` (MSRA ResNets,
  Detectron's STRIDE_1X1 True) and in the 3x3 otherwise (ResNeXt).
* Stage widths: outputs 256, 512, 1024, 2048; the bottleneck's inner width
  starts at ``num_groups * width_per_group`` in res2 and doubles per stage
  (ResNet: 1 x 64; ResNeXt-101 32x8d: 32 x 8; 64x4d: 64 x 4).
* Convolutions have no bias; weights use MSRAFill (He normal, fan-out).
* ``freeze_at`` (Detectron's FREEZE_AT): 0 trains everything, 1 freezes the
  stem, 2 the stem and res2, and so on.

Layer names follow Detectron's blob names (``res3_1_branch2b``,
``res3_1_branch2b_bn``, ``res3_0_branch1``), which keeps weight conversion
from Detectron's pickles a renaming-free affair.
"""

import keras

from tfdet.layers import grouped_conv
from tfdet.layers.normalization import make_norm

DEPTHS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}
STAGE_NAMES = ("res2", "res3", "res4", "res5")
STAGE_STRIDES = {"res2": 4, "res3": 8, "res4": 16, "res5": 32}
STAGE_CHANNELS = {"res2": 256, "res3": 512, "res4": 1024, "res5": 2048}


def msra_init():
  """caffe2's MSRAFill: normal with std sqrt(2 / fan_out)."""
  return keras.initializers.VarianceScaling(2.0, mode="fan_out",
                                            distribution="untruncated_normal")


def _conv(x, filters, kernel, *, stride=1, dilation=1, groups=1, name, trainable):
  pad = dilation * (kernel - 1) // 2
  if pad:
    x = keras.layers.ZeroPadding2D(pad, name=name + "_pad")(x)
  # Grouped (ResNeXt): TF's own kernels, not Keras's XLA route (tfdet.layers.grouped_conv).
  conv = grouped_conv.GroupedConv2D if groups > 1 else keras.layers.Conv2D
  return conv(filters, kernel, strides=stride, dilation_rate=dilation, groups=groups,
              padding="valid", use_bias=False, kernel_initializer=msra_init(), name=name,
              trainable=trainable)(x)


def _norm(x, norm, *, name, trainable):
  layer = make_norm(norm, name=name)
  if not trainable:
    layer.trainable = False
  return layer(x)


def bottleneck_block(x, *, name, dim_out, dim_inner, stride, num_groups=1, dilation=1,
                     stride_in_1x1=True, norm="frozen_bn", trainable=True):
  """One bottleneck block; x: [B, H, W, C_in] -> [B, H/stride, W/stride, dim_out]."""
  stride_1x1, stride_3x3 = (stride, 1) if stride_in_1x1 else (1, stride)
  y = _conv(x, dim_inner, 1, stride=stride_1x1, name=name + "_branch2a", trainable=trainable)
  y = keras.layers.ReLU(name=name + "_branch2a_relu")(
      _norm(y, norm, name=name + "_branch2a_bn", trainable=trainable))
  y = _conv(y, dim_inner, 3, stride=stride_3x3, dilation=dilation, groups=num_groups,
            name=name + "_branch2b", trainable=trainable)
  y = keras.layers.ReLU(name=name + "_branch2b_relu")(
      _norm(y, norm, name=name + "_branch2b_bn", trainable=trainable))
  y = _conv(y, dim_out, 1, name=name + "_branch2c", trainable=trainable)
  y = _norm(y, norm, name=name + "_branch2c_bn", trainable=trainable)
  if x.shape[-1] != dim_out or stride != 1:
    x = _conv(x, dim_out, 1, stride=stride, name=name + "_branch1", trainable=trainable)
    x = _norm(x, norm, name=name + "_branch1_bn", trainable=trainable)
  return keras.layers.ReLU(name=name + "_sum_relu")(keras.layers.Add(name=name + "_sum")([x, y]))


def resnet_stage(x, *, stage, num_blocks, dim_inner, stride, num_groups=1, dilation=1,
                 stride_in_1x1=True, norm="frozen_bn", trainable=True, width_divisor=1):
  """A stage of bottleneck blocks (also the C4 model's res5 RoI head).

  Args:
    x: [B, H, W, C] tensor.
    stage: "res2".."res5", names the layers and sets the output width.
    num_blocks: blocks in the stage.
    dim_inner: the bottleneck's inner width.
    stride: stride of the first block.
    width_divisor: divides the stage's output width (1 for real models;
      larger for the tiny test models).
  """
  dim_out = STAGE_CHANNELS[stage] // width_divisor
  for i in range(num_blocks):
    x = bottleneck_block(x, name=f"{stage}_{i}", dim_out=dim_out, dim_inner=dim_inner,
                         stride=stride if i == 0 else 1, num_groups=num_groups,
                         dilation=dilation, stride_in_1x1=stride_in_1x1, norm=norm,
                         trainable=trainable)
  return x


def resnet_stem(x, *, norm="frozen_bn", trainable=True, width_divisor=1):
  """conv1 7x7/2 -> norm -> ReLU -> max-pool 3x3/2: [B, H, W, 3] -> [B, H/4, W/4, 64]."""
  x = _conv(x, 64 // width_divisor, 7, stride=2, name="conv1", trainable=trainable)
  x = keras.layers.ReLU(name="conv1_relu")(_norm(x, norm, name="res_conv1_bn",
                                                 trainable=trainable))
  x = keras.layers.ZeroPadding2D(1, name="pool1_pad")(x)  # inputs >= 0 after ReLU
  return keras.layers.MaxPooling2D(3, strides=2, padding="valid", name="pool1")(x)


def resnet_features(images, *, depth, num_groups=1, width_per_group=64, stride_in_1x1=True,
                    norm="frozen_bn", freeze_at=2, last_stage="res5", res5_dilation=1,
                    stage_blocks=None, width_divisor=1):
  """Builds the trunk on a Keras tensor and returns its stage outputs.

  Args:
    images: [B, H, W, 3] Keras tensor (preprocessed, BGR minus means).
    depth: 50, 101 or 152.
    num_groups, width_per_group: 1, 64 for ResNet; 32, 8 or 64, 4 for ResNeXt.
    stride_in_1x1: Detectron's STRIDE_1X1 (True for MSRA ResNet).
    norm: see `tfdet.layers.normalization.make_norm`.
    freeze_at: 0..5, stages up to this one (1 = stem) are not trained.
    last_stage: "res4" for C4 models (res5 becomes the RoI head), else "res5".
    res5_dilation: 1, or 2 to keep res5 at stride 16 (Detectron RES5_DILATION).
    stage_blocks: None for the depth's blocks per stage, or 4 counts (tiny
      test models only).
    width_divisor: divides every width (tiny test models only).

  Returns:
    dict stage name -> [B, H/stride, W/stride, channels] tensor.
  """
  if stage_blocks is None and depth not in DEPTHS:
    raise ValueError(f"depth must be one of {sorted(DEPTHS)}, got {depth}")
  blocks_per_stage = tuple(stage_blocks) if stage_blocks is not None else DEPTHS[depth]
  if len(blocks_per_stage) != 4:
    raise ValueError(f"stage_blocks needs 4 counts, got {stage_blocks}")
  if last_stage not in STAGE_NAMES:
    raise ValueError(f"last_stage must be one of {STAGE_NAMES}, got {last_stage!r}")
  if not 0 <= freeze_at <= 5:
    raise ValueError(f"freeze_at must be in [0, 5], got {freeze_at}")
  x = resnet_stem(images, norm=norm, trainable=freeze_at < 1, width_divisor=width_divisor)
  outputs = {}
  dim_inner = num_groups * width_per_group // width_divisor
  for index, (stage, blocks) in enumerate(zip(STAGE_NAMES, blocks_per_stage, strict=True)):
    stride = 1 if stage == "res2" else 2
    dilation = 1
    if stage == "res5" and res5_dilation > 1:
      stride, dilation = 1, res5_dilation
    x = resnet_stage(x, stage=stage, num_blocks=blocks, dim_inner=dim_inner, stride=stride,
                     num_groups=num_groups, dilation=dilation, stride_in_1x1=stride_in_1x1,
                     norm=norm, trainable=freeze_at < index + 2, width_divisor=width_divisor)
    outputs[stage] = x
    dim_inner *= 2
    if stage == last_stage:
      break
  return outputs


def build_resnet(*, depth, input_shape=(None, None, 3), name=None, **kwargs):
  """A keras.Model from images to the dict of stage outputs (`resnet_features`)."""
  images = keras.Input(shape=input_shape, name="images")
  outputs = resnet_features(images, depth=depth, **kwargs)
  groups = kwargs.get("num_groups", 1)
  default = f"resnet{depth}" if groups == 1 else (
      f"resnext{depth}_{groups}x{kwargs.get('width_per_group', 64)}d")
  return keras.Model(images, outputs, name=name or default)
