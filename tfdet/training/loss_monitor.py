"""Whether the state after a training step is safe to checkpoint.

A loss can be finite and still wrecked: a step with total loss 4e27 leaves
weights that give NaN at the next step, and a checkpoint of it would be a
"last good" state that resumes into NaN at once. `LossMonitor` keeps the
total losses of the recent healthy steps and calls a step safe when its
losses are all finite and its total is at most `factor` times their median
(any total is accepted until `min_history` healthy steps were seen). The
trainer checkpoints only safe states, stops with `NonFiniteLossError` on a
non-finite loss, and with `LossExplosionError` after `patience` consecutive
unsafe checks; both messages name the last safe checkpoint.
"""

import collections
import math
import statistics


class NonFiniteLossError(FloatingPointError):
  """A loss became NaN or Inf (the message names the step, the losses and the safe checkpoint)."""


class LossExplosionError(FloatingPointError):
  """The total loss stayed far above its running median (the message names the safe checkpoint)."""


class LossMonitor:
  """The running median of healthy total losses and the safety verdict of each check.

  Args:
    factor: a total loss above ``factor * median`` is unsafe; None disables the
      check (every finite loss is safe).
    window: healthy totals kept for the median.
    min_history: healthy totals needed before the factor applies.
    patience: consecutive unsafe checks after which `check` raises; None: never.
  """

  def __init__(self, *, factor=10.0, window=100, min_history=10, patience=20):
    if factor is not None and factor <= 1.0:
      raise ValueError(f"the loss explosion factor must be > 1, got {factor}")
    self.factor = factor
    self.min_history = int(min_history)
    self.patience = patience
    self.history = collections.deque(maxlen=int(window))
    self.unsafe_in_a_row = 0

  def verdict(self, losses, total_key):
    """(safe, reason) for a step's losses (floats); reason is "" when safe."""
    bad = {k: v for k, v in losses.items() if not math.isfinite(v)}
    if bad:
      return False, "non-finite " + ", ".join(f"{k}={v}" for k, v in sorted(bad.items()))
    total = losses[total_key]
    if self.factor is None or len(self.history) < self.min_history:
      return True, ""
    median = statistics.median(self.history)
    if total > self.factor * median:
      return False, (f"{total_key} {total:.6g} is more than {self.factor:g}x the median "
                     f"{median:.6g} of the last {len(self.history)} healthy checks")
    return True, ""

  def check(self, losses, total_key, *, step, safe_checkpoint):
    """Records a step's losses; returns (safe, reason) for checkpointing.

    Raises:
      NonFiniteLossError: a loss is NaN or Inf.
      LossExplosionError: `patience` consecutive checks were unsafe.
    """
    safe, reason = self.verdict(losses, total_key)
    where = (f"the last safe checkpoint is {safe_checkpoint}" if safe_checkpoint else
             "no checkpoint was saved yet")
    bad = {k: v for k, v in losses.items() if not math.isfinite(v)}
    if bad:
      raise NonFiniteLossError(
          f"non-finite loss at step {step} (iteration {step - 1}): "
          + ", ".join(f"{k}={v}" for k, v in sorted(bad.items()))
          + f"; all losses: {losses}; the state after this step was not saved; {where} "
          "(rerunning the command resumes from it)")
    if safe:
      self.history.append(losses[total_key])
      self.unsafe_in_a_row = 0
      return True, ""
    self.unsafe_in_a_row += 1
    if self.patience is not None and self.unsafe_in_a_row >= self.patience:
      raise LossExplosionError(
          f"the loss exploded: {reason}, for {self.unsafe_in_a_row} checks in a row up to "
          f"step {step}; {where} (lower the learning rate, or rerun to resume from it)")
    return False, reason
