"""ResNeXt's grouped 3x3 convolution on the CPU: Keras's Conv2D beside tfdet's GroupedConv2D.

  python benchmarks/bench_grouped_conv.py [--runs 3] [--groups 64] [--stages res2 res5]

Keras 3 runs a grouped Conv2D through an XLA-compiled function;
`tfdet.layers.grouped_conv.GroupedConv2D` (what tfdet's ResNeXt builds) calls
``tf.nn.conv2d``. One 3x3 convolution of each ResNeXt-101 64x4d stage at its
size for an 800x1344 image (batch 1, stride 1, explicit zero padding as the
trunk pads), both layers with the same weights, forward and forward+backward
(gradients w.r.t. the input and the kernel), as tf.functions after a warm-up
call, the median of --runs calls.
"""

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from tfdet.layers.grouped_conv import GroupedConv2D  # noqa: E402

# Stage: (height, width, channels of the grouped conv) for X-101-64x4d at 800x1344.
STAGES = {"res2": (200, 336, 256), "res3": (100, 168, 512), "res4": (50, 84, 1024),
          "res5": (25, 42, 2048)}


def _median_ms(fn, runs):
  fn()
  times = []
  for _ in range(runs):
    start = time.perf_counter()
    tf.nest.map_structure(lambda t: t.numpy(), fn())
    times.append(1e3 * (time.perf_counter() - start))
  return statistics.median(times)


def bench(stage, groups, runs):
  height, width, channels = STAGES[stage]
  rng = np.random.default_rng(0)
  x = tf.constant(rng.normal(size=[1, height + 2, width + 2, channels]).astype(np.float32))
  kernel = rng.normal(size=[3, 3, channels // groups, channels]).astype(np.float32) * 0.01
  row = {}
  for name, cls in (("keras", keras.layers.Conv2D), ("tfdet", GroupedConv2D)):
    layer = cls(channels, 3, groups=groups, padding="valid", use_bias=False)
    layer.build(x.shape)
    layer.kernel.assign(kernel)

    def forward_backward(layer=layer):
      with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x)
      return tape.gradient(y, [x, layer.kernel])

    row[name] = (_median_ms(tf.function(lambda layer=layer: layer(x)), runs),
                 _median_ms(tf.function(forward_backward), runs))
  return row


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--runs", type=int, default=3)
  parser.add_argument("--groups", type=int, default=64)
  parser.add_argument("--stages", nargs="+", choices=sorted(STAGES), default=sorted(STAGES))
  args = parser.parse_args()
  print(f"3x3 conv, {args.groups} groups, batch 1, {os.cpu_count()} CPUs, median of "
        f"{args.runs} (ms)\n")
  print("| stage | input | Keras fwd | tfdet fwd | Keras fwd+bwd | tfdet fwd+bwd | "
        "speed-up fwd+bwd |")
  print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
  for stage in args.stages:
    h, w, c = STAGES[stage]
    row = bench(stage, args.groups, args.runs)
    (kf, kb), (of, ob) = row["keras"], row["tfdet"]
    print(f"| {stage} | {h}x{w}x{c} | {kf:.1f} | {of:.1f} | {kb:.1f} | {ob:.1f} | "
          f"{kb / ob:.0f}x |", flush=True)


if __name__ == "__main__":
  main()
