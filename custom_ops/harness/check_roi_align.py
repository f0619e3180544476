"""Checks the RoIAlign kernels through the standalone harness library (no TF).

Build the library first with ``custom_ops/harness/build.sh`` (``--cpu-only``
without CUDA); this script builds nothing. Then:

  python custom_ops/harness/check_roi_align.py            # CUDA machine
  python custom_ops/harness/check_roi_align.py --cpu-only # anywhere (numpy)

(``custom_ops/harness/run_gpu_checks.sh`` builds the library and runs this,
check_proposals.py and a compute-sanitizer pass on a small case.)

``--cpu-only`` compares the CPU kernels with the numpy loops of roi_align_numpy.py: the
single-level op, and the multi-level op (4 maps of different sizes, one of
them without RoIs, 3 images, 37 channels, RoIs shuffled across images and
levels, plus RoIs with an out-of-range level or image and a NaN one).

Default mode also needs torch + torchvision with CUDA. On random Mask
R-CNN-sized inputs (2 images of 800x1344, 256 channels, 1024 RoIs,
sampling_ratio 2) it compares, forward and backward, printing the max abs
differences:

* single level, P2 (stride 4), aligned False: our CUDA kernel (float32 and
  float16) with our CPU kernel and ``torchvision.ops.roi_align`` (NCHW,
  transposed to NHWC);
* multi-level, FPN P2-P5 (strides 4, 8, 16, 32), each RoI on level
  floor(4 + log2(sqrt(area) / 224)) clipped to [2, 5], at 7x7 and 14x14,
  aligned False and True, float32 and float16: our CUDA multi-level kernel
  with our CPU multi-level kernel (float32) and with
  ``torchvision.ops.roi_align`` run level by level on that level's RoIs,
  scattered back in RoI order (backward by autograd).

In float16 the torchvision reference runs in float32 on the same
float16-rounded features and output gradient, with the float32 RoIs our
kernel reads.

Then one timing table (CUDA events, median of --runs): ours against
torchvision, forward and forward + backward; for the multi-level rows
torchvision is the per-level loop above (its level split precomputed, only
the roi_align calls and the gather back into RoI order are timed) and, for
aligned False (it has no ``aligned`` option), also
``torchvision.ops.MultiScaleRoIAlign``. That one assigns levels itself with
the same FPN rule (plus an eps of 1e-6): the RoIs are drawn with
log2(sqrt(area)) at least 0.05 away from every level boundary, so its
assignment equals ours, which the float32 row checks (printed, not part of
PASS; in float16 it maps float16-rounded boxes, so a few RoIs may move to a
neighbouring level: timing only). Its output is in image order, which does
not change the work.

Each time is printed beside its memory floor: the bytes that must move
divided by the device-to-device copy bandwidth measured in the same run
(``Tensor.copy_`` of --copy-mib MiB, 2 x bytes / median time):

* forward: the output written, plus the feature pixels the RoIs read, each
  pixel (all its channels) counted once however many RoIs read it (the
  exact set of pixels the bilinear samples touch, counted in numpy; not the
  upper bound "every feature byte"), plus the RoIs, batch indices and levels;
* backward: every feature-gradient byte written (the kernels overwrite all
  of it, zeros included), plus the output gradient read, plus the RoIs etc.;
* forward + backward: their sum.

It is a lower bound for any implementation, not a target: it assumes each
byte crosses DRAM once (no re-reads of pixels shared by RoIs, atomics kept
in cache) and ignores our float16 backward's float32 workspace.

Prints ``PASS`` and exits 0 only when every difference is within tolerance.
"""

import argparse
import ctypes
import pathlib
import sys

import numpy as np
from roi_align_numpy import (
  floor_bytes,
  level_rois,
  numpy_backward,
  numpy_backward_ml,
  numpy_forward,
  numpy_forward_ml,
)

HERE = pathlib.Path(__file__).resolve().parent
_F = ctypes.POINTER(ctypes.c_float)
_I = ctypes.POINTER(ctypes.c_int32)
_int, _i64, _float, _vp = ctypes.c_int, ctypes.c_int64, ctypes.c_float, ctypes.c_void_p
_IP, _FP, _VPP = ctypes.POINTER(_int), ctypes.POINTER(_float), ctypes.POINTER(_vp)
_SIZES = [_int, _int, _int, _int]  # batch, height, width, channels
_ATTRS = [_float, _int, _int, _int, _int]  # scale, ph, pw, sampling_ratio, aligned
# Multi-level: heights, widths, spatial_scales, num_levels, batch, channels.
_LEVELS = [_IP, _IP, _FP, _int, _int, _int]
_ML_ATTRS = [_int, _int, _int, _int]  # ph, pw, sampling_ratio, aligned
MAX_LEVELS = 8  # kRoiAlignCudaMaxLevels
FPN_STRIDES = (4, 8, 16, 32)  # P2-P5
DEVICE = "cuda"  # of the CUDA checks' torch tensors


