"""Mask R-CNN R-50-FPN in float32 and under mixed precision, each in its own process.

  python benchmarks/bench_mixed_precision.py [--policy bfloat16] [--rounds 2]

Keras's global dtype policy is per process, so each variant runs in its own
process (`--side`), the two alternating over --rounds rounds; the table gives
the median over rounds of each side's median. Each process builds the zoo's
``e2e_mask_rcnn_R-50-FPN_1x`` (random weights) under its policy
(`tfdet.training.optimizer.set_mixed_precision`, what ``train.run.mixed_precision``
sets) and times one inference (1 image, 800x1333 padded to 800x1344) and one
training step at batch 2 (forward, losses, backward, SGD at learning rate 0, so
that every timed step is the same; `rcnn_batches.train_step`). On a CPU with
AMX (Intel Sapphire Rapids and later) oneDNN runs bfloat16 convolutions on it.
"""

import argparse
import json
import os
import statistics
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import rcnn_batches  # noqa: E402
import side_by_side  # noqa: E402

ROW = "e2e_mask_rcnn_R-50-FPN_1x"


def measure(policy, warmup, runs, train_runs):
  import tensorflow as tf

  from tfdet import gin_files
  from tfdet.training import optimizer as opt_lib

  opt_lib.set_mixed_precision(None if policy == "float32" else policy)
  gin_files.parse([f"12_2017_baselines/{ROW}.gin"])
  spec = gin_files.detector_spec()
  model = spec.build()
  batch = rcnn_batches.tfdet_batch(rcnn_batches.scene(batch=2, valid_hw=(800, 1333)),
                                   (800, 1344))
  one = {k: v[:1] for k, v in batch.items()}
  inference = tf.function(lambda: model(one, training=False))
  step = rcnn_batches.train_step(spec, model, batch, learning_rate=0.0)
  _, infer_times = side_by_side.timed_calls(inference, warmup, runs)
  _, train_times = side_by_side.timed_calls(step, 1, train_runs)
  return {"inference_s": statistics.median(infer_times),
          "train_s": statistics.median(train_times), "train_loss": float(step())}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--side", default=None, help="one process: float32, bfloat16 or float16")
  parser.add_argument("--policy", default="bfloat16", choices=["bfloat16", "float16"])
  parser.add_argument("--rounds", type=int, default=2)
  parser.add_argument("--warmup", type=int, default=2)
  parser.add_argument("--runs", type=int, default=5)
  parser.add_argument("--train_runs", type=int, default=3)
  args = parser.parse_args()
  if args.side:
    print("RESULT " + json.dumps(measure(args.side, args.warmup, args.runs, args.train_runs)))
    return
  script = os.path.abspath(__file__)
  sides = [(name, [sys.executable, script, "--side", name, "--warmup", str(args.warmup),
                   "--runs", str(args.runs), "--train_runs", str(args.train_runs)],
            {"PYTHONPATH": side_by_side.ROOT})
           for name in (args.policy, "float32")]
  results = side_by_side.alternate(
      sides, args.rounds, report=lambda r, name, res: print(f"round {r + 1} {name}: {res}",
                                                             flush=True))
  print(f"\n{ROW}, {args.rounds} rounds, medians of each side's medians\n")
  rows = [("inference, 1 image (s)", "inference_s", 3),
          ("training step, 2 images (s)", "train_s", 2)]
  names = (f"mixed_{args.policy}", "float32")
  print("\n".join(side_by_side.table(results[args.policy], results["float32"], rows, names)))


if __name__ == "__main__":
  main()
