"""XLA (``jit_compile=True``) on Mask R-CNN's dense part, beside TensorFlow's graph executor.

  python benchmarks/bench_xla_dense.py [--row e2e_mask_rcnn_R-50-FPN_1x] [--runs 5]

Builds the zoo row's full-size model (random weights) and times, as
tf.functions with and without ``jit_compile``, each on 800x1333 images padded
to 800x1344:

* ``backbone``: ResNet + FPN forward, one image;
* ``dense``: backbone + FPN + RPN head forward, one image (90% of an
  inference's op time, docs/performance.md);
* ``dense fwd+bwd``: the same at batch 2 with the gradient of the sum of the
  RPN outputs w.r.t. all trainable weights (the dense part of a training
  step);
* ``inference, whole``: the model's inference call on one image, with its
  ``jit_compile_inference`` off and on (`tfdet.modeling.xla`: backbone + FPN
  and RPN head compiled, the rest as before).

The two variants of a row alternate call by call in this one process, after
--warmup calls each (the first call, which compiles, is shown apart), so
that drift of the machine hits both; the table gives medians of --runs.
"""

import argparse
import statistics
import time

import numpy as np
import rcnn_batches
import tensorflow as tf

from tfdet import gin_files
from tfdet.data import keys


def build(row):
  gin_files.parse([f"12_2017_baselines/{row}.gin"])
  model = gin_files.detector_spec().build()
  scene = rcnn_batches.scene(batch=2, valid_hw=(800, 1333), seed=0)
  return model, rcnn_batches.tfdet_batch(scene, (800, 1344))


def rows(model, images):
  """name -> (python function, its input)."""

  def backbone(x):
    return model.backbone(x, training=False)

  def dense(x):
    logits, deltas, _ = model.proposal_source.dense(model.backbone(x, training=False))
    return logits, deltas

  def dense_fwd_bwd(x):
    with tf.GradientTape() as tape:
      logits, deltas = dense(x)
      total = tf.add_n([tf.reduce_sum(t) for t in logits + deltas])
    return tape.gradient(total, model.trainable_variables)

  return {"backbone (1 image)": (backbone, images[:1]), "dense (1 image)": (dense, images[:1]),
          "dense fwd+bwd (2 images)": (dense_fwd_bwd, images)}


def whole_inference_variants(model, batch):
  """graph / XLA tf.functions of the model's inference call (the flag is read when traced)."""
  one = {k: v[:1] for k, v in batch.items()}
  variants = {}
  for name, jit in (("graph", False), ("XLA", True)):
    model.jit_compile_inference = jit
    fn = tf.function(lambda b: model(b, training=False))
    fn.get_concrete_function(one)  # trace now, with this setting
    variants[name] = fn
  model.jit_compile_inference = False
  return variants, one


def timed(fn, x):
  start = time.perf_counter()
  tf.nest.map_structure(lambda t: None if t is None else t.numpy(), fn(x))
  return time.perf_counter() - start


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--row", default="e2e_mask_rcnn_R-50-FPN_1x")
  parser.add_argument("--rows", nargs="+", default=None, help="row names (default: all)")
  parser.add_argument("--runs", type=int, default=5)
  parser.add_argument("--warmup", type=int, default=1)
  args = parser.parse_args()
  model, batch = build(args.row)
  table = []
  cases = {name: ({"graph": tf.function(fn), "XLA": tf.function(fn, jit_compile=True)}, x)
           for name, (fn, x) in rows(model, batch[keys.IMAGES]).items()}
  cases["inference, whole (1 image)"] = whole_inference_variants(model, batch)
  for name, (variants, x) in cases.items():
    if args.rows and not any(name.startswith(r) for r in args.rows):
      continue
    first = {k: timed(f, x) for k, f in variants.items()}
    for _ in range(args.warmup):
      for f in variants.values():
        timed(f, x)
    times = {k: [] for k in variants}
    for _ in range(args.runs):
      for k, f in variants.items():
        times[k].append(timed(f, x))
    med = {k: statistics.median(v) for k, v in times.items()}
    table.append((name, med["graph"], med["XLA"], first["graph"], first["XLA"]))
    print(f"{name}: " + ", ".join(f"{k} {np.round(v, 3).tolist()}" for k, v in times.items()),
          flush=True)
  print(f"\n{args.row}, medians of {args.runs} alternating calls\n")
  print("| part | graph (s) | XLA (s) | XLA / graph | first call graph / XLA (s) |")
  print("| --- | ---: | ---: | ---: | ---: |")
  for name, graph, xla, first_graph, first_xla in table:
    print(f"| {name} | {graph:.3f} | {xla:.3f} | {xla / graph:.2f} | "
          f"{first_graph:.1f} / {first_xla:.1f} |")


if __name__ == "__main__":
  main()
