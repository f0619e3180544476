"""Run in a fresh process: 2 logical CPUs, the toy model trained 1 vs 2 replicas.

Prints JSON: {"single": [...], "mirrored": [...]} losses and final weights.
With TF_CONFIG set (multi-worker test) it trains under MultiWorkerMirroredStrategy.
"""

import json
import os
import sys
import tempfile

import tensorflow as tf

if not os.environ.get("TF_CONFIG"):
  cpu = tf.config.list_physical_devices("CPU")[0]
  tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

from tests.training import toy  # noqa: E402
from tfdet.training import loop, schedules  # noqa: E402
from tfdet.training import optimizer as opt_lib  # noqa: E402


def train(strategy, model_dir, steps=4):
  schedule = schedules.WarmupStepDecay(0.05, steps=(3,), warmup_iters=2)
  trainer = loop.Trainer(
      model_fn=toy.model_fn, loss_fn=toy.loss_fn, dataset_fn=toy.dataset_fn_for(8),
      optimizer_fn=lambda: opt_lib.build_optimizer(schedule, weight_decay=0.01),
      model_dir=model_dir, total_steps=steps, global_batch_size=8, strategy=strategy,
      checkpoint_interval=100)
  losses = []
  for step in range(1, steps + 1):
    trainer.total_steps = step
    losses.append(trainer.train()["total_loss"])
  return {"replicas": trainer.strategy.num_replicas_in_sync, "losses": losses,
          "weights": [w.tolist() for w in toy.weights(trainer.model)]}


def main():
  out = {}
  if os.environ.get("TF_CONFIG"):
    out["multi_worker"] = train("multi_worker", sys.argv[1])
  else:
    out["single"] = train("one_device", tempfile.mkdtemp())
    out["mirrored"] = train("mirrored", tempfile.mkdtemp())
  print("RESULT " + json.dumps(out))


if __name__ == "__main__":
  main()