def load(path):
  lib = ctypes.CDLL(str(path))
  lib.tfdet_roi_align_has_cuda.restype = _int
  lib.tfdet_roi_align_forward_cpu.argtypes = [_F, *_SIZES, _F, _I, _i64, *_ATTRS, _F]
  lib.tfdet_roi_align_backward_cpu.argtypes = [_F, *_SIZES, _F, _I, _i64, *_ATTRS, _F]
  lib.tfdet_roi_align_multilevel_forward_cpu.argtypes = [ctypes.POINTER(_F), *_LEVELS, _F, _I,
                                                         _I, _i64, *_ML_ATTRS, _F]
  lib.tfdet_roi_align_multilevel_backward_cpu.argtypes = [_F, *_LEVELS, _F, _I, _I, _i64,
                                                          *_ML_ATTRS, ctypes.POINTER(_F)]
  if lib.tfdet_roi_align_has_cuda():
    lib.tfdet_roi_align_forward_cuda.argtypes = [_int, _vp, *_SIZES, _vp, _vp, _i64, *_ATTRS,
                                                 _vp, _vp]
    lib.tfdet_roi_align_backward_cuda.argtypes = [_int, _vp, *_SIZES, _vp, _vp, _i64, *_ATTRS,
                                                  _vp, _vp, _vp]
    lib.tfdet_roi_align_backward_cuda_workspace_bytes.argtypes = [_int, _i64]
    lib.tfdet_roi_align_backward_cuda_workspace_bytes.restype = _i64
    lib.tfdet_roi_align_cuda_error_string.restype = ctypes.c_char_p
    lib.tfdet_roi_align_multilevel_forward_cuda.argtypes = [_int, _VPP, *_LEVELS, _vp, _vp, _vp,
                                                            _i64, *_ML_ATTRS, _vp, _vp]
    lib.tfdet_roi_align_multilevel_backward_cuda.argtypes = [_int, _vp, *_LEVELS, _vp, _vp, _vp,
                                                             _i64, *_ML_ATTRS, _VPP, _vp, _vp]
    lib.tfdet_roi_align_multilevel_backward_cuda_workspace_bytes.argtypes = [_int, _IP, _IP,
                                                                             _int, _int, _int]
    lib.tfdet_roi_align_multilevel_backward_cuda_workspace_bytes.restype = _i64
  return lib


def _ptr(a, kind):
  return a.ctypes.data_as(kind)


def cpu_forward(lib, feats, rois, bidx, ph, pw, scale, sr, aligned):
  """feats [B, H, W, C] float32 -> [R, ph, pw, C] via the CPU kernel."""
  feats, rois = np.ascontiguousarray(feats, np.float32), np.ascontiguousarray(rois, np.float32)
  bidx = np.ascontiguousarray(bidx, np.int32)
  out = np.empty((len(rois), ph, pw, feats.shape[3]), np.float32)
  rc = lib.tfdet_roi_align_forward_cpu(_ptr(feats, _F), *feats.shape, _ptr(rois, _F),
                                       _ptr(bidx, _I), len(rois), scale, ph, pw, sr,
                                       int(aligned), _ptr(out, _F))
  assert rc == 0, rc
  return out


def cpu_backward(lib, grads, shape, rois, bidx, scale, sr, aligned):
  grads = np.ascontiguousarray(grads, np.float32)
  rois, bidx = np.ascontiguousarray(rois, np.float32), np.ascontiguousarray(bidx, np.int32)
  out = np.empty(shape, np.float32)
  rc = lib.tfdet_roi_align_backward_cpu(_ptr(grads, _F), *shape, _ptr(rois, _F), _ptr(bidx, _I),
                                        len(rois), scale, grads.shape[1], grads.shape[2], sr,
                                        int(aligned), _ptr(out, _F))
  assert rc == 0, rc
  return out


def _level_arrays(shapes, scales):
  """ctypes arrays of the per-level heights, widths and spatial scales."""
  n = len(shapes)
  return ((_int * n)(*[s[1] for s in shapes]), (_int * n)(*[s[2] for s in shapes]),
          (_float * n)(*[float(v) for v in scales]))


def _rois_args(rois, bidx, levels):
  return (np.ascontiguousarray(rois, np.float32), np.ascontiguousarray(bidx, np.int32),
          np.ascontiguousarray(levels, np.int32))


def cpu_forward_ml_rc(lib, feats, rois, bidx, levels, ph, pw, scales, sr, aligned,
                      num_levels=None):
  """Multi-level CPU kernel: feats[l] [B, H_l, W_l, C] float32, RoI r pooled from level
  levels[r] -> (return code, output [R, ph, pw, C]). num_levels (default len(feats)) is what
  the shim is told, to check that it rejects bad values."""
  feats = [np.ascontiguousarray(f, np.float32) for f in feats]
  rois, bidx, levels = _rois_args(rois, bidx, levels)
  b, c = feats[0].shape[0], feats[0].shape[3]
  out = np.full((len(rois), ph, pw, c), np.nan, np.float32)  # every element must be written
  ptrs = (_F * len(feats))(*[_ptr(f, _F) for f in feats])
  rc = lib.tfdet_roi_align_multilevel_forward_cpu(
      ptrs, *_level_arrays([f.shape for f in feats], scales),
      len(feats) if num_levels is None else num_levels, b, c, _ptr(rois, _F), _ptr(bidx, _I),
      _ptr(levels, _I), len(rois), ph, pw, sr, int(aligned), _ptr(out, _F))
  return rc, out


