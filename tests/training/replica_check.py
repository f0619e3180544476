"""Run in a fresh process: 2 logical CPUs, the toy model trained 1 vs 2 replicas.

Each run trains steps 1 and 2 one call at a time, then steps 3 to 6 in two
calls of a 2-step loop (``steps_per_loop``). Prints JSON: {"single": ...,
"mirrored": ...}, the losses of each call and the final weights. With
TF_CONFIG set (multi-worker test) it trains under MultiWorkerMirroredStrategy.
"""

import json
import os
import sys
import tempfile

import numpy as np
import tensorflow as tf

if not os.environ.get("TF_CONFIG"):
  cpu = tf.config.list_physical_devices("CPU")[0]
  tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

from tests.training import toy  # noqa: E402
from tfdet.training import loop, schedules  # noqa: E402
from tfdet.training import optimizer as opt_lib  # noqa: E402


def _draw(model, batch):
  """The chief's image summaries: the predictions on the fixed batch as grey levels."""
  pred = model(batch["x"], training=False).numpy()  # [8, 1]
  level = np.clip(np.round(pred * 40 + 128), 0, 255).astype(np.uint8)
  return [np.repeat(level[:, :, None], 3, axis=2)]  # [8, 1, 3]


def train(strategy, model_dir):
  schedule = schedules.WarmupStepDecay(0.05, steps=(3,), warmup_iters=2)
  trainer = loop.Trainer(
      model_fn=toy.model_fn, loss_fn=toy.loss_fn, dataset_fn=toy.dataset_fn_for(8),
      optimizer_fn=lambda: opt_lib.build_optimizer(schedule, weight_decay=0.01),
      model_dir=model_dir, total_steps=1, global_batch_size=8, strategy=strategy,
      checkpoint_interval=100, image_summary_interval=2, image_summary_fn=_draw)
  losses = []
  for end, steps_per_loop in ((1, 1), (2, 1), (4, 2), (6, 2)):
    trainer.total_steps, trainer.steps_per_loop = end, steps_per_loop
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
