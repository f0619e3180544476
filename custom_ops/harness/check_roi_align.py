"""Checks the RoIAlign kernels through the standalone harness library (no TF).

Build the library first with ``custom_ops/harness/build.sh`` (``--cpu-only``
without CUDA); this script builds nothing. Then:

  python custom_ops/harness/check_roi_align.py            # CUDA machine
  python custom_ops/harness/check_roi_align.py --cpu-only # anywhere (numpy)

Default mode needs torch + torchvision with CUDA: on random Mask R-CNN-sized
inputs it compares our CUDA kernel (float32 and float16), our CPU kernel and
``torchvision.ops.roi_align`` (NCHW, transposed to NHWC), forward and
backward, prints the max abs differences, then a timing table (CUDA events,
median of --runs) of our CUDA kernel against torchvision's.

``--cpu-only`` compares the CPU kernel with the numpy loops below. Prints
``PASS`` and exits 0 when every difference is within tolerance.
"""

import argparse
import ctypes
import math
import pathlib
import sys

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
_F = ctypes.POINTER(ctypes.c_float)
_I = ctypes.POINTER(ctypes.c_int32)
_int, _i64, _float, _vp = ctypes.c_int, ctypes.c_int64, ctypes.c_float, ctypes.c_void_p
_SIZES = [_int, _int, _int, _int]  # batch, height, width, channels
_ATTRS = [_float, _int, _int, _int, _int]  # scale, ph, pw, sampling_ratio, aligned


def load(path):
  lib = ctypes.CDLL(str(path))
  lib.tfdet_roi_align_has_cuda.restype = _int
  lib.tfdet_roi_align_forward_cpu.argtypes = [_F, *_SIZES, _F, _I, _i64, *_ATTRS, _F]
  lib.tfdet_roi_align_backward_cpu.argtypes = [_F, *_SIZES, _F, _I, _i64, *_ATTRS, _F]
  if lib.tfdet_roi_align_has_cuda():
    lib.tfdet_roi_align_forward_cuda.argtypes = [_int, _vp, *_SIZES, _vp, _vp, _i64, *_ATTRS,
                                                 _vp, _vp]
    lib.tfdet_roi_align_backward_cuda.argtypes = [_int, _vp, *_SIZES, _vp, _vp, _i64, *_ATTRS,
                                                  _vp, _vp, _vp]
    lib.tfdet_roi_align_backward_cuda_workspace_bytes.argtypes = [_int, _i64]
    lib.tfdet_roi_align_backward_cuda_workspace_bytes.restype = _i64
    lib.tfdet_roi_align_cuda_error_string.restype = ctypes.c_char_p
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


def _numpy_samples(roi, scale, ph, pw, sr, aligned, height, width):
  """Yields (i, j, weight, y, x) of every bilinear corner, caffe2's loops."""
  if not np.all(np.isfinite(roi)):
    return
  off = 0.5 if aligned else 0.0
  x1, y1, x2, y2 = (np.float32(v) * np.float32(scale) - np.float32(off) for v in roi)
  rw, rh = x2 - x1, y2 - y1
  if not aligned:
    rw, rh = max(rw, np.float32(1)), max(rh, np.float32(1))
  bh, bw = rh / np.float32(ph), rw / np.float32(pw)
  gh = sr if sr > 0 else max(int(math.ceil(rh / ph)), 0)
  gw = sr if sr > 0 else max(int(math.ceil(rw / pw)), 0)
  count = max(gh * gw, 1)
  for i in range(ph):
    for j in range(pw):
      for iy in range(gh):
        y = float(y1 + i * bh + (iy + 0.5) * bh / gh)
        for ix in range(gw):
          x = float(x1 + j * bw + (ix + 0.5) * bw / gw)
          if y < -1.0 or y > height or x < -1.0 or x > width:
            continue
          y, x = max(y, 0.0), max(x, 0.0)
          yl, xl = int(y), int(x)
          if yl >= height - 1:
            yl = yh = height - 1
            y = float(yl)
          else:
            yh = yl + 1
          if xl >= width - 1:
            xl = xh = width - 1
            x = float(xl)
          else:
            xh = xl + 1
          ly, lx = y - yl, x - xl
          for w, yy, xx in (((1 - ly) * (1 - lx), yl, xl), ((1 - ly) * lx, yl, xh),
                            (ly * (1 - lx), yh, xl), (ly * lx, yh, xh)):
            yield i, j, w / count, yy, xx


