"""Checks the proposal kernels through the standalone harness library.

Build the library first (CPATH lets the host compiler see the CUDA headers):

  CPATH=$CUDA_HOME/include custom_ops/harness/build.sh        # CPU + CUDA
  custom_ops/harness/build.sh --cpu-only                      # CPU only

then:

  python custom_ops/harness/check_proposals.py --cpu-only
      CPU kernel (ctypes) vs a numpy implementation; no TF, torch or GPU.
  python custom_ops/harness/check_proposals.py
      needs CUDA, torch and torchvision: 2 images 800x1333 (padded to
      800x1344) over P2-P6 in the train (2000/2000/2000 per batch) and test
      (1000/1000/1000 per image) settings. Compares our CUDA op with our CPU
      op, our NMS stage with torchvision.ops.nms, and prints a timing table
      (median ms, CUDA events) of ours vs a torch/torchvision pipeline
      (topk + decode + clip/filter + batched_nms + collect).
Exits non-zero when a comparison fails.
"""

import argparse
import ctypes
import functools
import math
import pathlib
import sys

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
LIB = HERE / "build" / "libtfdet_kernels.so"
CLIP = math.log(1000.0 / 16.0)
STRIDES = (4, 8, 16, 32, 64)
SIZES = (32, 64, 128, 256, 512)
SETTINGS = {"train": (2000, 2000, 2000, True), "test": (1000, 1000, 1000, False)}

_P = ctypes.c_void_p
_I64 = ctypes.c_int64
_F = ctypes.c_float
_INT = ctypes.c_int


def load_lib():
  lib = ctypes.CDLL(str(LIB))
  common = [_I64, _INT, ctypes.POINTER(_P), ctypes.POINTER(_P), ctypes.POINTER(_P),
            ctypes.POINTER(_I64), _P, _I64, _I64, _F, _F, _INT, _F, _I64, _INT, _P, _P, _P]
  lib.tfdet_proposals_cpu.argtypes = common
  lib.tfdet_proposals_cpu.restype = _INT
  if lib.tfdet_proposals_has_cuda():
    lib.tfdet_proposals_cuda_workspace.argtypes = [_I64, _INT, ctypes.POINTER(_I64), _I64,
                                                   _I64, _I64, _INT]
    lib.tfdet_proposals_cuda_workspace.restype = ctypes.c_size_t
    lib.tfdet_proposals_cuda.argtypes = common + [_P, ctypes.c_size_t, _P]
    lib.tfdet_proposals_cuda.restype = _INT
  return lib


def cell_anchors(stride, size, ratios=(0.5, 1.0, 2.0)):
  """Detectron's quantized anchors of one size: [len(ratios), 4]."""
  base = np.array([0, 0, stride - 1, stride - 1], np.float64)
  w, h = base[2] - base[0] + 1, base[3] - base[1] + 1
  cx, cy = base[0] + 0.5 * (w - 1), base[1] + 0.5 * (h - 1)
  out = []
  for r in ratios:
    ws = np.round(np.sqrt(w * h / r))
    hs = np.round(ws * r)
    ws, hs = ws * size / stride, hs * size / stride
    out.append([cx - 0.5 * (ws - 1), cy - 0.5 * (hs - 1), cx + 0.5 * (ws - 1), cy + 0.5 * (hs - 1)])
  return np.asarray(out, np.float32)


def grid(cell, stride, h, w):
  """[h * w * A, 4] anchors ordered (y, x, a)."""
  ys, xs = np.meshgrid(np.arange(h) * stride, np.arange(w) * stride, indexing="ij")
  shifts = np.stack([xs, ys, xs, ys], -1).astype(np.float32)
  return (shifts[:, :, None, :] + cell[None, None]).reshape(-1, 4)


def make_inputs(batch, feature_sizes, seed, scale_delta=0.5):
  """Random scores [B, H, W, 3], deltas [B, H, W, 12] and anchors per level."""
  rng = np.random.default_rng(seed)
  levels = []
  for (h, w), stride, size in zip(feature_sizes, STRIDES, SIZES, strict=False):
    s = rng.random((batch, h, w, 3), np.float32)
    d = rng.normal(0, scale_delta, (batch, h, w, 12)).astype(np.float32)
    levels.append((s, d, grid(cell_anchors(stride, size), stride, h, w)))
  return levels


