"""Detectron's LR policy and the linear scaling rule, by hand."""

import keras
import numpy as np
import pytest

from tfdet.training import schedules


def _lr(schedule, it):
  return float(schedule(it))


def test_warmup_then_steps_1x():
  s = schedules.WarmupStepDecay.from_solver(schedules.preset("1x"))
  np.testing.assert_allclose(_lr(s, 0), 0.02 / 3, rtol=1e-6)
  # a = 250 / 500: 1/3 * 0.5 + 0.5 = 2/3
  np.testing.assert_allclose(_lr(s, 250), 0.02 * 2 / 3, rtol=1e-6)
  np.testing.assert_allclose(_lr(s, 499), 0.02 * (1 / 3 * (1 / 500) + 499 / 500), rtol=1e-6)
  np.testing.assert_allclose(_lr(s, 500), 0.02, rtol=1e-6)
  np.testing.assert_allclose(_lr(s, 59999), 0.02, rtol=1e-6)
  np.testing.assert_allclose(_lr(s, 60000), 0.002, rtol=1e-6)
  np.testing.assert_allclose(_lr(s, 79999), 0.002, rtol=1e-6)
  np.testing.assert_allclose(_lr(s, 80000), 0.0002, rtol=1e-5)
  np.testing.assert_allclose(_lr(s, 89999), 0.0002, rtol=1e-5)


def test_presets():
  assert schedules.preset("1x") == schedules.Solver(max_iter=90000, steps=(60000, 80000))
  s1x = schedules.preset("s1x")
  assert (s1x.max_iter, s1x.steps, s1x.base_lr) == (130000, (100000, 120000), 0.02)
  two = schedules.preset("2x")
  assert (two.max_iter, two.steps) == (180000, (120000, 160000))
  with pytest.raises(ValueError, match="3x"):
    schedules.preset("3x")


def test_linear_scaling_matches_detectrons_8_image_rows():
  # e2e_mask_rcnn_X-101-64x4d-FPN_1x: 8 GPUs x 1 image, BASE_LR 0.01, MAX_ITER 180k,
  # STEPS 120k/160k, WARM_UP_ITERS 500 (unchanged).
  eight = schedules.scale_solver(schedules.preset("1x"), 8)
  assert eight.base_lr == pytest.approx(0.01)
  assert (eight.max_iter, eight.steps, eight.warmup_iters) == (180000, (120000, 160000), 500)
  assert eight.warmup_factor == pytest.approx(1 / 3) and eight.batch_size == 8
  two_x = schedules.scale_solver(schedules.preset("2x"), 8)
  assert (two_x.max_iter, two_x.steps) == (360000, (240000, 320000))
  big = schedules.scale_solver(schedules.preset("1x"), 64)
  assert big.base_lr == pytest.approx(0.08) and (big.max_iter, big.steps) == (22500,
                                                                           (15000, 20000))
  same = schedules.preset("1x")
  assert schedules.scale_solver(same, 16) is same
  s = schedules.WarmupStepDecay.from_solver(eight)
  np.testing.assert_allclose(_lr(s, 0), 0.01 / 3, rtol=1e-6)
  np.testing.assert_allclose(_lr(s, 120000), 0.001, rtol=1e-6)


def test_constant_warmup_and_no_warmup():
  s = schedules.WarmupStepDecay(0.1, steps=(10,), warmup_iters=5, warmup_factor=0.5,
                                warmup_method="constant")
  assert [round(_lr(s, i), 6) for i in (0, 4, 5, 10)] == [0.05, 0.05, 0.1, 0.01]
  s = schedules.WarmupStepDecay(0.1, steps=(), warmup_iters=0)
  assert _lr(s, 12345) == pytest.approx(0.1)


def test_serializable():
  s = schedules.WarmupStepDecay(0.02, steps=(6, 8), warmup_iters=3)
  restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(s))
  assert isinstance(restored, schedules.WarmupStepDecay)
  assert restored.get_config() == s.get_config()
  for it in range(10):
    assert _lr(restored, it) == _lr(s, it)
