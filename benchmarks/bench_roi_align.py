"""Benchmarks RoIAlign at Mask R-CNN training sizes, on the CPU.

Two 800x1333 images (padded to 800x1344), FPN P2..P5 with 256 channels
(strides 4..32), RoIs spread over the levels by the FPN rule
``floor(4 + log2(sqrt(area) / 224))``, sampling_ratio 2, aligned False.
Rows, side by side: the custom multi-level op, the pure-TF reference, and a
``tf.image.crop_and_resize`` pooler (crop at 2x the output, then 2x2 average
pooling, as Model-Garden-style code does; not the same numbers, timing only).

  python benchmarks/bench_roi_align.py [--runs 5] [--warmup 2] [--rois 1024]
      [--sizes 7 14] [--channels 256] [--rows custom reference crop_and_resize]

Reports the median over --runs of forward and forward+backward (gradient with
respect to the features) of a tf.function, after --warmup calls.
"""

import argparse
import statistics
import time

import numpy as np
import rcnn_batches
import tensorflow as tf

from tfdet.ops.roi_align import multilevel_roi_align

STRIDES = (4, 8, 16, 32)
IMAGE = (800, 1344)


def fpn_rois(rng, num_rois, batch):
  """[R, 4] boxes in image pixels, [R] image indices and [R] level indices 0..3."""
  rois, bidx = rcnn_batches.fpn_rois(num_rois, batch, IMAGE, rng=rng)
  area = (rois[:, 2] - rois[:, 0] + 1) * (rois[:, 3] - rois[:, 1] + 1)
  level = np.clip(np.floor(4 + np.log2(np.sqrt(area) / 224 + 1e-6)), 2, 5).astype(np.int32)
  return rois, bidx, level - 2


def crop_and_resize_pool(features, rois, bidx, levels, *, output_size, spatial_scales):
  """Model-Garden-style pooler: crop_and_resize at 2x, then 2x2 average pool."""
  parts = tf.dynamic_partition(tf.range(tf.shape(rois)[0]), levels, len(features))
  outs = []
  for level, idx in enumerate(parts):
    feat = features[level]
    size = tf.cast(tf.shape(feat)[1:3] - 1, tf.float32)
    x1, y1, x2, y2 = tf.unstack(tf.gather(rois, idx) * spatial_scales[level], axis=1)
    boxes = tf.stack([y1 / size[0], x1 / size[1], y2 / size[0], x2 / size[1]], axis=1)
    crops = tf.image.crop_and_resize(feat, boxes, tf.gather(bidx, idx),
                                     (2 * output_size, 2 * output_size))
    outs.append(tf.nn.avg_pool2d(crops, 2, 2, "VALID"))
  return tf.dynamic_stitch(parts, outs)


def make_pooler(row, output_size):
  kw = dict(output_size=output_size, spatial_scales=[1.0 / s for s in STRIDES])
  if row == "crop_and_resize":
    return lambda f, r, b, lv: crop_and_resize_pool(f, r, b, lv, **kw)
  return lambda f, r, b, lv: multilevel_roi_align(f, r, b, lv, sampling_ratio=2, aligned=False,
                                                  implementation=row, **kw)


def median_ms(fn, args, runs, warmup):
  for _ in range(warmup):
    fn(*args)
  times = []
  for _ in range(runs):
    start = time.perf_counter()
    out = fn(*args)
    tf.nest.map_structure(lambda t: t.numpy(), out)
    times.append(1e3 * (time.perf_counter() - start))
  return statistics.median(times)


def bench(row, output_size, feats, rois, bidx, levels, upstream, runs, warmup):
  pool = make_pooler(row, output_size)

  @tf.function
  def fwd(f, r, b, lv):
    return pool(f, r, b, lv)

  @tf.function
  def fwd_bwd(f, r, b, lv):
    with tf.GradientTape() as tape:
      tape.watch(f)
      loss = tf.reduce_sum(pool(f, r, b, lv) * upstream)
    return tape.gradient(loss, f)

  args = (feats, rois, bidx, levels)
  return median_ms(fwd, args, runs, warmup), median_ms(fwd_bwd, args, runs, warmup)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--runs", type=int, default=5)
  parser.add_argument("--warmup", type=int, default=2)
  parser.add_argument("--rois", type=int, default=1024)
  parser.add_argument("--batch", type=int, default=2)
  parser.add_argument("--channels", type=int, default=256)
  parser.add_argument("--sizes", type=int, nargs="+", default=[7, 14])
  parser.add_argument("--rows", nargs="+", default=["custom", "reference", "crop_and_resize"],
                      choices=["custom", "reference", "crop_and_resize"])
  args = parser.parse_args()

  rng = np.random.default_rng(0)
  feats = [tf.constant(rng.standard_normal(
      (args.batch, IMAGE[0] // s, IMAGE[1] // s, args.channels)).astype(np.float32))
           for s in STRIDES]
  rois, bidx, levels = fpn_rois(rng, args.rois, args.batch)
  per_level = np.bincount(levels, minlength=4)
  print(f"RoIAlign fwd/bwd, CPU ({tf.config.threading.get_intra_op_parallelism_threads() or 'all'}"
        f" intra-op threads), batch {args.batch}, image {IMAGE[0]}x{IMAGE[1]}, P2-P5 x "
        f"{args.channels} ch, {args.rois} RoIs (per level {per_level.tolist()}), "
        f"sampling_ratio 2, median of {args.runs} after {args.warmup} warm-up")
  print(f"{'output':<8}{'implementation':<18}{'fwd ms':>10}{'fwd+bwd ms':>12}"
        f"{'fwd x ref':>11}{'f+b x ref':>11}")
  for size in args.sizes:
    upstream = tf.constant(rng.standard_normal((args.rois, size, size, args.channels)),
                           tf.float32)
    results = {row: bench(row, size, feats, tf.constant(rois), tf.constant(bidx),
                          tf.constant(levels), upstream, args.runs, args.warmup)
               for row in args.rows}
    ref = results.get("reference")
    for row, (f, fb) in results.items():
      ratio = (f"{ref[0] / f:>10.2f}x{ref[1] / fb:>10.2f}x" if ref else "")
      print(f"{size}x{size:<5}{row:<18}{f:>10.1f}{fb:>12.1f}{ratio}")


if __name__ == "__main__":
  main()
