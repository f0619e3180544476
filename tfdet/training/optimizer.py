"""Detectron's SGD (``modeling/optimizer.py`` + Caffe2's MomentumSGDUpdate), as a Keras optimizer.

Per trainable parameter p with gradient g (already summed over replicas):

* biases (variables named ``bias``, and the ``beta`` of norm layers): no weight
  decay and the gradient scaled by 2 -- Detectron's "special treatment for
  biases (mainly to match historical impl. details)": ``g = 2 g``;
* norm scales (``gamma``, i.e. GroupNorm's; Detectron has no other trainable
  norm): ``g = g + WEIGHT_DECAY_GN * p`` (0 by default);
* every other weight: ``g = g + WEIGHT_DECAY * p`` (L2 added to the gradient,
  coupled with momentum -- not decoupled AdamW-style decay).

Then Caffe2's MomentumSGDUpdate, whose momentum buffer holds LR-scaled steps:
``m = lr * g + momentum * m; p = p - m``. When the LR changes by more than
``SCALE_MOMENTUM_THRESHOLD`` (1.1x) between two iterations -- at each decay
step, not during the smooth warm-up -- Detectron rescales the buffer by
``new_lr / old_lr`` (``SOLVER.SCALE_MOMENTUM``), which is reproduced here
from the schedule (iterations t - 1 and t), so no extra state is needed.

Modern settings (detectron2-like) are the same class with
``bias_lr_factor=1, bias_weight_decay=weight_decay``.
"""

import keras
import tensorflow as tf

BIAS_NAMES = ("bias", "beta")
NORM_SCALE_NAMES = ("gamma",)
MIXED_PRECISION = (None, "float16", "bfloat16")


def _leaf_name(variable):
  return variable.path.split("/")[-1] if hasattr(variable, "path") else variable.name


