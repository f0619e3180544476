"""RoIAlign (Mask R-CNN): the custom op's Python wrapper and its gradients.

Features are NHWC. RoIs are ``(x1, y1, x2, y2)`` in input-image pixels, mapped
to a feature map by ``spatial_scale`` (1 / stride). ``aligned=False`` is
Detectron's variant (no half-pixel shift, RoI size clamped to >= 1);
``aligned=True`` is detectron2's. ``sampling_ratio`` is the number of
bilinear samples per bin and axis (0: ``ceil(roi size / output size)`` per
RoI). RoIs with a NaN or infinite coordinate give zeros and no gradient.
Gradients flow to the features only.

``implementation="custom"`` runs the compiled kernels (CPU, and CUDA when
built; loaded on first use), ``"reference"`` the pure-TF version of
``roi_align_ref.py``.
"""

import tensorflow as tf

from tfdet.ops import custom_ops
from tfdet.ops.roi_align_ref import multilevel_roi_align_ref, roi_align_ref


def _output_size(output_size):
  """(pooled_height, pooled_width) from an int or a pair, each >= 1."""
  if isinstance(output_size, int):
    output_size = (output_size, output_size)
  try:
    ph, pw = (int(v) for v in output_size)
  except (TypeError, ValueError) as e:
    raise ValueError(f"output_size must be an int or a pair of ints, got {output_size!r}") from e
  if ph < 1 or pw < 1:
    raise ValueError(f"output_size must be >= 1, got {output_size!r}")
  return ph, pw


def _as_tensor(value, dtypes, name):
  """`value` as a tensor of one of `dtypes` (Python values take the first)."""
  if not tf.is_tensor(value):
    try:
      value = tf.convert_to_tensor(value, dtypes[0])
    except (TypeError, ValueError) as e:
      raise TypeError(f"{name} must be convertible to {dtypes[0].name}: {e}") from e
  if value.dtype not in dtypes:
    raise TypeError(f"{name} must be {' or '.join(d.name for d in dtypes)}, got {value.dtype.name}")
  return value


def _kernel_dtype(features):
  """The dtype the kernels run `features` in: bfloat16 (mixed_bfloat16 models) has no kernel
  and runs in float32, as does float16 where no GPU is visible (the CPU kernels are float32
  only); the result is cast back to the features' dtype."""
  if features.dtype == tf.bfloat16:
    return tf.float32
  if features.dtype == tf.float16 and not tf.config.list_logical_devices("GPU"):
    return tf.float32
  return features.dtype


def _check_sampling_ratio(sampling_ratio):
  if int(sampling_ratio) != sampling_ratio or sampling_ratio < 0:
    raise ValueError(f"sampling_ratio must be an int >= 0, got {sampling_ratio!r}")
  return int(sampling_ratio)


def roi_align(features, rois, batch_indices, *, output_size, spatial_scale, sampling_ratio=2,
              aligned=False, implementation="custom"):
  """Pools a fixed-size feature grid for each RoI.

  Args:
    features: [B, H, W, C] float32, float16 or bfloat16 (float16 runs in float16 on a GPU;
      bfloat16, and float16 with no GPU, run in float32).
    rois: [R, 4] float32 (x1, y1, x2, y2) in input-image pixels.
    batch_indices: [R] int32 in [0, B), the image of each RoI.
    output_size: int or (pooled_height, pooled_width), each >= 1.
    spatial_scale: feature-map pixels per image pixel (1 / stride).
    sampling_ratio: samples per bin and axis, >= 0 (0 = adaptive).
    aligned: False = Detectron, True = detectron2 (half-pixel shift).
    implementation: "custom" (compiled op) or "reference" (pure TF).

  Returns:
    [R, pooled_height, pooled_width, C], the dtype of `features`.
  """
  custom_ops.check_implementation(implementation)
  ph, pw = _output_size(output_size)
  sampling_ratio = _check_sampling_ratio(sampling_ratio)
  features = _as_tensor(features, (tf.float32, tf.float16, tf.bfloat16), "features")
  rois = _as_tensor(rois, (tf.float32,), "rois")
  batch_indices = _as_tensor(batch_indices, (tf.int32,), "batch_indices")
  dtype, run_dtype = features.dtype, _kernel_dtype(features)
  features = tf.cast(features, run_dtype)
  if implementation == "reference":
    pooled = roi_align_ref(features, rois, batch_indices, output_size=(ph, pw),
                           spatial_scale=spatial_scale, sampling_ratio=sampling_ratio,
                           aligned=aligned)
  else:
    pooled = custom_ops.load().tfdet_roi_align(
        features=features, rois=rois, batch_indices=batch_indices,
        spatial_scale=float(spatial_scale), pooled_height=ph, pooled_width=pw,
        sampling_ratio=sampling_ratio, aligned=bool(aligned))
  return tf.cast(pooled, dtype)