def cpu_forward_ml(lib, feats, rois, bidx, levels, ph, pw, scales, sr, aligned):
  rc, out = cpu_forward_ml_rc(lib, feats, rois, bidx, levels, ph, pw, scales, sr, aligned)
  assert rc == 0, rc
  return out


def cpu_backward_ml_rc(lib, grads, shapes, rois, bidx, levels, scales, sr, aligned,
                       num_levels=None):
  """grads [R, ph, pw, C] -> (return code, [grad of level l: shapes[l]])."""
  grads = np.ascontiguousarray(grads, np.float32)
  rois, bidx, levels = _rois_args(rois, bidx, levels)
  outs = [np.full(shape, np.nan, np.float32) for shape in shapes]  # must be overwritten
  ptrs = (_F * len(outs))(*[_ptr(o, _F) for o in outs])
  rc = lib.tfdet_roi_align_multilevel_backward_cpu(
      _ptr(grads, _F), *_level_arrays(shapes, scales),
      len(shapes) if num_levels is None else num_levels, shapes[0][0], shapes[0][3],
      _ptr(rois, _F), _ptr(bidx, _I), _ptr(levels, _I), len(rois), grads.shape[1],
      grads.shape[2], sr, int(aligned), ptrs)
  return rc, outs


def cpu_backward_ml(lib, grads, shapes, rois, bidx, levels, scales, sr, aligned):
  rc, outs = cpu_backward_ml_rc(lib, grads, shapes, rois, bidx, levels, scales, sr, aligned)
  assert rc == 0, rc
  return outs


def random_inputs(rng, batch, height, width, channels, num_rois, stride):
  feats = rng.standard_normal((batch, height, width, channels)).astype(np.float32)
  img_h, img_w = height * stride, width * stride
  xy = rng.uniform(-0.1, 1.0, (num_rois, 2)) * [img_w, img_h]
  wh = rng.uniform(0.0, 0.5, (num_rois, 2)) * [img_w, img_h]
  rois = np.concatenate([xy, xy + wh], axis=1).astype(np.float32)
  bidx = rng.integers(0, batch, num_rois).astype(np.int32)
  return feats, rois, bidx


def check_cpu(lib):
  rng = np.random.default_rng(0)
  ok = True
  feats, rois, bidx = random_inputs(rng, 2, 9, 12, 5, 16, 8)
  rois[0] = [-40.0, -30.0, 200.0, 150.0]  # crosses every border
  rois[1] = [3.0, 3.0, 3.5, 3.2]  # tiny
  rois[2] = [np.nan, 0.0, 5.0, 5.0]  # non-finite: zeros
  print("single-level CPU")
  print(f"{'aligned':>8} {'sampling':>8} {'fwd max|diff|':>14} {'bwd max|diff|':>14}")
  for aligned in (False, True):
    for sr in (0, 2):
      kw = dict(scale=0.125, sr=sr, aligned=aligned)
      ours = cpu_forward(lib, feats, rois, bidx, 4, 3, **kw)
      want = numpy_forward(feats, rois, bidx, 4, 3, **kw)
      grads = rng.standard_normal(ours.shape).astype(np.float32)
      ours_b = cpu_backward(lib, grads, feats.shape, rois, bidx, **kw)
      want_b = numpy_backward(grads, feats.shape, rois, bidx, **kw)
      df, db = np.abs(ours - want).max(), np.abs(ours_b - want_b).max()
      print(f"{aligned!s:>8} {sr:>8} {df:>14.3e} {db:>14.3e}")
      ok &= bool(df < 1e-4 and db < 1e-4 and np.all(ours[2] == 0))
  return ok