# ---------------------------------------------------------------- numpy model
def _decode_filter(a, d, info, min_size, off, clip):
  """Step 3-4 on [k, 4] arrays (float32, Detectron's arithmetic) -> boxes, ok."""
  f = np.float32
  aw = a[:, 2] - a[:, 0] + f(off)
  ah = a[:, 3] - a[:, 1] + f(off)
  acx, acy = a[:, 0] + f(0.5) * aw, a[:, 1] + f(0.5) * ah
  cx, cy = d[:, 0] * aw + acx, d[:, 1] * ah + acy
  w = np.exp(np.minimum(d[:, 2], f(clip))) * aw
  h = np.exp(np.minimum(d[:, 3], f(clip))) * ah
  b = np.stack([cx - f(0.5) * w, cy - f(0.5) * h, cx + f(0.5) * w - f(off),
                cy + f(0.5) * h - f(off)], 1)
  ok = np.isfinite(a).all(1) & np.isfinite(d).all(1) & np.isfinite(b).all(1)
  lim = np.array([info[1], info[0], info[1], info[0]], np.float32) - f(off)
  b = np.maximum(np.minimum(b, lim), f(0))
  bw, bh = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
  if off:
    m = f(max(min_size, 1.0))
    ok &= (bw / info[2] + f(1) >= m) & (bh / info[2] + f(1) >= m)
  else:
    ok &= (bw / info[2] > f(min_size)) & (bh / info[2] > f(min_size))
  ok &= (b[:, 0] + (bw + f(off)) / f(2) < info[1]) & (b[:, 1] + (bh + f(off)) / f(2) < info[0])
  ok &= bool(np.all(info > 0) and np.all(np.isfinite(info)))
  return b, ok


def nms_numpy(boxes, thresh, off, limit):
  """Greedy NMS of boxes already in score order; returns kept positions."""
  keep = []
  for i in range(len(boxes)):
    if len(keep) == limit:
      break
    if keep:
      k = boxes[keep]
      iw = np.minimum(k[:, 2], boxes[i, 2]) - np.maximum(k[:, 0], boxes[i, 0]) + off
      ih = np.minimum(k[:, 3], boxes[i, 3]) - np.maximum(k[:, 1], boxes[i, 1]) + off
      inter = np.where((iw > 0) & (ih > 0), iw * ih, 0)
      area = lambda x: (x[..., 2] - x[..., 0] + off) * (x[..., 3] - x[..., 1] + off)  # noqa: E731
      iou = inter / (area(k) + area(boxes[i]) - inter)
      if np.any(iou > thresh):
        continue
    keep.append(i)
  return keep


def proposals_numpy(levels, info, pre, post, nms, min_size, legacy, collect, per_batch):
  """The op's semantics in numpy: (rois [B, C, 4], scores [B, C], num [B])."""
  batch, off = info.shape[0], 1.0 if legacy else 0.0
  entries = []  # (score, image, level, rank, box)
  for b in range(batch):
    for li, (s, d, a) in enumerate(levels):
      sc, dl = s[b].reshape(-1), d[b].reshape(-1, 4)
      idx = np.nonzero(np.isfinite(sc))[0]
      idx = idx[np.lexsort((idx, -sc[idx]))]
      k = min(pre, sc.size) if pre > 0 else sc.size
      idx = idx[:k]
      boxes, ok = _decode_filter(a[idx], dl[idx], info[b], min_size, off, CLIP)
      boxes, scores = boxes[ok], sc[idx][ok]
      limit = min(post, k) if post > 0 else k
      for r, i in enumerate(nms_numpy(boxes, nms, off, limit)):
        entries.append((-scores[i], b, li, r, boxes[i], scores[i]))
  entries.sort(key=lambda e: e[:4])
  if per_batch:
    entries = entries[:collect]
  rois = np.zeros((batch, collect, 4), np.float32)
  out_scores = np.zeros((batch, collect), np.float32)
  num = np.zeros(batch, np.int32)
  for e in entries:
    b = e[1]
    if num[b] < collect:
      rois[b, num[b]], out_scores[b, num[b]] = e[4], e[5]
      num[b] += 1
  return rois, out_scores, num


