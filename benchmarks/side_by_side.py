"""The side-by-side driver of the benchmarks against a peer library.

Each measurement runs in its own process (one side, one part), which prints
one line ``RESULT {json}``; the sides alternate over rounds so that the
machine's drift hits both, and the table gives the median over rounds of each
side's medians and their ratio. Used by bench_retinanet.py and
bench_mask_rcnn_vs_model_garden.py; it imports no TensorFlow.
"""

import json
import os
import statistics
import subprocess
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_PEER_VENV = os.environ.get("MG_VENV", os.path.join(ROOT, ".venv-model-garden"))


def timed_calls(fn, warmup, runs):
  """(first call s, [timed call s]) of fn, whose outputs are fetched (.numpy()) each call."""
  import tensorflow as tf

  def call():
    start = time.perf_counter()
    tf.nest.map_structure(lambda x: x.numpy(), fn())
    return time.perf_counter() - start

  first = call()
  for _ in range(warmup):
    call()
  return first, [call() for _ in range(runs)]


def num_params(model):
  """The model's parameter count, read off its variables. Keras's count_params wants the model
  marked built, which only a call does, and an eager call of a full-size detector raises the
  process's peak memory by several GB (8.9 GB against the training step's 4.0 GB for Mask
  R-CNN R-50-FPN at batch 2), which the benchmarks report."""
  return sum(int(v.shape.num_elements()) for v in model.weights)


def peer_python(venv):
  """The peer environment's interpreter, or SystemExit saying how to build it."""
  python = os.path.join(venv, "bin", "python")
  if not os.path.exists(python):
    raise SystemExit(f"no Model Garden environment at {venv}: run "
                     "bash benchmarks/peers/setup_model_garden.sh (or pass --peer_venv)")
  return python


def run_side(command, env=None):
  """Runs one side's process; its last RESULT line as a dict (its stderr on failure)."""
  proc = subprocess.run(command, capture_output=True, text=True, cwd=ROOT,
                        env=dict(os.environ, **(env or {})), check=False)
  lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
  if proc.returncode != 0 or not lines:
    raise RuntimeError(f"{' '.join(command)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
  return json.loads(lines[-1][len("RESULT "):])


def alternate(sides, rounds, report=None):
  """{name: [RESULT of each round]} of sides [(name, command, env)], alternating.

  Round r runs the sides in the given order when r is even and reversed when
  odd; `report(round, name, result)` is called after each run.
  """
  results = {name: [] for name, _, _ in sides}
  for r in range(rounds):
    for name, command, env in sides if r % 2 == 0 else sides[::-1]:
      result = run_side(command, env)
      results[name].append(result)
      if report:
        report(r, name, result)
  return results


def median_over_rounds(results, key):
  values = [r[key] for r in results if r.get(key) is not None]
  return statistics.median(values) if values else float("nan")


def table(ours, peer, rows, names=("tfdet", "Model Garden")):
  """Markdown lines: | label | ours | peer | ours / peer | for rows [(label, key, digits)]."""
  lines = [f"| | {names[0]} | {names[1]} | {names[0]} / {names[1]} |",
           "| --- | ---: | ---: | ---: |"]
  for label, key, digits in rows:
    a, b = median_over_rounds(ours, key), median_over_rounds(peer, key)
    lines.append(f"| {label} | {a:.{digits}f} | {b:.{digits}f} | {a / b:.2f} |")
  return lines
