"""Feature Pyramid Network on a ResNet trunk, as Detectron builds it.

* Laterals: 1x1 conv (``channels``, with bias) on each used stage output;
  the top-down path adds the nearest-neighbour x2 upsampling of the level
  above; every level then goes through a 3x3 conv (``channels``).
* Extra levels above P5:
  - ``"maxpool"`` (RPN / R-CNN, levels up to P6): P6 = max-pool with kernel 1
    and stride 2 of P5, i.e. every other pixel of P5;
  - ``"conv"`` (RetinaNet, P6 and P7): P6 = 3x3/2 conv on C5 (res5), P7 =
    3x3/2 conv on ReLU(P6).
* Initialization: caffe2's XavierFill (uniform, variance 1 / fan_in, which is
  Keras' LeCun uniform) with zero bias, as Detectron's FPN.

Outputs are a dict ``"p2".."p7"`` of [B, H / 2**l, W / 2**l, channels]. The
input's size must be a multiple of 2**max(backbone level) for the top-down
sums to line up (the input pipeline pads to 32 or 128).
"""

import keras

from tfdet.layers.normalization import make_norm

LEVEL_OF_STAGE = {"res2": 2, "res3": 3, "res4": 4, "res5": 5}
EXTRA_LEVELS = ("maxpool", "conv")


def xavier_fill():
  """caffe2's XavierFill: uniform in +-sqrt(3 / fan_in)."""
  return keras.initializers.LecunUniform()


def _conv(x, channels, kernel, *, stride=1, name, norm):
  if kernel > 1:
    x = keras.layers.ZeroPadding2D(kernel // 2, name=name + "_pad")(x)
  x = keras.layers.Conv2D(channels, kernel, strides=stride, padding="valid",
                          use_bias=norm is None, kernel_initializer=xavier_fill(),
                          name=name)(x)
  if norm is not None:
    x = make_norm(norm, name=name + "_norm")(x)
  return x


def fpn_features(stages, *, min_level=2, max_level=6, channels=256, extra="maxpool",
                 norm=None):
  """Builds the FPN on the trunk's stage outputs.

  Args:
    stages: dict "res2".."res5" -> Keras tensors (from `resnet_features`).
    min_level: lowest pyramid level (2 for RPN / R-CNN, 3 for RetinaNet);
      only stages at or above it get laterals.
    max_level: highest level (6 for RPN / R-CNN, 7 for RetinaNet).
    channels: FPN width (Detectron: 256).
    extra: how levels above 5 are made, "maxpool" or "conv".
    norm: None, or a normalization name for GN-FPN variants.

  Returns:
    dict "p{l}" -> Keras tensor for l in [min_level, max_level].
  """
  if extra not in EXTRA_LEVELS:
    raise ValueError(f"extra must be one of {EXTRA_LEVELS}, got {extra!r}")
  if not 2 <= min_level <= 5 or max_level < 5:
    raise ValueError(f"need 2 <= min_level <= 5 <= max_level, got {min_level}, {max_level}")
  used = [s for s in ("res5", "res4", "res3", "res2") if LEVEL_OF_STAGE[s] >= min_level]
  missing = [s for s in used if s not in stages]
  if missing:
    raise ValueError(f"fpn_features needs trunk outputs {missing}")
  inner = None
  outputs = {}
  for stage in used:  # top-down: res5 first
    level = LEVEL_OF_STAGE[stage]
    lateral = _conv(stages[stage], channels, 1, name=f"fpn_inner_{stage}_lateral", norm=norm)
    if inner is None:
      inner = lateral
    else:
      up = keras.layers.UpSampling2D(2, interpolation="nearest",
                                     name=f"fpn_inner_{stage}_topdown")(inner)
      inner = keras.layers.Add(name=f"fpn_inner_{stage}_sum")([lateral, up])
    outputs[f"p{level}"] = _conv(inner, channels, 3, name=f"fpn_{stage}", norm=norm)
  if extra == "maxpool":
    x = outputs["p5"]
    for level in range(6, max_level + 1):
      x = keras.layers.MaxPooling2D(1, strides=2, padding="valid", name=f"fpn_{level}")(x)
      outputs[f"p{level}"] = x
  else:
    x = stages["res5"]
    for level in range(6, max_level + 1):
      if level > 6:
        x = keras.layers.ReLU(name=f"fpn_{level}_relu")(x)
      x = _conv(x, channels, 3, stride=2, name=f"fpn_{level}", norm=norm)
      outputs[f"p{level}"] = x
  return {f"p{level}": outputs[f"p{level}"] for level in range(min_level, max_level + 1)}
