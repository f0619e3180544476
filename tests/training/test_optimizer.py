"""DetectronSGD equals Detectron's update (Caffe2 MomentumSGDUpdate) computed by hand."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfdet.training import optimizer as opt_lib
from tfdet.training import schedules


def _detectron_reference(w, b, grads, lrs, *, wd, momentum=0.9):
  """Detectron: bias g *= 2 (no decay); weight g += wd * w; m = lr g + mom m; p -= m.

  SCALE_MOMENTUM: m *= new_lr / old_lr when the LR jumps by more than 1.1x.
  """
  mw, mb = np.zeros_like(w), np.zeros_like(b)
  for t, (gw, gb) in enumerate(grads):
    lr = lrs[t]
    if t > 0 and max(lr / lrs[t - 1], lrs[t - 1] / lr) > 1.1:
      mw, mb = mw * lr / lrs[t - 1], mb * lr / lrs[t - 1]
    gw = gw + wd * w
    gb = 2.0 * gb
    mw = lr * gw + momentum * mw
    mb = lr * gb + momentum * mb
    w, b = w - mw, b - mb
  return w, b


def test_two_parameter_toy_matches_detectron_by_hand():
  w0, b0 = np.array([1.0, -2.0], np.float32), np.array([0.5], np.float32)
  w = keras.Variable(w0, name="kernel")
  b = keras.Variable(b0, name="bias")
  schedule = schedules.WarmupStepDecay(0.1, steps=(3,), warmup_iters=2, warmup_factor=0.5)
  opt = opt_lib.DetectronSGD(schedule, weight_decay=0.01)
  grads = [(np.array([1.0, 0.5], np.float32), np.array([1.0], np.float32)),
           (np.array([-0.5, 1.0], np.float32), np.array([0.25], np.float32)),
           (np.array([0.2, 0.2], np.float32), np.array([-1.0], np.float32)),
           (np.array([1.0, 1.0], np.float32), np.array([1.0], np.float32)),
           (np.array([0.3, -0.1], np.float32), np.array([0.5], np.float32))]
  for gw, gb in grads:
    opt.apply_gradients([(tf.constant(gw), w), (tf.constant(gb), b)])
  lrs = [float(schedule(t)) for t in range(len(grads))]
  assert lrs == pytest.approx([0.05, 0.075, 0.1, 0.01, 0.01])
  ref_w, ref_b = _detectron_reference(w0.astype(np.float64), b0.astype(np.float64), grads, lrs,
                                      wd=0.01)
  np.testing.assert_allclose(w.numpy(), ref_w, rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(b.numpy(), ref_b, rtol=1e-6, atol=1e-7)
  assert np.abs(w.numpy() - w0).min() > 0.05  # the weights did move


def test_two_parameter_toy_first_steps_by_hand():
  # The optimizer (not the reference) against updates written out by hand, the LR jump
  # of test_two_parameter_toy_matches_detectron_by_hand's schedule included.
  w = keras.Variable(np.array([1.0, -2.0], np.float32), name="kernel")
  b = keras.Variable(np.array([0.5], np.float32), name="bias")
  schedule = schedules.WarmupStepDecay(0.1, steps=(1,), warmup_iters=1, warmup_factor=0.5)
  assert [float(schedule(t)) for t in range(2)] == pytest.approx([0.05, 0.01])
  opt = opt_lib.DetectronSGD(schedule, weight_decay=0.01)
  # Step 0, lr 0.05: g_w = (1, 0.5) + 0.01 * (1, -2) = (1.01, 0.48), m_w = 0.05 g_w =
  # (0.0505, 0.024), w = (0.9495, -2.024); bias g = 2 * 1 = 2 (no decay), m_b = 0.1, b = 0.4.
  opt.apply_gradients([(tf.constant([1.0, 0.5]), w), (tf.constant([1.0]), b)])
  np.testing.assert_allclose(w.numpy(), [0.9495, -2.024], rtol=1e-6)
  np.testing.assert_allclose(b.numpy(), [0.4], rtol=1e-6)
  # Step 1, lr 0.01 (a 5x drop, > 1.1x: momentum scaled by 0.01 / 0.05 = 0.2):
  #   g_w = (0, 0) + 0.01 * (0.9495, -2.024) = (0.009495, -0.02024)
  #   m_w = 0.01 g_w + 0.9 * 0.2 * (0.0505, 0.024) = (0.00009495 + 0.00909, -0.0002024 + 0.00432)
  #       = (0.00918495, 0.0041176) -> w = (0.94031505, -2.0281176)
  #   g_b = 2 * 0 = 0, m_b = 0.9 * 0.2 * 0.1 = 0.018 -> b = 0.382
  opt.apply_gradients([(tf.constant([0.0, 0.0]), w), (tf.constant([0.0]), b)])
  np.testing.assert_allclose(w.numpy(), [0.94031505, -2.0281176], rtol=1e-6)
  np.testing.assert_allclose(b.numpy(), [0.382], rtol=1e-6)
  # The same two steps through the numpy reference of the test above agree.
  grads = [(np.array([1.0, 0.5]), np.array([1.0])), (np.zeros(2), np.zeros(1))]
  ref_w, ref_b = _detectron_reference(np.array([1.0, -2.0]), np.array([0.5]), grads,
                                      [0.05, 0.01], wd=0.01)
  np.testing.assert_allclose(ref_w, [0.94031505, -2.0281176], rtol=1e-9)
  np.testing.assert_allclose(ref_b, [0.382], rtol=1e-9)


def test_first_step_by_hand():
  w = keras.Variable(np.array([2.0], np.float32), name="kernel")
  b = keras.Variable(np.array([1.0], np.float32), name="bias")
  gamma = keras.Variable(np.array([1.0], np.float32), name="gamma")
  opt = opt_lib.DetectronSGD(0.1, weight_decay=1e-4, weight_decay_norm=0.0)
  one = tf.constant([1.0])
  opt.apply_gradients([(one, w), (one, b), (one, gamma)])
  np.testing.assert_allclose(w.numpy(), [2.0 - 0.1 * (1.0 + 1e-4 * 2.0)], rtol=1e-7)
  np.testing.assert_allclose(b.numpy(), [1.0 - 0.1 * 2.0], rtol=1e-7)  # 2x LR, no decay
  np.testing.assert_allclose(gamma.numpy(), [1.0 - 0.1], rtol=1e-7)  # WEIGHT_DECAY_GN = 0


def test_modern_bias_rule_and_serialization():
  opt = opt_lib.DetectronSGD(0.1, bias_lr_factor=1.0, bias_weight_decay=1e-4)
  b = keras.Variable(np.array([1.0], np.float32), name="bias")
  assert opt.variable_rule(b) == (1.0, 1e-4)
  config = opt.get_config()
  again = opt_lib.DetectronSGD.from_config(config)
  assert again.get_config() == config


def test_build_optimizer_mixed_precision_choices():
  sgd = opt_lib.build_optimizer(0.01)
  assert isinstance(sgd, opt_lib.DetectronSGD)
  scaled = opt_lib.build_optimizer(0.01, mixed_precision="float16")
  assert isinstance(scaled, keras.optimizers.LossScaleOptimizer)
  assert isinstance(opt_lib.build_optimizer(0.01, mixed_precision="bfloat16"),
                    opt_lib.DetectronSGD)
  with pytest.raises(ValueError, match="float8"):
    opt_lib.build_optimizer(0.01, mixed_precision="float8")


def test_loss_scaled_step_equals_plain_step():
  def run(mixed):
    w = keras.Variable(np.array([1.0, 2.0], np.float32), name="kernel")
    opt = opt_lib.build_optimizer(0.1, mixed_precision=mixed)
    opt.build([w])
    with tf.GradientTape() as tape:
      loss = tf.reduce_sum(w * w)
      if mixed:
        loss = opt.scale_loss(loss)
    opt.apply_gradients([(tape.gradient(loss, w), w)])
    return w.numpy()
  np.testing.assert_allclose(run("float16"), run(None), rtol=1e-6)