def _ptrs(arrays):
  return (_P * len(arrays))(*[a.ctypes.data for a in arrays])


def proposals_cpu(lib, levels, info, pre, post, nms, min_size, legacy, collect, per_batch):
  """Runs the CPU kernel through ctypes on numpy inputs."""
  batch = info.shape[0]
  s = [np.ascontiguousarray(x[0], np.float32) for x in levels]
  d = [np.ascontiguousarray(x[1], np.float32) for x in levels]
  a = [np.ascontiguousarray(x[2], np.float32) for x in levels]
  m = (_I64 * len(levels))(*[x.shape[0] for x in a])
  info = np.ascontiguousarray(info, np.float32)
  rois = np.zeros((batch, collect, 4), np.float32)
  scores = np.zeros((batch, collect), np.float32)
  num = np.zeros(batch, np.int32)
  rc = lib.tfdet_proposals_cpu(batch, len(levels), _ptrs(s), _ptrs(d), _ptrs(a), m,
                               info.ctypes.data, pre, post, nms, min_size, int(legacy), CLIP,
                               collect, int(per_batch), rois.ctypes.data, scores.ctypes.data,
                               num.ctypes.data)
  assert rc == 0, rc
  return rois, scores, num


def compare(name, got, want, atol=1e-3):
  """Prints and returns whether (rois, scores, num) agree."""
  num_ok = np.array_equal(got[2], want[2])
  box_diff = float(np.abs(got[0] - want[0]).max()) if got[0].size else 0.0
  score_diff = float(np.abs(got[1] - want[1]).max()) if got[1].size else 0.0
  ok = num_ok and box_diff <= atol and score_diff <= atol
  print(f"{name:<44} num {'==' if num_ok else '!='} max|d rois| {box_diff:.2e} "
        f"max|d scores| {score_diff:.2e} {'OK' if ok else 'MISMATCH'}")
  return ok


def check_cpu(lib):
  """CPU kernel vs numpy on small random cases (both conventions, both
  collection modes, N = 1 and 5, an empty level, border crossing boxes and
  non-finite inputs)."""
  ok = True
  sizes = [(20, 34), (10, 17), (0, 9), (3, 5), (2, 3)]
  info = np.array([[80.0, 133.0, 1.0], [70.0, 120.0, 0.5]], np.float32)
  for seed, (legacy, per_batch, n) in enumerate(
      [(True, False, 5), (True, True, 5), (False, False, 5), (False, True, 5), (True, False, 1)]):
    levels = make_inputs(2, sizes[:n], seed, scale_delta=1.0)
    if seed == 0:  # non-finite scores, deltas and anchors
      levels[0][0][0, 0, 0, :2] = [np.nan, np.inf]
      levels[0][1][0, 1, 1, 2] = np.nan
      levels[0][2][5] = np.inf
    args = (300, 100, 0.7, 1.0, legacy, 400, per_batch)
    got = proposals_cpu(lib, levels, info, *args)
    want = proposals_numpy(levels, info, *args)
    ok &= compare(f"cpu vs numpy legacy={legacy} per_batch={per_batch} N={n}", got, want)
  return ok