@keras.saving.register_keras_serializable(package="tfdet")
class DetectronSGD(keras.optimizers.Optimizer):
  """SGD with momentum, L2 added to the gradient, Detectron's bias rule.

  Args:
    learning_rate: float or a `keras.optimizers.schedules.LearningRateSchedule`
      (`tfdet.training.schedules.WarmupStepDecay`).
    momentum: MOMENTUM (0.9).
    weight_decay: WEIGHT_DECAY (1e-4), for weights.
    weight_decay_norm: WEIGHT_DECAY_GN (0.0), for norm scales.
    bias_lr_factor: gradient multiplier of biases (Detectron: 2).
    bias_weight_decay: weight decay of biases (Detectron: 0).
    scale_momentum: rescale the momentum buffer when the LR jumps
      (SCALE_MOMENTUM, True).
    scale_momentum_threshold: SCALE_MOMENTUM_THRESHOLD (1.1).
    clipnorm, global_clipnorm: Keras' gradient clipping (off by default,
      Detectron has none); applied to the raw gradients before the rules above.
    name: optimizer name.
  """

  def __init__(self, learning_rate=0.02, *, momentum=0.9, weight_decay=1e-4,
               weight_decay_norm=0.0, bias_lr_factor=2.0, bias_weight_decay=0.0,
               scale_momentum=True, scale_momentum_threshold=1.1, clipnorm=None,
               global_clipnorm=None, name="detectron_sgd", **kwargs):
    kwargs.pop("weight_decay", None)
    super().__init__(learning_rate=learning_rate, clipnorm=clipnorm,
                     global_clipnorm=global_clipnorm, name=name, **kwargs)
    self.momentum = float(momentum)
    self.l2_weight_decay = float(weight_decay)
    self.weight_decay_norm = float(weight_decay_norm)
    self.bias_lr_factor = float(bias_lr_factor)
    self.bias_weight_decay = float(bias_weight_decay)
    self.scale_momentum = bool(scale_momentum)
    self.scale_momentum_threshold = float(scale_momentum_threshold)

  def variable_rule(self, variable):
    """(gradient multiplier, weight decay) of a model variable."""
    leaf = _leaf_name(variable)
    if leaf in BIAS_NAMES:
      return self.bias_lr_factor, self.bias_weight_decay
    if leaf in NORM_SCALE_NAMES:
      return 1.0, self.weight_decay_norm
    return 1.0, self.l2_weight_decay

  def build(self, variables):
    if self.built:
      return
    super().build(variables)
    self.momentums = self.add_optimizer_variables(variables, "momentum")
    self._rules = [self.variable_rule(v) for v in variables]

  def _momentum_correction(self, learning_rate):
    """new_lr / old_lr when the LR jumped by more than the threshold, else 1."""
    if not self.scale_momentum or not isinstance(
        self._learning_rate, keras.optimizers.schedules.LearningRateSchedule):
      return tf.constant(1.0, tf.float32)
    it = tf.cast(self.iterations, tf.int64)
    old = tf.cast(self._learning_rate(tf.maximum(it - 1, 0)), tf.float32)
    new = tf.cast(learning_rate, tf.float32)
    ratio = tf.maximum(new / tf.maximum(old, 1e-12), old / tf.maximum(new, 1e-12))
    jump = (it > 0) & (old > 1e-7) & (ratio > self.scale_momentum_threshold)
    return tf.where(jump, new / tf.maximum(old, 1e-12), 1.0)

  def update_step(self, gradient, variable, learning_rate):
    index = self._get_variable_index(variable)
    lr_mult, decay = self._rules[index]
    dtype = variable.dtype
    lr = tf.cast(learning_rate, dtype)
    g = tf.cast(gradient, dtype)
    if lr_mult != 1.0:
      g = g * lr_mult
    if decay:
      g = g + decay * variable
    m = self.momentums[index]
    correction = tf.cast(self._momentum_correction(learning_rate), dtype)
    self.assign(m, lr * g + (self.momentum * correction) * m)
    self.assign_sub(variable, m)

  def get_config(self):
    config = super().get_config()
    config.pop("weight_decay", None)
    config.update({
        "momentum": self.momentum, "weight_decay": self.l2_weight_decay,
        "weight_decay_norm": self.weight_decay_norm, "bias_lr_factor": self.bias_lr_factor,
        "bias_weight_decay": self.bias_weight_decay, "scale_momentum": self.scale_momentum,
        "scale_momentum_threshold": self.scale_momentum_threshold})
    return config


def set_mixed_precision(mixed_precision):
  """Sets Keras' global dtype policy; call before building the model.

  Args:
    mixed_precision: None (float32), "float16" (mixed_float16, use
      `build_optimizer`'s loss scaling) or "bfloat16" (mixed_bfloat16).
  """
  if mixed_precision not in MIXED_PRECISION:
    raise ValueError(f"mixed_precision must be one of {MIXED_PRECISION}, got {mixed_precision!r}")
  keras.mixed_precision.set_global_policy(
      "float32" if mixed_precision is None else f"mixed_{mixed_precision}")


def build_optimizer(learning_rate, *, momentum=0.9, weight_decay=1e-4, weight_decay_norm=0.0,
                    bias_lr_factor=2.0, bias_weight_decay=0.0, clipnorm=None,
                    mixed_precision=None):
  """`DetectronSGD`, wrapped in a dynamic `LossScaleOptimizer` for float16.

  Args: as `DetectronSGD`; mixed_precision as `set_mixed_precision` (only
  "float16" changes the optimizer).
  """
  if mixed_precision not in MIXED_PRECISION:
    raise ValueError(f"mixed_precision must be one of {MIXED_PRECISION}, got {mixed_precision!r}")
  optimizer = DetectronSGD(learning_rate, momentum=momentum, weight_decay=weight_decay,
                           weight_decay_norm=weight_decay_norm, bias_lr_factor=bias_lr_factor,
                           bias_weight_decay=bias_weight_decay, clipnorm=clipnorm)
  if mixed_precision == "float16":
    optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
  return optimizer
