"""Detectron's learning-rate policy and the linear scaling rule.

Detectron (``SOLVER.LR_POLICY = "steps_with_decay"``, ``utils/lr_policy.py``):

  lr(it) = BASE_LR * GAMMA ** (number of STEPS <= it) * warmup(it)
  warmup(it) = WARM_UP_FACTOR * (1 - a) + a, a = it / WARM_UP_ITERS   (it < WARM_UP_ITERS)
             = 1                                                      (otherwise)

Model-zoo solvers at 16 images per iteration (8 GPUs x 2 images): 1x is
90k iterations at LR 0.02 with decays at 60k and 80k; s1x ("short 1x", the
Keypoint R-CNN rows) 130k with decays at 100k and 120k; 2x 180k with decays
at 120k and 160k. Warm-up is 500 iterations from 1/3 of the LR.

Linear scaling: the zoo's 8-image rows (8 GPUs x 1 image, e.g.
e2e_mask_rcnn_X-101-64x4d-FPN_1x) use BASE_LR 0.01, MAX_ITER 180k and STEPS
120k/160k -- the LR scaled by 8/16 and the iteration counts by 16/8 -- while
WARM_UP_ITERS (500) and WARM_UP_FACTOR stay as they are. `scale_solver`
applies exactly that rule for any global batch.
"""

import dataclasses
from collections.abc import Sequence

import keras
import tensorflow as tf

REFERENCE_BATCH = 16


@dataclasses.dataclass(frozen=True)
class Solver:
  """A Detectron solver: the numbers of ``SOLVER.*`` that shape the LR.

  Attributes:
    base_lr: BASE_LR.
    max_iter: MAX_ITER, iterations of the whole run.
    steps: iterations at which the LR is multiplied by `gamma` (STEPS without
      Detectron's leading 0).
    gamma: GAMMA.
    warmup_iters: WARM_UP_ITERS.
    warmup_factor: WARM_UP_FACTOR.
    batch_size: images per iteration (all replicas) these numbers are for.
  """
  base_lr: float = 0.02
  max_iter: int = 90000
  steps: tuple[int, ...] = (60000, 80000)
  gamma: float = 0.1
  warmup_iters: int = 500
  warmup_factor: float = 1.0 / 3.0
  batch_size: int = REFERENCE_BATCH


def preset(name):
  """The model zoo's schedules at 16 images: "1x", "s1x" or "2x"."""
  presets = {
      "1x": Solver(max_iter=90000, steps=(60000, 80000)),
      "s1x": Solver(max_iter=130000, steps=(100000, 120000)),
      "2x": Solver(max_iter=180000, steps=(120000, 160000)),
  }
  if name not in presets:
    raise ValueError(f"schedule must be one of {sorted(presets)}, got {name!r}")
  return presets[name]


def scale_solver(solver, global_batch_size):
  """The linear scaling rule: `solver` re-expressed for another global batch.

  With k = global_batch_size / solver.batch_size the LR is multiplied by k and
  MAX_ITER and STEPS divided by k (rounded to whole iterations), so that the
  run sees the same number of images at the same LR per image. Warm-up is
  kept as it is, as in Detectron's 8-image configs.

  Args:
    solver: `Solver`.
    global_batch_size: images per iteration over all replicas.

  Returns:
    `Solver` with batch_size = global_batch_size (the same object when k = 1).
  """
  if global_batch_size <= 0:
    raise ValueError(f"global_batch_size must be positive, got {global_batch_size}")
  if global_batch_size == solver.batch_size:
    return solver
  k = global_batch_size / solver.batch_size
  return dataclasses.replace(
      solver, base_lr=solver.base_lr * k, max_iter=int(round(solver.max_iter / k)),
      steps=tuple(int(round(s / k)) for s in solver.steps), batch_size=global_batch_size)


@keras.saving.register_keras_serializable(package="tfdet")
class WarmupStepDecay(keras.optimizers.schedules.LearningRateSchedule):
  """Detectron's ``steps_with_decay`` policy with linear (or constant) warm-up.

  Args:
    base_lr: LR after warm-up and before the first step.
    steps: iterations at which the LR is multiplied by `gamma` (sorted).
    gamma: decay factor.
    warmup_iters: warm-up length (0: none).
    warmup_factor: warm-up starts at base_lr * warmup_factor.
    warmup_method: "linear" (Detectron's default) or "constant".

  Called with the iteration (int, 0-based; scalar tensor) it returns the
  float32 LR of that iteration.
  """

  def __init__(self, base_lr: float, steps: Sequence[int] = (), gamma: float = 0.1,
               warmup_iters: int = 500, warmup_factor: float = 1.0 / 3.0,
               warmup_method: str = "linear"):
    if warmup_method not in ("linear", "constant"):
      raise ValueError(f"warmup_method must be 'linear' or 'constant', got {warmup_method!r}")
    if list(steps) != sorted(steps):
      raise ValueError(f"steps must be sorted, got {steps}")
    self.base_lr = float(base_lr)
    self.steps = tuple(int(s) for s in steps)
    self.gamma = float(gamma)
    self.warmup_iters = int(warmup_iters)
    self.warmup_factor = float(warmup_factor)
    self.warmup_method = warmup_method

  @classmethod
  def from_solver(cls, solver):
    return cls(base_lr=solver.base_lr, steps=solver.steps, gamma=solver.gamma,
               warmup_iters=solver.warmup_iters, warmup_factor=solver.warmup_factor)

  def __call__(self, step):
    it = tf.cast(step, tf.float32)
    lr = tf.constant(self.base_lr, tf.float32)
    if self.steps:
      decays = tf.reduce_sum(tf.cast(it >= tf.constant(self.steps, tf.float32), tf.float32))
      lr = lr * tf.pow(tf.constant(self.gamma, tf.float32), decays)
    if self.warmup_iters > 0:
      if self.warmup_method == "linear":
        alpha = it / float(self.warmup_iters)
        factor = self.warmup_factor * (1.0 - alpha) + alpha
      else:
        factor = tf.constant(self.warmup_factor, tf.float32)
      lr = tf.where(it < float(self.warmup_iters), lr * factor, lr)
    return lr

  def get_config(self):
    return {"base_lr": self.base_lr, "steps": list(self.steps), "gamma": self.gamma,
            "warmup_iters": self.warmup_iters, "warmup_factor": self.warmup_factor,
            "warmup_method": self.warmup_method}