# ------------------------------------------------------------------- CUDA side
class CudaProposals:
  """Our CUDA launchers on torch device tensors (ctypes, torch's stream)."""

  def __init__(self, lib, levels, info, pre, post, nms, min_size, legacy, collect, per_batch):
    import torch  # pylint: disable=import-outside-toplevel
    self.torch, self.lib = torch, lib
    dev = torch.device("cuda")
    self.t = [[torch.from_numpy(np.ascontiguousarray(x)).to(dev) for x in lv] for lv in levels]
    self.info = torch.from_numpy(np.ascontiguousarray(info, np.float32)).to(dev)
    batch = info.shape[0]
    self.rois = torch.zeros((batch, collect, 4), device=dev)
    self.scores = torch.zeros((batch, collect), device=dev)
    self.num = torch.zeros((batch,), dtype=torch.int32, device=dev)
    n = len(levels)
    self.m = (_I64 * n)(*[lv[2].shape[0] for lv in levels])
    self.ptrs = [(_P * n)(*[lv[j].data_ptr() for lv in self.t]) for j in range(3)]
    nbytes = lib.tfdet_proposals_cuda_workspace(batch, n, self.m, pre, post, collect,
                                                int(per_batch))
    self.ws = torch.empty(max(nbytes, 1), dtype=torch.uint8, device=dev)
    self.args = (pre, post, nms, min_size, int(legacy), CLIP, collect, int(per_batch))
    self.batch, self.n, self.nbytes = batch, n, nbytes

  def launch(self):
    rc = self.lib.tfdet_proposals_cuda(
        self.batch, self.n, *self.ptrs, self.m, self.info.data_ptr(), *self.args,
        self.rois.data_ptr(), self.scores.data_ptr(), self.num.data_ptr(), self.ws.data_ptr(),
        self.nbytes, self.torch.cuda.current_stream().cuda_stream)
    assert rc == 0, f"CUDA error {rc}"

  def __call__(self):
    self.launch()
    self.torch.cuda.synchronize()
    return self.rois.cpu().numpy(), self.scores.cpu().numpy(), self.num.cpu().numpy()


def torch_pipeline(tlevels, info, pre, post, nms, collect, per_batch):
  """topk + decode + clip/filter + torchvision batched_nms over levels per
  image (detectron2's find_top_rpn_proposals, "+1" boxes) + collect."""
  import torch  # pylint: disable=import-outside-toplevel
  import torchvision  # pylint: disable=import-outside-toplevel
  batch = info.shape[0]
  boxes_all, scores_all, lvl_all = [], [], []
  for li, (s, d, a) in enumerate(tlevels):
    sc = s.reshape(batch, -1)
    k = min(pre, sc.shape[1])
    top, idx = sc.topk(k, dim=1)
    dl = torch.gather(d.reshape(batch, -1, 4), 1, idx[..., None].expand(-1, -1, 4))
    an = a[idx]
    aw, ah = an[..., 2] - an[..., 0] + 1, an[..., 3] - an[..., 1] + 1
    cx, cy = dl[..., 0] * aw + an[..., 0] + 0.5 * aw, dl[..., 1] * ah + an[..., 1] + 0.5 * ah
    w, h = dl[..., 2].clamp(max=CLIP).exp() * aw, dl[..., 3].clamp(max=CLIP).exp() * ah
    b = torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w - 1, cy + 0.5 * h - 1], -1)
    lim = torch.stack([info[:, 1], info[:, 0], info[:, 1], info[:, 0]], -1)[:, None] - 1
    b = torch.minimum(b, lim).clamp(min=0)
    boxes_all.append(b)
    scores_all.append(top)
    lvl_all.append(torch.full_like(top, li, dtype=torch.int64))
  boxes, scores, lvls = (torch.cat(x, 1) for x in (boxes_all, scores_all, lvl_all))
  out = []
  for i in range(batch):
    b, s, lv = boxes[i], scores[i], lvls[i]
    ok = ((b[:, 2] - b[:, 0] + 1 >= 1) & (b[:, 3] - b[:, 1] + 1 >= 1)).nonzero()[:, 0]
    plus = b[ok] + torch.tensor([0.0, 0.0, 1.0, 1.0], device=b.device)
    keep = ok[torchvision.ops.batched_nms(plus, s[ok], lv[ok], nms)]
    out.append((b[keep], s[keep]))
  if per_batch:
    top = torch.cat([s for _, s in out]).topk(min(collect, sum(len(s) for _, s in out)))
    return top
  return [(b[:collect], s[:collect]) for b, s in out]


def time_cuda(fn, runs):
  """Median milliseconds of fn() by CUDA events, after 3 warm-up calls."""
  import torch  # pylint: disable=import-outside-toplevel
  for _ in range(3):
    fn()
  torch.cuda.synchronize()
  times = []
  for _ in range(runs):
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    fn()
    end.record()
    end.synchronize()
    times.append(start.elapsed_time(end))
  return float(np.median(times))


