"""How a Detectron (Caffe2, NCHW) weight blob is laid out, and the same weight in Keras.

Every weight of a converted model has one `Layout`, which turns the blob
into the Keras variable's value (`to_keras`), back (`to_caffe2`: the exact
inverse, a permutation of the same numbers), and gives the blob shape a
Keras shape implies (`caffe2_shape`), so that a file of another model is
refused by shape before anything is assigned:

* ``CONV``: Caffe2's Conv weight ``[out, in / groups, kh, kw]`` -> Keras
  Conv2D ``[kh, kw, in / groups, out]``. Both split the channels into
  contiguous groups (group g: input channels ``g * in / groups ...``, output
  channels ``g * out / groups ...``), so a grouped (ResNeXt) conv needs no
  more than the transpose.
* ``DECONV``: Caffe2's ConvTranspose weight ``[in, out, kh, kw]`` -> Keras
  Conv2DTranspose ``[kh, kw, out, in]``. Both scatter input pixel
  ``(y, x)`` to output ``(s y - pad + ky, s x - pad + kx)`` with the kernel
  unflipped; Keras' "same" padding for kernel 4 stride 2 crops 1 pixel per
  side (Detectron's pad 1) and "valid" for kernel 2 stride 2 none (pad 0).
* ``FC``: Caffe2's FC weight ``[out, in]`` -> Keras Dense ``[in, out]``.
* ``FLATTEN_FC``: an FC on a flattened feature map (the box head's fc6).
  Caffe2 flattens an NCHW map in (c, y, x) order, tfdet's NHWC map flattens
  in (y, x, c): the Dense kernel's input rows are the blob's columns
  permuted, ``kernel[(y W + x) C + c, o] = blob[o, (c H + y) W + x]``.
* ``VECTOR``: biases and per-channel scales, ``[n]`` in both.
"""

import dataclasses

import numpy as np

CONV = "conv"
DECONV = "deconv"
FC = "fc"
FLATTEN_FC = "flatten_fc"
VECTOR = "vector"
KINDS = (CONV, DECONV, FC, FLATTEN_FC, VECTOR)


@dataclasses.dataclass(frozen=True)
class Layout:
  """A weight's layout (module docstring).

  Attributes:
    kind: one of `KINDS`.
    feature_shape: (H, W, C) of the flattened map, for ``FLATTEN_FC`` only.
  """
  kind: str
  feature_shape: tuple = None

  def __post_init__(self):
    if self.kind not in KINDS:
      raise ValueError(f"layout kind must be one of {KINDS}, got {self.kind!r}")
    if (self.kind == FLATTEN_FC) != (self.feature_shape is not None):
      raise ValueError("feature_shape (H, W, C) is given for flatten_fc layouts only")

  def caffe2_shape(self, keras_shape):
    """The blob shape a Keras variable of `keras_shape` takes (a tuple)."""
    shape = tuple(int(d) for d in keras_shape)
    rank = {CONV: 4, DECONV: 4, FC: 2, FLATTEN_FC: 2, VECTOR: 1}[self.kind]
    if len(shape) != rank:
      raise ValueError(f"a {self.kind} variable has rank {rank}, got shape {shape}")
    if self.kind == CONV:
      kh, kw, cin, cout = shape
      return (cout, cin, kh, kw)
    if self.kind == DECONV:
      kh, kw, cout, cin = shape
      return (cin, cout, kh, kw)
    if self.kind == FLATTEN_FC:
      h, w, c = self.feature_shape
      if shape[0] != h * w * c:
        raise ValueError(f"a flatten_fc kernel over {self.feature_shape} has {h * w * c} "
                         f"input rows, got shape {shape}")
    if self.kind in (FC, FLATTEN_FC):
      return (shape[1], shape[0])
    return shape

  def to_keras(self, blob):
    """The Keras value of a Caffe2 blob (numpy, same dtype)."""
    blob = np.asarray(blob)
    if self.kind == CONV:
      return np.ascontiguousarray(blob.transpose(2, 3, 1, 0))
    if self.kind == DECONV:
      return np.ascontiguousarray(blob.transpose(2, 3, 1, 0))
    if self.kind == FC:
      return np.ascontiguousarray(blob.T)
    if self.kind == FLATTEN_FC:
      h, w, c = self.feature_shape
      out = blob.shape[0]
      # [out, C, H, W] -> [H, W, C, out] -> [H*W*C, out]
      return np.ascontiguousarray(
          blob.reshape(out, c, h, w).transpose(2, 3, 1, 0).reshape(h * w * c, out))
    return blob.copy()

  def to_caffe2(self, value):
    """The Caffe2 blob of a Keras value: the inverse of `to_keras`."""
    value = np.asarray(value)
    if self.kind == CONV:
      return np.ascontiguousarray(value.transpose(3, 2, 0, 1))
    if self.kind == DECONV:
      return np.ascontiguousarray(value.transpose(3, 2, 0, 1))
    if self.kind == FC:
      return np.ascontiguousarray(value.T)
    if self.kind == FLATTEN_FC:
      h, w, c = self.feature_shape
      out = value.shape[1]
      # [H*W*C, out] -> [H, W, C, out] -> [out, C, H, W] -> [out, C*H*W]
      return np.ascontiguousarray(
          value.reshape(h, w, c, out).transpose(3, 2, 0, 1).reshape(out, c * h * w))
    return value.copy()