def numpy_forward(feats, rois, bidx, ph, pw, scale, sr, aligned):
  _, h, w, c = feats.shape
  out = np.zeros((len(rois), ph, pw, c), np.float64)
  for r, roi in enumerate(rois):
    for i, j, wt, y, x in _numpy_samples(roi, scale, ph, pw, sr, aligned, h, w):
      out[r, i, j] += wt * feats[bidx[r], y, x]
  return out


def numpy_backward(grads, shape, rois, bidx, scale, sr, aligned):
  out = np.zeros(shape, np.float64)
  ph, pw = grads.shape[1:3]
  for r, roi in enumerate(rois):
    for i, j, wt, y, x in _numpy_samples(roi, scale, ph, pw, sr, aligned, shape[1], shape[2]):
      out[bidx[r], y, x] += wt * grads[r, i, j]
  return out


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


def check_cuda(lib, args):
  import torch  # pylint: disable=import-outside-toplevel
  import torchvision  # pylint: disable=import-outside-toplevel

  if not lib.tfdet_roi_align_has_cuda():
    sys.exit("the harness library was built without CUDA (build.sh without --cpu-only)")
  dev = torch.device("cuda")
  stream = lambda: ctypes.c_void_p(torch.cuda.current_stream().cuda_stream)  # noqa: E731
  rng = np.random.default_rng(0)
  # P2 of an 800x1333 image, stride 4; 512 RoIs per image.
  b, h, w, c, stride = 2, 200, 336, args.channels, 4
  feats_np, rois_np, bidx_np = random_inputs(rng, b, h, w, c, args.rois, stride)
  scale, sr, aligned = 1.0 / stride, 2, False
  rois = torch.from_numpy(rois_np).to(dev)
  bidx = torch.from_numpy(bidx_np).to(dev)
  tv_rois = torch.cat([bidx[:, None].float(), rois], dim=1)
  ok = True
  rows = []
  for size in (7, 14):
    for dtype, code, tol in ((torch.float32, 0, 1e-4), (torch.float16, 1, 2e-2)):
      feats = torch.from_numpy(feats_np).to(dev, dtype)
      nchw = feats.permute(0, 3, 1, 2).contiguous().requires_grad_(True)
      out = torch.empty((args.rois, size, size, c), device=dev, dtype=dtype)
      grad_out = torch.randn_like(out)
      gfeat = torch.empty_like(feats)
      ws = torch.empty(max(int(lib.tfdet_roi_align_backward_cuda_workspace_bytes(code, feats.numel())), 1),
                       device=dev, dtype=torch.uint8)

      def ours_fwd(feats=feats, out=out, code=code, size=size):
        rc = lib.tfdet_roi_align_forward_cuda(code, feats.data_ptr(), b, h, w, c, rois.data_ptr(),
                                              bidx.data_ptr(), args.rois, scale, size, size, sr,
                                              int(aligned), out.data_ptr(), stream())
        assert rc == 0, lib.tfdet_roi_align_cuda_error_string(rc)

      def ours_bwd(grad_out=grad_out, gfeat=gfeat, ws=ws, code=code, size=size):
        rc = lib.tfdet_roi_align_backward_cuda(code, grad_out.data_ptr(), b, h, w, c,
                                               rois.data_ptr(), bidx.data_ptr(), args.rois, scale,
                                               size, size, sr, int(aligned), gfeat.data_ptr(),
                                               ws.data_ptr(), stream())
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
      line = f"{size}x{size} {str(dtype)[6:]}: |ours - torchvision| fwd {d_tv:.2e} bwd {d_tv_g:.2e}"
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

      rows.append((f"{size}x{size} {str(dtype)[6:]}", _time(ours_fwd, args.runs),
                   _time(tv_fwd, args.runs), _time(lambda f=ours_fwd, g=ours_bwd: (f(), g()),
                                                   args.runs), _time(tv_bwd, args.runs)))
  print(f"\nRoIAlign at Mask R-CNN size: features [{b}, {h}, {w}, {c}], {args.rois} RoIs, "
        f"sampling_ratio {sr}, median of {args.runs} (ms)")
  print(f"{'case':<14} {'ours fwd':>9} {'tv fwd':>9} {'ours f+b':>9} {'tv f+b':>9} "
        f"{'speedup f+b':>12}")
  for name, of, tf_, ob, tb in rows:
    print(f"{name:<14} {of:>9.3f} {tf_:>9.3f} {ob:>9.3f} {tb:>9.3f} {tb / ob:>11.2f}x")
  return ok


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
  args = parser.parse_args()
  lib = load(args.lib)
  ok = check_cpu(lib)
  if not args.cpu_only:
    ok &= check_cuda(lib, args)
  print("PASS" if ok else "FAIL")
  sys.exit(0 if ok else 1)


if __name__ == "__main__":
  main()