def check_nms_vs_torchvision(lib, legacy, n=2000, seed=0):
  """Our NMS stage vs torchvision.ops.nms: anchors = boxes, zero deltas (an
  exact identity decode for boxes on a 1/8-pixel grid), one level."""
  import torch  # pylint: disable=import-outside-toplevel
  import torchvision  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(seed)
  # Top-left corners inside the 800x1333 image with room for an 8-pixel box: a corner
  # below the image (as y up to 1100 drew) makes an inverted box after the clip, which
  # the op rightly drops and torchvision keeps.
  xy = rng.uniform(0, [1333 - 8, 800 - 8], (n, 2))
  wh = rng.uniform(8, 230, (n, 2))
  boxes = (np.round(np.concatenate([xy, np.minimum(xy + wh, [1332, 799])], 1) * 8) / 8)
  boxes = boxes.astype(np.float32)
  scores = rng.random(n, np.float32)
  level = [(scores.reshape(1, 1, n, 1), np.zeros((1, 1, n, 4), np.float32), boxes)]
  info = np.array([[800.0, 1333.0, 1.0]], np.float32)
  args = (0, 0, 0.7, 0.0, legacy, n, False)
  ours = CudaProposals(lib, level, info, *args)()
  off = 1.0 if legacy else 0.0
  tb = torch.from_numpy(boxes).cuda() + torch.tensor([0.0, 0.0, off, off], device="cuda")
  keep = torchvision.ops.nms(tb, torch.from_numpy(scores).cuda(), 0.7).cpu().numpy()
  k = int(ours[2][0])
  same = k == len(keep) and np.array_equal(ours[0][0, :k], boxes[keep])
  print(f"{'nms vs torchvision.ops.nms legacy=' + str(legacy):<44} kept {k} vs {len(keep)} "
        f"{'OK' if same else 'MISMATCH'}")
  return same


def check_gpu(lib, runs):
  """CUDA vs CPU at 2 x 800x1333 P2-P6, NMS vs torchvision, timing table."""
  import torch  # pylint: disable=import-outside-toplevel
  if not lib.tfdet_proposals_has_cuda():
    sys.exit("the harness library was built without CUDA (build.sh without --cpu-only)")
  feature_sizes = [(200, 336), (100, 168), (50, 84), (25, 42), (13, 21)]
  info = np.array([[800.0, 1333.0, 1.0], [800.0, 1333.0, 1.0]], np.float32)
  levels = make_inputs(2, feature_sizes, seed=0)
  ok, rows = True, []
  for legacy in (True, False):
    ok &= check_nms_vs_torchvision(lib, legacy)
  for name, (pre, post, collect, per_batch) in SETTINGS.items():
    args = (pre, post, 0.7, 0.0, True, collect, per_batch)
    ours = CudaProposals(lib, levels, info, *args)
    ok &= compare(f"cuda vs cpu ({name})", ours(), proposals_cpu(lib, levels, info, *args))
    t_ours = time_cuda(ours.launch, runs)
    pipeline = functools.partial(torch_pipeline, ours.t, ours.info, pre, post, 0.7, collect,
                                 per_batch)
    t_torch = time_cuda(pipeline, runs)
    rows.append((name, t_ours, t_torch))
  print(f"\n{'setting':<8} {'ours CUDA ms':>13} {'torch+torchvision ms':>21} {'speedup':>8}")
  for name, a, b in rows:
    print(f"{name:<8} {a:>13.3f} {b:>21.3f} {b / a:>7.2f}x")
  print(f"(median of {runs}, CUDA events, {torch.cuda.get_device_name()})")
  return ok


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--cpu-only", action="store_true")
  parser.add_argument("--runs", type=int, default=20)
  args = parser.parse_args()
  if not LIB.exists():
    sys.exit(f"{LIB} not found; run custom_ops/harness/build.sh first")
  lib = load_lib()
  ok = check_cpu(lib)
  if not args.cpu_only:
    ok &= check_gpu(lib, runs=args.runs)
  print("ALL OK" if ok else "FAILED")
  sys.exit(0 if ok else 1)


if __name__ == "__main__":
  main()
