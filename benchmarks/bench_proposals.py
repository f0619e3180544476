"""Benchmarks proposal generation: the custom op (CPU) vs the pure-TF reference.

Two 800x1333 images (padded to 800x1344, stride 32) over P2-P6 (strides
4..64, 3 anchors per location, Detectron FPN anchors of sizes 32..512), in
Detectron's train setting (pre 2000 / post 2000 per level, 2000 collected
over the batch) and test setting (1000 / 1000, 1000 per image). Each row
runs under tf.function after warm-up; the table gives the median time.

  python benchmarks/bench_proposals.py [--runs 10] [--device CPU]
"""

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from tfdet.ops import anchors as anchor_ops  # noqa: E402
from tfdet.ops.proposals import generate_proposals  # noqa: E402

STRIDES = (4, 8, 16, 32, 64)
SIZES = (32, 64, 128, 256, 512)
PADDED = (800, 1344)
# name: (pre_nms_top_n, post_nms_top_n, collect_top_n, collect_per_batch)
SETTINGS = {"train": (2000, 2000, 2000, True), "test": (1000, 1000, 1000, False)}


def make_inputs(batch=2, seed=0):
  """Random RPN outputs (sigmoid scores, small deltas) and anchors of P2-P6."""
  rng = np.random.default_rng(seed)
  scores, deltas, anchors = [], [], []
  for stride, size in zip(STRIDES, SIZES, strict=True):
    h, w = -(-PADDED[0] // stride), -(-PADDED[1] // stride)
    cell = anchor_ops.generate_cell_anchors(stride, (size,), (0.5, 1.0, 2.0),
                                            convention="detectron")
    anchors.append(anchor_ops.grid_anchors(cell, stride=stride, height=h, width=w))
    logits = rng.normal(0.0, 2.0, (batch, h, w, 3)).astype(np.float32)
    scores.append(tf.constant(1.0 / (1.0 + np.exp(-logits))))
    deltas.append(tf.constant(rng.normal(0.0, 0.3, (batch, h, w, 12)).astype(np.float32)))
  info = tf.constant([[800.0, 1333.0, 1.0]] * batch, tf.float32)
  return scores, deltas, anchors, info


def bench(fn, runs, warmup=2):
  """Median wall-clock milliseconds of fn() (outputs fetched to host)."""
  for _ in range(warmup):
    [t.numpy() for t in fn()]
  times = []
  for _ in range(runs):
    start = time.perf_counter()
    [t.numpy() for t in fn()]
    times.append((time.perf_counter() - start) * 1e3)
  return statistics.median(times)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--runs", type=int, default=10)
  parser.add_argument("--device", default="CPU")
  args = parser.parse_args()
  scores, deltas, anchors, info = make_inputs()
  rows = []
  for name, (pre, post, collect, per_batch) in SETTINGS.items():
    times = {}
    for impl in ("custom", "reference"):
      kw = dict(pre_nms_top_n=pre, post_nms_top_n=post, nms_threshold=0.7, min_size=0.0,
                convention="detectron", collect_top_n=collect, collect_per_batch=per_batch,
                implementation=impl)
      with tf.device(f"/{args.device}:0"):
        fn = tf.function(lambda kw=kw: generate_proposals(scores, deltas, anchors, info, **kw))
        times[impl] = bench(fn, args.runs)
    rows.append((name, times["custom"], times["reference"]))
  print(f"proposals: 2 x 800x1333 (padded 800x1344), P2-P6, 3 anchors/location, "
        f"{args.device}, {os.cpu_count()} cores, median of {args.runs}")
  print(f"{'setting':<34} {'impl':<22} {'ms':>9} {'speedup':>8}")
  for name, custom, ref in rows:
    pre, post, collect, per_batch = SETTINGS[name]
    desc = f"{name} {pre}/{post}/{collect} {'per batch' if per_batch else 'per image'}"
    print(f"{desc:<34} {'custom op':<22} {custom:>9.2f} {ref / custom:>7.2f}x")
    print(f"{'':<34} {'pure-TF reference':<22} {ref:>9.2f} {1.0:>7.2f}x")


if __name__ == "__main__":
  main()
