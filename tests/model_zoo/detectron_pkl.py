"""Detectron weight files for the tests, written independently of the converter.

`Blobs` collects random float32 blobs in Caffe2's layouts under the names
Detectron's model-building code gives them (ResNet.py, FPN.py, rpn_heads.py,
fast_rcnn_heads.py, mask_rcnn_heads.py, keypoint_rcnn_heads.py,
retinanet_heads.py), written out here for the tests' tiny shapes, with each
blob's kind so that the tests can transpose it on their own (`to_keras`). The
numpy functions compute what Caffe2 computes (NCHW conv, ConvTranspose, FC).
"""

import pickle

import numpy as np

STAGE_OUT = {2: 256, 3: 512, 4: 1024, 5: 2048}


class Blobs:
  """name -> Caffe2 array, and name -> kind ("conv", "deconv", "fc", "fc6", "vector")."""

  def __init__(self, seed=0):
    self.rng = np.random.default_rng(seed)
    self.arrays = {}
    self.kinds = {}
    self.fc6_chw = None  # (C, H, W) of the box head's flattened RoI features

  def _add(self, name, shape, kind):
    assert name not in self.arrays, name
    self.arrays[name] = self.rng.standard_normal(shape).astype(np.float32)
    self.kinds[name] = kind

  def conv(self, name, cout, cin, k, bias=True):
    self._add(name + "_w", (cout, cin, k, k), "conv")
    if bias:
      self._add(name + "_b", (cout,), "vector")

  def deconv(self, name, cin, cout, k):
    self._add(name + "_w", (cin, cout, k, k), "deconv")
    self._add(name + "_b", (cout,), "vector")

  def fc(self, name, cout, cin, kind="fc"):
    self._add(name + "_w", (cout, cin), kind)
    self._add(name + "_b", (cout,), "vector")

  def affine(self, name, dim):
    self._add(name + "_s", (dim,), "vector")
    self._add(name + "_b", (dim,), "vector")

  def extra(self, name, shape):
    """A blob no tfdet variable takes (momentum, ImageNet classifier, zero conv bias, ...)."""
    self.arrays[name] = self.rng.standard_normal(shape).astype(np.float32)

  # ------------------------------------------------------------ Detectron's parts
  def resnet_stage(self, stage, blocks, dim_in, dim_inner, *, divisor, groups):
    """add_stage / add_residual_block / bottleneck_transformation: returns dim_out."""
    dim_out = STAGE_OUT[stage] // divisor
    for b in range(blocks):
      p = f"res{stage}_{b}"
      self.conv(p + "_branch2a", dim_inner, dim_in, 1, bias=False)
      self.affine(p + "_branch2a_bn", dim_inner)
      self.conv(p + "_branch2b", dim_inner, dim_inner // groups, 3, bias=False)
      self.affine(p + "_branch2b_bn", dim_inner)
      self.conv(p + "_branch2c", dim_out, dim_inner, 1, bias=False)
      self.affine(p + "_branch2c_bn", dim_out)
      if dim_in != dim_out:  # basic_bn_shortcut
        self.conv(p + "_branch1", dim_out, dim_in, 1, bias=False)
        self.affine(p + "_branch1_bn", dim_out)
      dim_in = dim_out
    return dim_out

  def resnet(self, stage_blocks, *, divisor, groups=1, width_per_group=64, last_stage=5):
    """add_ResNet_convX_body with basic_bn_stem: returns {stage: channels}."""
    stem = 64 // divisor
    self.conv("conv1", stem, 3, 7, bias=False)
    self.affine("res_conv1_bn", stem)
    dims, dim_in = {}, stem
    inner = groups * width_per_group // divisor
    for stage, blocks in zip(range(2, last_stage + 1), stage_blocks, strict=False):
      dim_in = dims[stage] = self.resnet_stage(stage, blocks, dim_in, inner, divisor=divisor,
                                               groups=groups)
      inner *= 2
    return dims

  def fpn(self, dims, last_blocks, fpn_dim, *, min_level=2, retinanet=False):
    """add_fpn (+ EXTRA_CONV_LEVELS for RetinaNet)."""
    stages = [s for s in (5, 4, 3, 2) if s >= min_level]
    for i, s in enumerate(stages):
      inner = f"fpn_inner_res{s}_{last_blocks[s]}_sum"
      self.conv(inner if i == 0 else inner + "_lateral", fpn_dim, dims[s], 1)
      self.conv(f"fpn_res{s}_{last_blocks[s]}_sum", fpn_dim, fpn_dim, 3)
    if retinanet:
      self.conv("fpn_6", fpn_dim, dims[5], 3)
      self.conv("fpn_7", fpn_dim, fpn_dim, 3)

  def rpn(self, dim, num_anchors, suffix=""):
    """add_single_scale_rpn_outputs (suffix "") or add_fpn_rpn_outputs (suffix "_fpn2")."""
    self.conv("conv_rpn" + suffix, dim, dim, 3)
    self.conv("rpn_cls_logits" + suffix, num_anchors, dim, 1)
    self.conv("rpn_bbox_pred" + suffix, 4 * num_anchors, dim, 1)

  def fast_rcnn_outputs(self, dim, num_classes):
    self.fc("cls_score", num_classes, dim)
    self.fc("bbox_pred", 4 * num_classes, dim)

  def mlp_head(self, dim_in, roi, hidden):
    """add_roi_2mlp_head: fc6 reads the (C, H, W)-flattened RoI features."""
    self.fc("fc6", hidden, dim_in * roi * roi, kind="fc6")
    self.fc6_chw = (dim_in, roi, roi)
    self.fc("fc7", hidden, hidden)

  def mask_fpn_head(self, dim_in, dim, num_convs, num_classes):
    """mask_rcnn_fcn_head_v1upXconvs + add_mask_rcnn_outputs."""
    for i in range(num_convs):
      self.conv(f"_[mask]_fcn{i + 1}", dim, dim_in if i == 0 else dim, 3)
    self.deconv("conv5_mask", dim, dim, 2)
    self.conv("mask_fcn_logits", num_classes, dim, 1)

  def mask_c4_head(self, dim_res5, dim, num_classes):
    """mask_rcnn_fcn_head_v0upshare: conv5_mask on the box head's res5 output."""
    self.deconv("conv5_mask", dim_res5, dim, 2)
    self.conv("mask_fcn_logits", num_classes, dim, 1)

  def keypoint_head(self, dim_in, dim, num_convs, num_keypoints):
    """add_roi_pose_head_v1convX + add_keypoint_outputs (USE_DECONV_OUTPUT, UP_SCALE 2)."""
    for i in range(num_convs):
      self.conv(f"conv_fcn{i + 1}", dim, dim_in if i == 0 else dim, 3)
    self.deconv("kps_score_lowres", dim, num_keypoints, 4)
    # BilinearInterpolation's ConvTranspose: saved, never trained.
    kernel = np.zeros((num_keypoints, num_keypoints, 4, 4), np.float32)
    og = np.ogrid[:4, :4]
    kernel[range(num_keypoints), range(num_keypoints)] = (
        (1 - abs(og[0] - 1.5) / 2) * (1 - abs(og[1] - 1.5) / 2))
    self.arrays["kps_score_w"] = kernel
    self.arrays["kps_score_b"] = np.zeros(num_keypoints, np.float32)

  def retinanet_head(self, dim, num_convs, num_anchors, num_fg_classes, level=3):
    """add_fpn_retinanet_outputs: towers and predictors on the lowest level, shared."""
    for tower in ("cls", "bbox"):
      for i in range(num_convs):
        self.conv(f"retnet_{tower}_conv_n{i}_fpn{level}", dim, dim, 3)
    self.conv(f"retnet_cls_pred_fpn{level}", num_anchors * num_fg_classes, dim, 3)
    self.conv(f"retnet_bbox_pred_fpn{level}", num_anchors * 4, dim, 3)

  def trained_extras(self, names):
    """What a trained model's file also holds: the momentum of (some of) its blobs."""
    for name in names:
      self.extra(name + "_momentum", self.arrays[name].shape)

  def write(self, path, *, cfg="MODEL:\n  TYPE: generalized_rcnn\n", flat=False):
    data = self.arrays if flat else {"blobs": self.arrays, "cfg": cfg}
    with open(path, "wb") as f:
      pickle.dump(data, f, protocol=2)
    return path


def to_keras(kind, blob, chw=None):
  """The tests' own transpose of a Caffe2 blob into tfdet's layout."""
  if kind in ("conv", "deconv"):  # [O, I, kh, kw] / [I, O, kh, kw] -> [kh, kw, I, O] / [.., O, I]
    return blob.transpose(2, 3, 1, 0)
  if kind == "fc":
    return blob.T
  if kind == "fc6":  # columns (c, y, x) -> rows (y, x, c)
    c, h, w = chw
    return blob.reshape(-1, c, h, w).transpose(2, 3, 1, 0).reshape(h * w * c, -1)
  return blob


def conv_nchw(x, w, b=None, *, stride=1, pad=0, groups=1):
  """Caffe2's Conv: x [N, C, H, W], w [O, C / groups, kh, kw]."""
  n, _, h, wd = x.shape
  cout, cin_g, kh, kw = w.shape
  xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad))).astype(np.float64)
  oh, ow = (h + 2 * pad - kh) // stride + 1, (wd + 2 * pad - kw) // stride + 1
  out = np.zeros((n, cout, oh, ow))
  og = cout // groups
  for g in range(groups):
    xs = xp[:, g * cin_g:(g + 1) * cin_g]
    for ky in range(kh):
      for kx in range(kw):
        patch = xs[:, :, ky:ky + stride * (oh - 1) + 1:stride, kx:kx + stride * (ow - 1) + 1:stride]
        out[:, g * og:(g + 1) * og] += np.einsum("nchw,oc->nohw", patch,
                                                 w[g * og:(g + 1) * og, :, ky, kx])
  return out if b is None else out + b[None, :, None, None]


def conv_transpose_nchw(x, w, b, *, stride, pad):
  """Caffe2's ConvTranspose: x [N, I, H, W], w [I, O, kh, kw]; output pixel
  (s y - pad + ky, s x - pad + kx) gathers input (y, x) times w[:, :, ky, kx]."""
  n, _, h, wd = x.shape
  _, cout, kh, kw = w.shape
  full = np.zeros((n, cout, stride * (h - 1) + kh, stride * (wd - 1) + kw))
  for ky in range(kh):
    for kx in range(kw):
      full[:, :, ky:ky + stride * (h - 1) + 1:stride, kx:kx + stride * (wd - 1) + 1:stride] += (
          np.einsum("nihw,io->nohw", x.astype(np.float64), w[:, :, ky, kx]))
  fh, fw = full.shape[2:]
  return full[:, :, pad:fh - pad, pad:fw - pad] + b[None, :, None, None]


def fc(x, w, b):
  """Caffe2's FC: x [N, ...] flattened in its own (C, H, W) order, w [out, in]."""
  return x.reshape(len(x), -1).astype(np.float64) @ w.T + b
