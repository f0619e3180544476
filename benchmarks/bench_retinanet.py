"""RetinaNet R-50-FPN inference on one 800x1333 image: tfdet beside the TF Model Garden.

  python benchmarks/bench_retinanet.py                  # side by side (needs the peer's venv)
  python benchmarks/bench_retinanet.py --side=tfdet     # tfdet alone, one RESULT line
  bash benchmarks/peers/setup_model_garden.sh           # builds the peer's venv once

Both sides build RetinaNet R-50-FPN with random weights (Detectron's
architecture here: P3..P7, 9 anchors, 80 sigmoid classes; Model Garden's
``retinanet_resnetfpn_coco``) and time, on one random image of 800x1344
(1333 padded to a multiple of 128), as tf.functions after the first call
(traced, timed apart) and ``--warmup`` calls, the median of ``--runs`` calls:

* dense: backbone + FPN + head, every level's class logits and box deltas;
* post: from those outputs to the final detections (tfdet: Detectron's
  per-level threshold 0.05 and top 1000, decoding, per-class NMS 0.5, top
  100; Model Garden: its detection generator as configured);
* whole: the model's own inference call (dense + post).

With random weights nearly every class probability is the head's prior
(0.01), under the 0.05 threshold, so post-processing is timed twice on both
sides: ``post`` on the model's own outputs, and ``post_loaded`` on outputs
whose probabilities are uniform in [0, 1], so that every level has its full
top-k of candidates (what a trained model on a busy image approaches).

Each side runs in its own process (``--side``), the two alternating over
``--rounds`` rounds so that the machine's drift hits both; the table shows
the median over rounds of each side's medians, their ratio, and each
process's peak memory (ru_maxrss).
"""

import argparse
import json
import os
import resource
import statistics
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import side_by_side  # noqa: E402

ROOT = side_by_side.ROOT
PEER_SCRIPT = os.path.join(ROOT, "benchmarks", "peers", "model_garden_retinanet.py")
HEIGHT, WIDTH, VALID_WIDTH = 800, 1344, 1333


def measure_tfdet(warmup, runs, threads=None):
  """tfdet's RetinaNet R-50-FPN, in this process: the RESULT dict."""
  import numpy as np
  import tensorflow as tf

  if threads:
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
  from tfdet.data import keys
  from tfdet.modeling.detectors import builders

  model = builders.build_retinanet()
  rng = np.random.default_rng(0)
  images = tf.constant(rng.normal(0, 50, [1, HEIGHT, WIDTH, 3]).astype(np.float32))
  info = tf.constant([[HEIGHT, VALID_WIDTH, 800 / 480, 480, 800]], tf.float32)
  batch = {keys.IMAGES: images, keys.IMAGE_INFO: info}

  dense = tf.function(lambda: model.dense(images))
  logits, deltas, anchors = dense()
  post = tf.function(lambda: model.postprocess(logits, deltas, anchors, info))
  # Probabilities uniform in [0, 1]: every level keeps its full top-1000 candidates.
  loaded = [tf.math.log(u / (1.0 - u)) for u in (
      tf.constant(rng.uniform(1e-3, 1 - 1e-3, x.shape).astype(np.float32)) for x in logits)]
  post_loaded = tf.function(lambda: model.postprocess(loaded, deltas, anchors, info))
  whole = tf.function(lambda: model(batch, training=False))

  result = {"library": "tfdet", "tf_version": tf.__version__, "input": [HEIGHT, WIDTH],
            "num_params": side_by_side.num_params(model)}
  for name, fn in (("dense", dense), ("post", post), ("post_loaded", post_loaded),
                   ("whole", whole)):
    first, times = side_by_side.timed_calls(fn, warmup, runs)
    result[f"{name}_s"] = statistics.median(times)
    result[f"{name}_all"] = times
    result[f"{name}_first_call_s"] = first
  result["first_call_s"] = result.pop("whole_first_call_s")
  result["num_detections_loaded"] = int(post_loaded()["num_detections"][0])
  result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
  return result


def side_by_side_run(args):
  peer_python = side_by_side.peer_python(args.peer_venv)
  common = [f"--warmup={args.warmup}", f"--runs={args.runs}"]
  if args.threads:
    common.append(f"--threads={args.threads}")
  sides = [("tfdet", [sys.executable, os.path.abspath(__file__), "--side=tfdet", *common],
            {"PYTHONPATH": ROOT}),
           ("model_garden", [peer_python, PEER_SCRIPT, *common], None)]

  def report(r, name, result):
    print(f"round {r + 1} {name}: whole {result['whole_s']:.3f} s, dense "
          f"{result['dense_s']:.3f} s, post {result['post_s']:.3f} s", flush=True)

  rounds = side_by_side.alternate(sides, args.rounds, report)
  print_table(rounds)
  return rounds


def print_table(rounds):
  """Medians over rounds, the ratio tfdet / Model Garden and peak memory."""
  rows = [("inference, whole (s)", "whole_s", 3), ("dense: backbone + FPN + head (s)", "dense_s", 3),
          ("post-processing, random weights (s)", "post_s", 3),
          ("post-processing, probabilities uniform in [0, 1] (s)", "post_loaded_s", 3),
          ("first call incl. trace (s)", "first_call_s", 3), ("peak memory (MB)", "peak_rss_mb", 0)]
  print(f"\n{len(rounds['tfdet'])} rounds, medians of each side's medians\n")
  print("\n".join(side_by_side.table(rounds["tfdet"], rounds["model_garden"], rows)))
  per_round = [f"{o['whole_s']:.2f}/{p['whole_s']:.2f}"
               for o, p in zip(rounds["tfdet"], rounds["model_garden"], strict=True)]
  print(f"\nwhole, tfdet/MG per round: {', '.join(per_round)}")


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--side", choices=["tfdet"], default=None,
                      help="measure one side in this process and print its RESULT line")
  parser.add_argument("--rounds", type=int, default=3)
  parser.add_argument("--warmup", type=int, default=2)
  parser.add_argument("--runs", type=int, default=5)
  parser.add_argument("--threads", type=int, default=None)
  parser.add_argument("--peer_venv", default=side_by_side.DEFAULT_PEER_VENV)
  args = parser.parse_args()
  if args.side == "tfdet":
    print("RESULT " + json.dumps(measure_tfdet(args.warmup, args.runs, args.threads)))
  else:
    side_by_side_run(args)


if __name__ == "__main__":
  main()