def check_cpu_multilevel(lib):
  """Multi-level CPU kernel vs the numpy loops, level by level."""
  rng = np.random.default_rng(1)
  batch, channels, img_h, img_w, num_rois = 3, 37, 50, 70, 28
  strides = (4, 8, 16, 32)  # maps 13x18, 7x9, 4x5, 2x3; no RoI on the last one
  shapes = [(batch, -(-img_h // s), -(-img_w // s), channels) for s in strides]
  scales = [1.0 / s for s in strides]
  feats = [rng.standard_normal(shape).astype(np.float32) for shape in shapes]
  xy = rng.uniform(-0.1, 1.0, (num_rois, 2)) * [img_w, img_h]
  wh = rng.uniform(0.0, 0.6, (num_rois, 2)) * [img_w, img_h]
  rois = np.concatenate([xy, xy + wh], axis=1).astype(np.float32)
  bidx = rng.integers(0, batch, num_rois).astype(np.int32)
  levels = rng.integers(0, 3, num_rois).astype(np.int32)
  rois[0], levels[0] = [-20.0, -15.0, 90.0, 70.0], 2  # crosses every border of its map
  rois[1], levels[1] = [3.0, 3.0, 3.5, 3.2], 0  # tiny
  levels[2] = len(strides)  # level out of range: zeros, no gradient
  bidx[3] = batch  # image out of range: zeros, no gradient
  rois[4] = [np.nan, 0.0, 5.0, 5.0]  # non-finite: zeros
  skipped = [2, 3, 4]
  counts = "/".join(str(int(np.sum((levels == lvl) & (bidx < batch))))
                    for lvl in range(len(strides)))
  print(f"\nmulti-level CPU: maps {', '.join(f'{s[1]}x{s[2]}' for s in shapes)}, {batch} images, "
        f"{channels} channels, {num_rois} RoIs (per level {counts}; {len(skipped)} skipped)")
  print(f"{'aligned':>8} {'sampling':>8} {'fwd max|diff|':>14} {'bwd max|diff|':>14}")
  ok = True
  for aligned in (False, True):
    for sr in (0, 2):
      kw = dict(scales=scales, sr=sr, aligned=aligned)
      ours = cpu_forward_ml(lib, feats, rois, bidx, levels, 3, 4, **kw)
      want = numpy_forward_ml(feats, rois, bidx, levels, 3, 4, **kw)
      grads = rng.standard_normal(ours.shape).astype(np.float32)
      ours_b = cpu_backward_ml(lib, grads, shapes, rois, bidx, levels, **kw)
      want_b = numpy_backward_ml(grads, shapes, rois, bidx, levels, **kw)
      # NaN (an element left unwritten) makes np.max NaN and the check below False.
      df = float(np.abs(ours - want).max())
      db = float(np.max([np.abs(o - w).max() for o, w in zip(ours_b, want_b, strict=True)]))
      print(f"{aligned!s:>8} {sr:>8} {df:>14.3e} {db:>14.3e}")
      ok &= bool(df < 1e-4 and db < 1e-4 and np.all(ours[skipped] == 0))
  # The shims reject a level count outside [1, MAX_LEVELS] before reading any array.
  for n in (0, MAX_LEVELS + 1):
    rc_f, _ = cpu_forward_ml_rc(lib, feats, rois, bidx, levels, 3, 4, scales, 2, False,
                                num_levels=n)
    rc_b, _ = cpu_backward_ml_rc(lib, np.zeros((num_rois, 3, 4, channels), np.float32), shapes,
                                 rois, bidx, levels, scales, 2, False, num_levels=n)
    print(f"num_levels {n}: return codes {rc_f}, {rc_b} (want -1)")
    ok &= rc_f == -1 and rc_b == -1
  return ok


def _stream():
  import torch  # pylint: disable=import-outside-toplevel

  return ctypes.c_void_p(torch.cuda.current_stream().cuda_stream)


def _dtype_name(dtype):
  return {"torch.float32": "fp32", "torch.float16": "fp16"}[str(dtype)]


def copy_bandwidth(mib, runs):
  """Device-to-device copy bandwidth in bytes per ms: 2 x bytes / median time of
  ``Tensor.copy_`` (every byte read once and written once)."""
  import torch  # pylint: disable=import-outside-toplevel

  n = mib << 20
  buffers = [torch.ones(n, dtype=torch.uint8, device=DEVICE) for _ in range(2)]
  ms = _time(lambda: buffers[1].copy_(buffers[0]), runs)
  buffers.clear()
  torch.cuda.empty_cache()
  return 2 * n / ms


def check_cuda(lib, args):
  """CUDA checks, single level then multi-level, then one timing table."""
  import torch  # pylint: disable=import-outside-toplevel

  if not lib.tfdet_roi_align_has_cuda():
    sys.exit("the harness library was built without CUDA (build.sh without --cpu-only)")
  torch.manual_seed(0)
  bandwidth = copy_bandwidth(args.copy_mib, max(args.runs, 10))
  ok, rows = check_cuda_single(lib, args)
  ok_ml, rows_ml = check_cuda_multilevel(lib, args)
  print_table(rows + rows_ml, bandwidth, args)
  return ok and ok_ml


def check_cuda_single(lib, args):
  """Single level (P2): CUDA vs CPU kernel vs torchvision; returns (ok, timing rows)."""
  import torch  # pylint: disable=import-outside-toplevel
  import torchvision  # pylint: disable=import-outside-toplevel

  dev = torch.device(DEVICE)
  rng = np.random.default_rng(0)
  # P2 of 800x1344 (800x1333 padded to a multiple of 32), stride 4.
  b, h, w, c, stride = 2, 200, 336, args.channels, 4
  feats_np, rois_np, bidx_np = random_inputs(rng, b, h, w, c, args.rois, stride)
  scale, sr, aligned = 1.0 / stride, 2, False
  rois = torch.from_numpy(rois_np).to(dev)
  bidx = torch.from_numpy(bidx_np).to(dev)
  tv_rois = torch.cat([bidx[:, None].float(), rois], dim=1)
  print(f"\nsingle level: features [{b}, {h}, {w}, {c}], {args.rois} RoIs, sampling_ratio {sr}, "
        "aligned False")
  ok = True
  rows = []
  for size in (7, 14):
    floor_args = ([(b, h, w, c)], [scale], rois_np, bidx_np, np.zeros(len(rois_np), np.int32),
                  size, size, sr, aligned)
    for dtype, code, tol in ((torch.float32, 0, 1e-4), (torch.float16, 1, 2e-2)):
      feats = torch.from_numpy(feats_np).to(dev, dtype)
      nchw = feats.permute(0, 3, 1, 2).contiguous().requires_grad_(True)
      out = torch.empty((args.rois, size, size, c), device=dev, dtype=dtype)
      grad_out = torch.randn_like(out)
      gfeat = torch.empty_like(feats)
      ws_bytes = int(lib.tfdet_roi_align_backward_cuda_workspace_bytes(code, feats.numel()))
      ws = torch.empty(max(ws_bytes, 1), device=dev, dtype=torch.uint8)

      def ours_fwd(feats=feats, out=out, code=code, size=size):
        rc = lib.tfdet_roi_align_forward_cuda(code, feats.data_ptr(), b, h, w, c, rois.data_ptr(),
                                              bidx.data_ptr(), args.rois, scale, size, size, sr,
                                              int(aligned), out.data_ptr(), _stream())
        assert rc == 0, lib.tfdet_roi_align_cuda_error_string(rc)

      def ours_bwd(grad_out=grad_out, gfeat=gfeat, ws=ws, code=code, size=size):
        rc = lib.tfdet_roi_align_backward_cuda(code, grad_out.data_ptr(), b, h, w, c,
                                               rois.data_ptr(), bidx.data_ptr(), args.rois, scale,
                                               size, size, sr, int(aligned), gfeat.data_ptr(),
                                               ws.data_ptr(), _stream())
        assert rc == 0, lib.tfdet_roi_align_cuda_error_string(rc)

      # torchvision wants the RoIs in the features' dtype: fp16 RoIs (timing only) would
      # move the boxes, so the reference is torchvision in float32 on the same fp16-rounded
      # features and output gradient, with the float32 RoIs our kernel reads.
      tv_rois_dtype = tv_rois.to(dtype)

      def tv_fwd(nchw=nchw, size=size, rois_=tv_rois_dtype):
        return torchvision.ops.roi_align(nchw, rois_, size, scale, sr, aligned)

      tv_grad_out = grad_out.permute(0, 3, 1, 2).contiguous()
      ref_in = nchw.detach().float().requires_grad_(True)
      ref_out = torchvision.ops.roi_align(ref_in, tv_rois, size, scale, sr, aligned)
      ref_out.backward(tv_grad_out.float())
      tv_fwd().backward(tv_grad_out)  # traces torchvision's own-dtype path once
      ours_fwd()
      ours_bwd()
      torch.cuda.synchronize()
      want = ref_out.detach().permute(0, 2, 3, 1)
      want_g = ref_in.grad.permute(0, 2, 3, 1)
      d_tv = (out.float() - want).abs().max().item()
      d_tv_g = (gfeat.float() - want_g).abs().max().item()
      line = (f"P2 {size}x{size} {_dtype_name(dtype)} unaligned: |ours - torchvision| "
              f"fwd {d_tv:.2e} bwd {d_tv_g:.2e}")
      if dtype == torch.float32:
        cpu = cpu_forward(lib, feats_np, rois_np, bidx_np, size, size, scale, sr, aligned)
        cpu_g = cpu_backward(lib, grad_out.cpu().numpy(), feats_np.shape, rois_np, bidx_np, scale,
                             sr, aligned)
        d_cpu = np.abs(out.cpu().numpy() - cpu).max()
        d_cpu_g = np.abs(gfeat.cpu().numpy() - cpu_g).max()
        line += f"; |cuda - cpu| fwd {d_cpu:.2e} bwd {d_cpu_g:.2e}"
        ok &= bool(d_cpu < tol and d_cpu_g < 1e-3)
      print(line)
      ok &= bool(d_tv < tol and d_tv_g < (1e-3 if code == 0 else 0.1))

      def tv_bwd(nchw=nchw, tv_grad_out=tv_grad_out, tv_fwd=tv_fwd):
        nchw.grad = None
        tv_fwd().backward(tv_grad_out)

      rows.append({
          "case": f"P2 {size}x{size} {_dtype_name(dtype)} unaligned",
          "floor": floor_bytes(*floor_args, itemsize=feats.element_size(), multilevel=False),
          "impls": [("ours", _time(ours_fwd, args.runs),
                     _time(lambda f=ours_fwd, g=ours_bwd: (f(), g()), args.runs)),
                    ("torchvision", _time(tv_fwd, args.runs), _time(tv_bwd, args.runs))],
      })
  return ok, rows


def fpn_levels(rois):
  """Index into P2-P5 of floor(4 + log2(sqrt(area) / 224)) clipped to [2, 5]."""
  r = rois.astype(np.float64)
  area = (r[:, 2] - r[:, 0]) * (r[:, 3] - r[:, 1])
  k = np.floor(4.0 + np.log2(np.sqrt(area) / 224.0))
  return (np.clip(k, 2, 5) - 2).astype(np.int32)


def fpn_inputs(rng, batch, img_h, img_w, channels, num_rois):
  """P2-P5 features of a batch of img_h x img_w images and RoIs over them: sqrt(area)
  log-uniform in [16, 640], aspect ratio in [1/2, 2], centres uniform over the image, images
  and levels mixed in RoI order. log2(sqrt(area)) stays at least 0.05 away from every level
  boundary, so that any rounding of the level rule (ours, MultiScaleRoIAlign's) agrees."""
  shapes = [(batch, -(-img_h // s), -(-img_w // s), channels) for s in FPN_STRIDES]
  feats = [rng.standard_normal(shape, dtype=np.float32) for shape in shapes]
  side = np.exp(rng.uniform(np.log(16.0), np.log(640.0), num_rois))
  k = 4.0 + np.log2(side / 224.0)
  frac = k - np.floor(k)
  side *= np.where(frac < 0.05, 2.0**0.1, np.where(frac > 0.95, 2.0**-0.1, 1.0))
  aspect = np.sqrt(np.exp(rng.uniform(np.log(0.5), np.log(2.0), num_rois)))
  w, h = side * aspect, side / aspect
  cx, cy = rng.uniform(0, img_w, num_rois), rng.uniform(0, img_h, num_rois)
  rois = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1).astype(np.float32)
  bidx = rng.integers(0, batch, num_rois).astype(np.int32)
  return feats, shapes, rois, bidx, fpn_levels(rois)


def _tv_levels(feats, level_rois, inv, size, scales, sr, aligned):
  """torchvision.ops.roi_align level by level (feats NCHW, level_rois [K_l, 5]), outputs
  gathered back into RoI order by `inv`."""
  import torch  # pylint: disable=import-outside-toplevel
  import torchvision  # pylint: disable=import-outside-toplevel

  outs = [torchvision.ops.roi_align(f, r, size, s, sr, aligned)
          for f, r, s in zip(feats, level_rois, scales, strict=True)]
  return torch.cat(outs)[inv]


def check_cuda_multilevel(lib, args):
  """FPN P2-P5: CUDA multi-level vs CPU multi-level vs torchvision per level; returns
  (ok, timing rows)."""
  import torch  # pylint: disable=import-outside-toplevel
  import torchvision  # pylint: disable=import-outside-toplevel

  dev = torch.device(DEVICE)
  rng = np.random.default_rng(2)
  b, img_h, img_w, c, n, sr = 2, 800, 1344, args.channels, args.rois, 2
  feats_np, shapes, rois_np, bidx_np, levels_np = fpn_inputs(rng, b, img_h, img_w, c, n)
  num_levels = len(shapes)
  scales = [1.0 / s for s in FPN_STRIDES]
  level_idx = level_rois(levels_np, bidx_np, num_levels, b)
  assert sum(len(i) for i in level_idx) == n
  print(f"\nmulti-level: FPN P2-P5 of {b} x {img_h}x{img_w}, maps "
        f"{', '.join(f'{s[1]}x{s[2]}' for s in shapes)}, {c} channels, {n} RoIs (per level "
        f"{'/'.join(str(len(i)) for i in level_idx)}), sampling_ratio {sr}")
  heights, widths, c_scales = _level_arrays(shapes, scales)
  rois = torch.from_numpy(rois_np).to(dev)
  bidx = torch.from_numpy(bidx_np).to(dev)
  levels = torch.from_numpy(levels_np).to(dev)
  tv_rois = torch.cat([bidx[:, None].float(), rois], dim=1)
  tv_level_rois = [tv_rois[torch.from_numpy(i).to(dev)] for i in level_idx]
  inv = torch.from_numpy(np.argsort(np.concatenate(level_idx), kind="stable")).to(dev)
  # MultiScaleRoIAlign takes one box list per image and answers in that order.
  image_idx = [np.flatnonzero(bidx_np == i) for i in range(b)]
  image_order = torch.from_numpy(np.concatenate(image_idx)).to(dev)
  per_dtype = {}
  for dtype, code in ((torch.float32, 0), (torch.float16, 1)):
    feats = [torch.from_numpy(f).to(dev, dtype) for f in feats_np]
    grads = [torch.empty_like(f) for f in feats]
    ws_bytes = int(lib.tfdet_roi_align_multilevel_backward_cuda_workspace_bytes(
        code, heights, widths, num_levels, b, c))
    assert ws_bytes >= 0, ws_bytes
    per_dtype[dtype] = {
        "feats": feats, "grads": grads,
        "feat_ptrs": (_vp * num_levels)(*[f.data_ptr() for f in feats]),
        "grad_ptrs": (_vp * num_levels)(*[g.data_ptr() for g in grads]),
        "ws": torch.empty(max(ws_bytes, 1), device=dev, dtype=torch.uint8),
        "nchw": [f.permute(0, 3, 1, 2).contiguous().requires_grad_(True) for f in feats],
        "tv_rois": [r.to(dtype) for r in tv_level_rois],
        "ms_boxes": [rois[torch.from_numpy(i).to(dev)].to(dtype) for i in image_idx],
    }
  ok = True
  rows = []
  for size in (7, 14):
    for aligned in (False, True):
      for dtype, code, tol in ((torch.float32, 0, 1e-4), (torch.float16, 1, 2e-2)):
        d = per_dtype[dtype]
        out = torch.empty((n, size, size, c), device=dev, dtype=dtype)
        grad_out = torch.randn_like(out)
        tv_grad_out = grad_out.permute(0, 3, 1, 2).contiguous()
        attrs = (size, size, sr, int(aligned))

        def ours_fwd(d=d, out=out, code=code, attrs=attrs):
          rc = lib.tfdet_roi_align_multilevel_forward_cuda(
              code, d["feat_ptrs"], heights, widths, c_scales, num_levels, b, c, rois.data_ptr(),
              bidx.data_ptr(), levels.data_ptr(), n, *attrs, out.data_ptr(), _stream())
          assert rc == 0, lib.tfdet_roi_align_cuda_error_string(rc)

        def ours_bwd(d=d, grad_out=grad_out, code=code, attrs=attrs):
          rc = lib.tfdet_roi_align_multilevel_backward_cuda(
              code, grad_out.data_ptr(), heights, widths, c_scales, num_levels, b, c,
              rois.data_ptr(), bidx.data_ptr(), levels.data_ptr(), n, *attrs, d["grad_ptrs"],
              d["ws"].data_ptr(), _stream())
          assert rc == 0, lib.tfdet_roi_align_cuda_error_string(rc)

        def tv_fwd(d=d, size=size, aligned=aligned):
          return _tv_levels(d["nchw"], d["tv_rois"], inv, size, scales, sr, aligned)

        def tv_bwd(d=d, tv_fwd=tv_fwd, tv_grad_out=tv_grad_out):
          for x in d["nchw"]:
            x.grad = None
          tv_fwd().backward(tv_grad_out)

        # Reference: torchvision in float32 (on the fp16-rounded inputs for fp16).
        ref_in = [x.detach().float().requires_grad_(True) for x in d["nchw"]]
        ref_out = _tv_levels(ref_in, tv_level_rois, inv, size, scales, sr, aligned)
        ref_out.backward(tv_grad_out.float())
        tv_bwd()  # traces torchvision's own-dtype path once
        ours_fwd()
        ours_bwd()
        torch.cuda.synchronize()
        d_tv = (out.float() - ref_out.detach().permute(0, 2, 3, 1)).abs().max().item()
        d_tv_g = float(np.max([(g.float() - r.grad.permute(0, 2, 3, 1)).abs().max().item()
                               for g, r in zip(d["grads"], ref_in, strict=True)]))
        name = f"P2-P5 {size}x{size} {_dtype_name(dtype)} {'aligned' if aligned else 'unaligned'}"
        line = f"{name}: |ours - torchvision| fwd {d_tv:.2e} bwd {d_tv_g:.2e}"
        if dtype == torch.float32:
          cpu = cpu_forward_ml(lib, feats_np, rois_np, bidx_np, levels_np, size, size, scales, sr,
                               aligned)
          cpu_g = cpu_backward_ml(lib, grad_out.cpu().numpy(), shapes, rois_np, bidx_np,
                                  levels_np, scales, sr, aligned)
          d_cpu = float(np.abs(out.cpu().numpy() - cpu).max())
          d_cpu_g = float(np.max([np.abs(g.cpu().numpy() - cg).max()
                                  for g, cg in zip(d["grads"], cpu_g, strict=True)]))
          line += f"; |cuda - cpu| fwd {d_cpu:.2e} bwd {d_cpu_g:.2e}"
          ok &= bool(d_cpu < tol and d_cpu_g < 1e-3)
        print(line)
        ok &= bool(d_tv < tol and d_tv_g < (1e-3 if code == 0 else 0.1))

        impls = [("ours", _time(ours_fwd, args.runs),
                  _time(lambda f=ours_fwd, g=ours_bwd: (f(), g()), args.runs)),
                 ("torchvision per level", _time(tv_fwd, args.runs), _time(tv_bwd, args.runs))]
        if not aligned:
          impls += _time_multiscale(torchvision, d, out, tv_grad_out, image_order, size, sr,
                                    (img_h, img_w), b, dtype == torch.float32, args.runs)
        rows.append({"case": name,
                     "floor": floor_bytes(shapes, scales, rois_np, bidx_np, levels_np, size, size,
                                          sr, aligned, itemsize=out.element_size(),
                                          multilevel=True),
                     "impls": impls})
  return ok, rows


def _time_multiscale(torchvision, d, out, tv_grad_out, image_order, size, sr, image_size, batch,
                     compare, runs):
  """Timings of torchvision.ops.MultiScaleRoIAlign on the same features and RoIs (aligned
  False); with `compare`, prints its max abs difference from our output `out` (information,
  not part of PASS). Returns [] with a note when it cannot run."""
  try:
    x = {f"p{k + 2}": t for k, t in enumerate(d["nchw"])}  # P2, P3, ...
    pooler = torchvision.ops.MultiScaleRoIAlign(list(x), size, sr)
    image_shapes = [image_size] * batch
    grad = tv_grad_out[image_order]

    def ms_fwd():
      return pooler(x, d["ms_boxes"], image_shapes)

    def ms_bwd():
      for t in d["nchw"]:
        t.grad = None
      ms_fwd().backward(grad)

    if compare:
      diff = (ms_fwd().detach() - out.permute(0, 3, 1, 2)[image_order]).abs().max().item()
      print(f"  |ours - MultiScaleRoIAlign| fwd {diff:.2e} (same level assignment if ~1e-6; "
            "information, not part of PASS)")
    return [("tv MultiScaleRoIAlign", _time(ms_fwd, runs), _time(ms_bwd, runs))]
  except Exception as e:  # pylint: disable=broad-except  # noqa: BLE001
    print(f"  MultiScaleRoIAlign skipped: {e!r}")
    return []


def print_table(rows, bandwidth, args):
  """The timing table: each time beside its memory floor (bytes / copy bandwidth)."""
  import torch  # pylint: disable=import-outside-toplevel

  print(f"\nTimings: median of {args.runs} runs (CUDA events), {torch.cuda.get_device_name()}, "
        f"{args.rois} RoIs, {args.channels} channels, sampling_ratio 2")
  print(f"copy bandwidth {bandwidth / 1e6:.0f} GB/s (device-to-device Tensor.copy_ of "
        f"{args.copy_mib} MiB: 2 x bytes / median time, this run)")
  print("floor = bytes that must move / copy bandwidth. fwd: output written + feature pixels the "
        "RoIs read (exact set, each pixel once; not all feature bytes) + RoIs; bwd: all "
        "feature-gradient bytes written + output gradient read + RoIs; f+b: their sum")
  print("floor column: fwd/f+b MB that must move; xfloor = time / floor; vs ours = f+b time / "
        "our f+b time")
  head = (f"{'case':<27} {'impl':<22} {'fwd ms':>9} {'xfloor':>8} {'f+b ms':>9} {'xfloor':>8} "
          f"{'vs ours':>8}")
  print(head)
  print("-" * len(head))
  for row in rows:
    fwd_bytes, fb_bytes = row["floor"]
    fwd_floor, fb_floor = fwd_bytes / bandwidth, fb_bytes / bandwidth
    label = f"floor {fwd_bytes / 1e6:.1f}/{fb_bytes / 1e6:.1f} MB"
    print(f"{row['case']:<27} {label:<22} {fwd_floor:>9.4f} {'':>8} {fb_floor:>9.4f}")
    ours_fb = row["impls"][0][2]
    for name, fwd, fb in row["impls"]:
      vs = "" if name == "ours" else f"{fb / ours_fb:.2f}x"
      print(f"{'':<27} {name:<22} {fwd:>9.4f} {fwd / fwd_floor:>8.1f} {fb:>9.4f} "
            f"{fb / fb_floor:>8.1f} {vs:>8}".rstrip())


def _time(fn, runs):
  import torch  # pylint: disable=import-outside-toplevel

  for _ in range(3):
    fn()
  times = []
  for _ in range(runs):
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    fn()
    end.record()
    end.synchronize()
    times.append(start.elapsed_time(end))
  return float(np.median(times))


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--cpu-only", action="store_true", help="CPU kernel vs numpy only")
  parser.add_argument("--lib", default=str(HERE / "build" / "libtfdet_kernels.so"))
  parser.add_argument("--runs", type=int, default=20)
  parser.add_argument("--rois", type=int, default=1024)
  parser.add_argument("--channels", type=int, default=256)
  parser.add_argument("--copy-mib", type=int, default=1024,
                      help="buffer size of the copy-bandwidth measurement")
  args = parser.parse_args()
  lib = load(args.lib)
  ok = check_cpu(lib)
  ok &= check_cpu_multilevel(lib)
  if not args.cpu_only:
    ok &= check_cuda(lib, args)
  print("PASS" if ok else "FAIL")
  sys.exit(0 if ok else 1)


if __name__ == "__main__":
  main()