def multilevel_roi_align(features, rois, batch_indices, levels, *, output_size, spatial_scales,
                         sampling_ratio=2, aligned=False, implementation="custom"):
  """RoIAlign over a feature pyramid: each RoI is pooled from its own level.

  Args:
    features: list of N tensors [B, H_l, W_l, C] (same B and C).
    rois: [R, 4] float32 (x1, y1, x2, y2) in input-image pixels.
    batch_indices: [R] int32 in [0, B).
    levels: [R] int32 in [0, N), index into `features` (not the FPN level
      number: P2..P5 are 0..3 when features = [P2, ..., P5]).
    output_size: int or (pooled_height, pooled_width).
    spatial_scales: N floats, 1 / stride of each level.
    sampling_ratio, aligned, implementation: as in `roi_align`.

  Returns:
    [R, pooled_height, pooled_width, C].
  """
  custom_ops.check_implementation(implementation)
  ph, pw = _output_size(output_size)
  sampling_ratio = _check_sampling_ratio(sampling_ratio)
  features = [_as_tensor(f, (tf.float32, tf.float16, tf.bfloat16), f"features[{i}]")
              for i, f in enumerate(features)]
  rois = _as_tensor(rois, (tf.float32,), "rois")
  batch_indices = _as_tensor(batch_indices, (tf.int32,), "batch_indices")
  levels = _as_tensor(levels, (tf.int32,), "levels")
  spatial_scales = [float(s) for s in spatial_scales]
  if not features:
    raise ValueError("features must hold at least one feature map")
  if len(spatial_scales) != len(features):
    raise ValueError(f"spatial_scales has {len(spatial_scales)} entries but features has "
                     f"{len(features)}")
  dtype, run_dtype = features[0].dtype, _kernel_dtype(features[0])
  features = [tf.cast(f, run_dtype) for f in features]
  if implementation == "reference":
    pooled = multilevel_roi_align_ref(features, rois, batch_indices, levels,
                                      output_size=(ph, pw), spatial_scales=spatial_scales,
                                      sampling_ratio=sampling_ratio, aligned=aligned)
  else:
    pooled = custom_ops.load().tfdet_multi_level_roi_align(
        features=features, rois=rois, batch_indices=batch_indices, levels=levels,
        spatial_scales=spatial_scales, pooled_height=ph, pooled_width=pw,
        sampling_ratio=sampling_ratio, aligned=bool(aligned))
  return tf.cast(pooled, dtype)


def _attrs(op):
  return dict(pooled_height=op.get_attr("pooled_height"),
              pooled_width=op.get_attr("pooled_width"),
              sampling_ratio=op.get_attr("sampling_ratio"), aligned=op.get_attr("aligned"))


@tf.RegisterGradient("TfdetRoiAlign")
def _roi_align_grad(op, grad):
  features, rois, batch_indices = op.inputs
  grad_features = custom_ops.load().tfdet_roi_align_grad(
      grads=grad, rois=rois, batch_indices=batch_indices,
      features_shape=tf.shape(features, out_type=tf.int32),
      spatial_scale=op.get_attr("spatial_scale"), **_attrs(op))
  return [grad_features, None, None]


@tf.RegisterGradient("TfdetMultiLevelRoiAlign")
def _multilevel_roi_align_grad(op, grad):
  n = op.get_attr("N")
  features = op.inputs[:n]
  rois, batch_indices, levels = op.inputs[n:]
  grads = custom_ops.load().tfdet_multi_level_roi_align_grad(
      grads=grad, rois=rois, batch_indices=batch_indices, levels=levels,
      features_shapes=[tf.shape(f, out_type=tf.int32) for f in features],
      spatial_scales=op.get_attr("spatial_scales"), **_attrs(op))
  return list(grads) + [None, None, None]
