"""Training speed of the quickstart run, by the way batches reach the step function.

Runs ``python -m tfdet.train`` with the quickstart's config
(`gin_configs/quickstart/mask_rcnn_tiny_fpn.gin`) on the built-in synthetic
data set (the quickstart's style and size, generated under --data_dir on
first use), one replica, for --steps steps, with

* ``train.run.distributed_input = "auto"`` (the default: with one replica the
  step reads a plain tf.data iterator), and
* ``train.run.distributed_input = "always"`` (the DistributedIterator of
  ``strategy.distribute_datasets_from_function``),

alternating the two for --rounds rounds (one run at a time), and prints a
table: seconds per step from the wall clock between the console lines of
steps --skip and --steps (tracing and warm-up left out), median over rounds.

  python benchmarks/bench_train_step.py --data_dir /tmp/tfdet_bench_data --steps 61 --rounds 2
"""

import argparse
import datetime
import os
import re
import statistics
import subprocess
import sys
import tempfile

from tfdet.data import synthetic

_LINE = re.compile(r"^I(\d{4}) (\d\d:\d\d:\d\d\.\d+) .*\] step (\d+)/\d+ ")


def _parse_args():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--data_dir", default="/tmp/tfdet_bench_data")
  parser.add_argument("--steps", type=int, default=61)
  parser.add_argument("--skip", type=int, default=20, help="steps left out of the timing")
  parser.add_argument("--rounds", type=int, default=2)
  return parser.parse_args()


def _seconds_per_step(log, skip, steps):
  times = {}
  for line in log.splitlines():
    match = _LINE.match(line)
    if match:
      times[int(match.group(3))] = datetime.datetime.strptime(match.group(2), "%H:%M:%S.%f")
  if skip not in times or steps not in times:
    raise RuntimeError(f"no console lines for steps {skip} and {steps} in the training log:\n"
                       + log[-3000:])
  return (times[steps] - times[skip]).total_seconds() / (steps - skip)


def main():
  args = _parse_args()
  data = synthetic.ensure_synthetic_tfrecords(args.data_dir, num_train_images=200,
                                              num_val_images=1, style="simple",
                                              image_size=(160, 224), num_workers=2)
  modes = ("auto", "always")
  times = {mode: [] for mode in modes}
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  for _ in range(args.rounds):
    for mode in modes:
      with tempfile.TemporaryDirectory() as model_dir:
        command = [
            sys.executable, "-m", "tfdet.train",
            "--gin_file=quickstart/mask_rcnn_tiny_fpn.gin", f"--model_dir={model_dir}",
            f'--gin_param=train/inputs.build_input.file_pattern = "{data["instances"]["train"]}"',
            f"--gin_param=train.run.max_iter = {args.steps}",
            f"--gin_param=train.run.log_interval = {args.skip}",
            f"--gin_param=train.run.checkpoint_interval = {10 * args.steps}",
            f'--gin_param=train.run.distributed_input = "{mode}"']
        run = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
        if run.returncode:
          raise RuntimeError(f"{' '.join(command)} failed:\n{run.stderr[-3000:]}")
        times[mode].append(_seconds_per_step(run.stderr, args.skip, args.steps))
  auto = statistics.median(times["auto"])
  print(f"\nquickstart training run, batch 4, one replica, {os.cpu_count()} CPU cores: "
        f"steps {args.skip}-{args.steps}, median of {args.rounds} rounds\n")
  print("| train.run.distributed_input | input | s/step | vs auto |")
  print("| --- | --- | ---: | ---: |")
  for mode, label in (("auto", "plain tf.data iterator"),
                      ("always", "DistributedIterator")):
    median = statistics.median(times[mode])
    print(f"| {mode} | {label} | {median:.3f} | {median / auto:.2f}x |")


if __name__ == "__main__":
  main()
