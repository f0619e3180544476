"""Tests of the RoIAlign custom op against its pure-TF reference and by hand."""

import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tests.ops.op_library import IMPLEMENTATIONS, custom, needs_gpu, needs_library
from tfdet.ops import custom_ops
from tfdet.ops.roi_align import multilevel_roi_align, roi_align

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _random_rois(rng, num, height, width, stride):
  """[num, 4] RoIs in image pixels: inside, crossing the border, tiny, huge."""
  img_h, img_w = height * stride, width * stride
  x1 = rng.uniform(-0.3 * img_w, img_w, num)
  y1 = rng.uniform(-0.3 * img_h, img_h, num)
  w = rng.uniform(0.0, 0.8 * img_w, num)
  h = rng.uniform(0.0, 0.8 * img_h, num)
  rois = np.stack([x1, y1, x1 + w, y1 + h], axis=1)
  rois[0] = [2.0, 3.0, 2.4, 3.3]  # tiny (< 1 feature pixel)
  rois[1] = [-3.0 * img_w, -2.0 * img_h, 4.0 * img_w, 3.0 * img_h]  # huge
  rois[2] = [0.0, 0.0, img_w, img_h]  # whole image
  rois[3] = [img_w - 1.0, img_h - 1.0, img_w + 9.0, img_h + 7.0]  # bottom-right border
  return rois.astype(np.float32)


def _run(impl, features, rois, bidx, upstream, **kw):
  features = tf.constant(features)
  with tf.GradientTape() as tape:
    tape.watch(features)
    out = roi_align(features, rois, bidx, implementation=impl, **kw)
    loss = tf.reduce_sum(out * upstream)
  return out.numpy(), tape.gradient(loss, features).numpy()


@needs_library
@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio", [0, 2])
def test_matches_reference(aligned, sampling_ratio):
  rng = np.random.default_rng(1 + sampling_ratio + aligned)
  b, h, w, c, stride = 2, 11, 14, 6, 4
  features = rng.normal(size=(b, h, w, c)).astype(np.float32)
  rois = _random_rois(rng, 24, h, w, stride)
  bidx = rng.integers(0, b, 24).astype(np.int32)
  kw = dict(output_size=(5, 4), spatial_scale=1.0 / stride, sampling_ratio=sampling_ratio,
            aligned=aligned)
  upstream = rng.normal(size=(24, 5, 4, c)).astype(np.float32)
  out, grad = _run("custom", features, rois, bidx, upstream, **kw)
  ref_out, ref_grad = _run("reference", features, rois, bidx, upstream, **kw)
  assert out.shape == (24, 5, 4, c)
  np.testing.assert_allclose(out, ref_out, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(grad, ref_grad, rtol=1e-4, atol=1e-4)
  assert np.abs(out).max() > 0.1


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_empty_rois(impl):
  features = np.ones((2, 5, 6, 3), np.float32)
  rois = np.zeros((0, 4), np.float32)
  bidx = np.zeros((0,), np.int32)
  out, grad = _run(impl, features, rois, bidx, np.zeros((0, 7, 7, 3), np.float32),
                   output_size=7, spatial_scale=0.25, sampling_ratio=0)
  assert out.shape == (0, 7, 7, 3)
  np.testing.assert_array_equal(grad, np.zeros_like(features))


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_linear_ramp_is_exact(impl):
  # Bilinear sampling of a linear function is exact, and the 2x2 samples of a
  # bin are symmetric about its centre, so each bin equals f(centre).
  h, w = 12, 16
  yy, xx = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
  f = np.stack([2.0 * yy + 0.5 * xx + 1.0, -yy + 3.0 * xx], axis=-1)[None].astype(np.float32)
  rois = np.array([[4.0, 2.0, 20.0, 14.0], [1.0, 1.0, 27.0, 19.0]], np.float32)  # scale 0.5
  out = roi_align(f, rois, [0, 0], output_size=(3, 4), spatial_scale=0.5, sampling_ratio=2,
                  implementation=impl).numpy()
  for r, (x1, y1, x2, y2) in enumerate(rois * 0.5):
    cy = y1 + (np.arange(3) + 0.5) * (y2 - y1) / 3
    cx = x1 + (np.arange(4) + 0.5) * (x2 - x1) / 4
    gy, gx = np.meshgrid(cy, cx, indexing="ij")
    want = np.stack([2.0 * gy + 0.5 * gx + 1.0, -gy + 3.0 * gx], axis=-1)
    np.testing.assert_allclose(out[r], want, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_hand_computed(impl):
  # One row [10, 20, 30] (H = 1, W = 3), scale 1, one sample per bin.
  f = np.array([10.0, 20.0, 30.0], np.float32).reshape(1, 1, 3, 1)
  kw = dict(spatial_scale=1.0, sampling_ratio=1, implementation=impl)
  # Detectron: roi x in [-3, 1] -> bins of width 2, samples at x = -2 (outside
  # [-1, W]: 0) and x = 0 (10); height clamps to 1, sample y = 0.5 on the last
  # row -> y = 0.
  out = roi_align(f, [[-3.0, 0.0, 1.0, 0.0]], [0], output_size=(1, 2), **kw)
  np.testing.assert_allclose(out.numpy().ravel(), [0.0, 10.0])
  # One sample at x = 0.25 + 2.85 / 2 = 1.675 -> 20 * 0.325 + 30 * 0.675 = 26.75.
  out = roi_align(f, [[0.25, 0.0, 3.1, 1.0]], [0], output_size=(1, 1), **kw)
  np.testing.assert_allclose(out.numpy().ravel(), [26.75], rtol=1e-6)
  # Width clamps to 1: sample at x = 3.0 = W, past the last column -> 30.
  out = roi_align(f, [[2.5, 0.0, 3.3, 0.0]], [0], output_size=(1, 1), **kw)
  np.testing.assert_allclose(out.numpy().ravel(), [30.0], rtol=1e-6)
  # detectron2: roi [0.5, 0.5, 2.5, 1.5] - 0.5 -> [0, 2] x [0, 1], 1x1 bin with
  # 2x2 samples at x = 0.5, 1.5 -> (15 + 25) / 2 = 20.
  out = roi_align(f, [[0.5, 0.5, 2.5, 1.5]], [0], output_size=1, spatial_scale=1.0,
                  sampling_ratio=2, aligned=True, implementation=impl)
  np.testing.assert_allclose(out.numpy().ravel(), [20.0], rtol=1e-6)


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
@pytest.mark.parametrize("aligned", [False, True])
def test_numerical_gradient(aligned, impl):
  rng = np.random.default_rng(7)
  features = tf.constant(rng.normal(size=(2, 5, 6, 2)), tf.float64)
  # Sample points avoid integer coordinates (the kinks of bilinear sampling).
  rois = np.array([[0.3, 0.6, 3.7, 4.1], [-1.2, 1.1, 2.9, 2.3], [1.1, 0.2, 5.7, 4.6]], np.float32)
  bidx = [0, 1, 1]

  def fn(x):
    out = roi_align(tf.cast(x, tf.float32), rois, bidx, output_size=(2, 3), spatial_scale=1.0,
                    sampling_ratio=2, aligned=aligned, implementation=impl)
    return tf.cast(out, tf.float64)

  theoretical, numerical = tf.test.compute_gradient(fn, [features], delta=1e-3)
  np.testing.assert_allclose(theoretical[0], numerical[0], atol=2e-3)


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_multilevel_equals_single_level(impl):
  rng = np.random.default_rng(3)
  strides = [4, 8, 16]
  feats = [rng.normal(size=(2, 40 // s, 56 // s, 4)).astype(np.float32) for s in strides]
  rois = _random_rois(rng, 20, 10, 14, 4)
  bidx = rng.integers(0, 2, 20).astype(np.int32)
  levels = rng.integers(0, 3, 20).astype(np.int32)
  kw = dict(output_size=3, sampling_ratio=0, aligned=False)
  upstream = rng.normal(size=(20, 3, 3, 4)).astype(np.float32)
  tensors = [tf.constant(f) for f in feats]
  with tf.GradientTape() as tape:
    tape.watch(tensors)
    out = multilevel_roi_align(tensors, rois, bidx, levels, spatial_scales=[1 / s for s in strides],
                               implementation=impl, **kw)
    loss = tf.reduce_sum(out * upstream)
  grads = tape.gradient(loss, tensors)
  want_grads = [np.zeros_like(f) for f in feats]
  for level, stride in enumerate(strides):
    sel = np.nonzero(levels == level)[0]
    o, g = _run(impl, feats[level], rois[sel], bidx[sel], upstream[sel],
                spatial_scale=1 / stride, **kw)
    np.testing.assert_allclose(out.numpy()[sel], o, rtol=1e-5, atol=1e-5)
    want_grads[level] = g
  for g, want in zip(grads, want_grads, strict=True):
    np.testing.assert_allclose(g.numpy(), want, rtol=1e-4, atol=1e-4)


@needs_library
def test_multilevel_matches_reference_over_channel_blocks():
  """The CPU backward splits channels into blocks of 64: 150 channels (two full blocks and a
  partial one), three images in shuffled order and most RoIs on the finest level."""
  rng = np.random.default_rng(7)
  strides = [4, 8, 16]
  feats = [tf.constant(rng.normal(size=(3, 48 // s, 64 // s, 150)).astype(np.float32))
           for s in strides]
  rois = _random_rois(rng, 30, 12, 16, 4)
  bidx = rng.integers(0, 3, 30).astype(np.int32)
  levels = rng.choice(3, 30, p=[0.7, 0.2, 0.1]).astype(np.int32)
  upstream = rng.normal(size=(30, 4, 5, 150)).astype(np.float32)
  results = []
  for impl in ("custom", "reference"):
    with tf.GradientTape() as tape:
      tape.watch(feats)
      out = multilevel_roi_align(feats, rois, bidx, levels,
                                 spatial_scales=[1 / s for s in strides], output_size=(4, 5),
                                 sampling_ratio=2, aligned=False, implementation=impl)
      loss = tf.reduce_sum(out * upstream)
    results.append((out.numpy(), [g.numpy() for g in tape.gradient(loss, feats)]))
  (out, grads), (ref_out, ref_grads) = results
  np.testing.assert_allclose(out, ref_out, rtol=1e-5, atol=1e-5)
  for g, want in zip(grads, ref_grads, strict=True):
    assert np.abs(want).max() > 0.1
    np.testing.assert_allclose(g, want, rtol=1e-4, atol=1e-4)


@needs_library
def test_multilevel_with_one_level_in_graph():
  rng = np.random.default_rng(4)
  feats = tf.constant(rng.normal(size=(1, 6, 7, 2)).astype(np.float32))
  rois = np.array([[0.5, 1.0, 9.0, 11.0], [3.0, 2.0, 6.0, 4.0]], np.float32)

  @tf.function
  def both(f):
    with tf.GradientTape(persistent=True) as tape:
      tape.watch(f)
      multi = multilevel_roi_align([f], rois, [0, 0], [0, 0], output_size=2,
                                   spatial_scales=[0.5])
      single = roi_align(f, rois, [0, 0], output_size=2, spatial_scale=0.5)
    return multi, single, tape.gradient(multi, f), tape.gradient(single, f)

  multi, single, grad_multi, grad_single = both(feats)
  np.testing.assert_allclose(multi.numpy(), single.numpy(), rtol=1e-6)
  np.testing.assert_allclose(grad_multi.numpy(), grad_single.numpy(), rtol=1e-6)


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_nonfinite_rois_give_zeros(impl):
  rng = np.random.default_rng(5)
  features = rng.normal(size=(1, 8, 8, 3)).astype(np.float32)
  rois = np.array([[1, 1, 20, 20], [np.nan, 1, 5, 5], [1, 1, np.inf, 5], [0, -np.inf, 3, 3],
                   [2, 2, 9, 9]], np.float32)
  for sampling_ratio in (0, 2):
    out, grad = _run(impl, features, rois, [0] * 5, np.ones((5, 2, 2, 3), np.float32),
                     output_size=2, spatial_scale=0.5, sampling_ratio=sampling_ratio)
    np.testing.assert_array_equal(out[1:4], 0.0)
    assert np.all(np.abs(out[[0, 4]]).sum(axis=(1, 2, 3)) > 0)
    assert np.all(np.isfinite(grad))
    _, grad_finite = _run(impl, features, rois[[0, 4]], [0, 0], np.ones((2, 2, 2, 3), np.float32),
                          output_size=2, spatial_scale=0.5, sampling_ratio=sampling_ratio)
    np.testing.assert_allclose(grad, grad_finite, rtol=1e-6, atol=1e-6)


def _raw_forward(**overrides):
  args = dict(features=tf.zeros([2, 4, 5, 3]), rois=tf.zeros([3, 4]),
              batch_indices=tf.zeros([3], tf.int32), spatial_scale=1.0, pooled_height=2,
              pooled_width=2, sampling_ratio=2, aligned=False)
  args.update(overrides)
  return custom_ops.load().tfdet_roi_align(**args)


def _raw_multilevel(**overrides):
  args = dict(features=[tf.zeros([2, 4, 5, 3]), tf.zeros([2, 2, 3, 3])], rois=tf.zeros([3, 4]),
              batch_indices=tf.zeros([3], tf.int32), levels=tf.zeros([3], tf.int32),
              spatial_scales=[1.0, 0.5], pooled_height=2, pooled_width=2)
  args.update(overrides)
  return custom_ops.load().tfdet_multi_level_roi_align(**args)


_ERRORS = (tf.errors.InvalidArgumentError, ValueError, TypeError)


# Bad input the compiled ops (or the wrappers in front of them) must name.
_BAD_INPUTS_CUSTOM = [
    (lambda: _raw_forward(features=tf.zeros([4, 5, 3])), "features"),
    (lambda: _raw_forward(rois=tf.zeros([3, 5])), "rois"),
    (lambda: _raw_forward(rois=tf.zeros([3])), "rois"),
    (lambda: _raw_forward(batch_indices=tf.zeros([2], tf.int32)), "batch_indices"),
    (lambda: _raw_forward(batch_indices=tf.constant([0, 2, 1])), "batch_indices"),
    (lambda: _raw_forward(batch_indices=tf.constant([0, -1, 1])), "batch_indices"),
    (lambda: _raw_forward(pooled_height=0), "pooled_height"),
    (lambda: _raw_forward(pooled_width=-2), "pooled_width"),
    (lambda: _raw_forward(sampling_ratio=-1), "sampling_ratio"),
    (lambda: _raw_forward(features=tf.zeros([2, 4, 5, 3], tf.int32)), "T"),
    (lambda: roi_align(tf.zeros([1, 4, 4, 1], tf.int32), tf.zeros([1, 4]), [0], output_size=2,
                       spatial_scale=1.0), "features"),
    (lambda: roi_align(tf.zeros([1, 4, 4, 1]), tf.zeros([1, 4], tf.float64), [0], output_size=2,
                       spatial_scale=1.0), "rois"),
    (lambda: roi_align(tf.zeros([1, 4, 4, 1]), tf.zeros([1, 4]), tf.zeros([1]), output_size=2,
                       spatial_scale=1.0), "batch_indices"),
    (lambda: multilevel_roi_align([tf.zeros([1, 4, 4, 1])], tf.zeros([1, 4]), [0], [0.0],
                                  output_size=2, spatial_scales=[1.0]), "levels"),
    (lambda: _raw_multilevel(levels=tf.constant([0, 2, 1])), "levels"),
    (lambda: _raw_multilevel(levels=tf.zeros([4], tf.int32)), "levels"),
    (lambda: _raw_multilevel(spatial_scales=[1.0]), "spatial_scales"),
    (lambda: _raw_multilevel(features=[tf.zeros([2, 4, 5, 3]), tf.zeros([2, 2, 3, 4])]),
     "features[1]"),
    (lambda: roi_align(tf.zeros([1, 4, 4, 1]), tf.zeros([1, 4]), [0], output_size=(0, 2),
                       spatial_scale=1.0), "output_size"),
    (lambda: roi_align(tf.zeros([1, 4, 4, 1]), tf.zeros([1, 4]), [0], output_size=2,
                       spatial_scale=1.0, sampling_ratio=-1), "sampling_ratio"),
    (lambda: multilevel_roi_align([tf.zeros([1, 4, 4, 1])], tf.zeros([1, 4]), [0], [0],
                                  output_size=2, spatial_scales=[1.0, 2.0]), "spatial_scales"),
]
# The same checks in the pure-TF references.
_BAD_INPUTS_REFERENCE = [
    (lambda: roi_align(tf.zeros([1, 4, 4, 1]), tf.zeros([1, 4]), [0], output_size=2,
                       spatial_scale=1.0, implementation="fast"), "implementation"),
    (lambda: roi_align(tf.zeros([1, 4, 4, 1]), tf.zeros([1, 4]), [3], output_size=2,
                       spatial_scale=1.0, implementation="reference"), "batch_indices"),
    (lambda: multilevel_roi_align([tf.zeros([1, 4, 4, 1])], tf.zeros([1, 4]), [0], [1],
                                  output_size=2, spatial_scales=[1.0], implementation="reference"),
     "levels"),
]


@pytest.mark.parametrize("call, name",
                         [custom(*case) for case in _BAD_INPUTS_CUSTOM] + _BAD_INPUTS_REFERENCE)
def test_bad_input_names_argument(call, name):
  with pytest.raises(_ERRORS, match=name.replace("[", r"\[").replace("]", r"\]")):
    call()


@needs_library
def test_bad_input_in_graph_shape_function():
  @tf.function(input_signature=[tf.TensorSpec([None, 4, 5, 3]), tf.TensorSpec([None, 4]),
                                tf.TensorSpec([None], tf.int32)])
  def ok(f, r, b):
    return roi_align(f, r, b, output_size=(7, 5), spatial_scale=1.0)

  out = ok.get_concrete_function().structured_outputs
  assert out.shape.as_list() == [None, 7, 5, 3]
  with pytest.raises(_ERRORS, match="batch_indices"):
    tf.function(lambda: _raw_forward(batch_indices=tf.zeros([2], tf.int32))).get_concrete_function()
  with pytest.raises(_ERRORS, match="features"):
    tf.function(lambda: _raw_forward(features=tf.zeros([2, 4, 5]))).get_concrete_function()


@needs_library
def test_grad_op_validates_features_shape():
  lib = custom_ops.load()
  args = dict(grads=tf.zeros([3, 2, 2, 3]), rois=tf.zeros([3, 4]),
              batch_indices=tf.zeros([3], tf.int32), spatial_scale=1.0, pooled_height=2,
              pooled_width=2)
  with pytest.raises(_ERRORS, match="features_shape"):
    lib.tfdet_roi_align_grad(features_shape=tf.constant([2, 4, 5]), **args)
  with pytest.raises(_ERRORS, match="grads"):
    lib.tfdet_roi_align_grad(features_shape=tf.constant([2, 4, 5, 7]), **args)
  grad = lib.tfdet_roi_align_grad(features_shape=tf.constant([2, 4, 5, 3]), **args)
  assert grad.shape == (2, 4, 5, 3)


@needs_library
@needs_gpu
@pytest.mark.parametrize("dtype", [tf.float32, tf.float16])
def test_gpu_matches_cpu(dtype):
  if not custom_ops.built_with_cuda():
    pytest.skip("op library built without CUDA")
  rng = np.random.default_rng(11)
  features = rng.normal(size=(2, 20, 24, 8)).astype(np.float32)
  rois = _random_rois(rng, 64, 20, 24, 4)
  bidx = rng.integers(0, 2, 64).astype(np.int32)
  levels = rng.integers(0, 2, 64).astype(np.int32)
  upstream = rng.normal(size=(64, 7, 7, 8)).astype(np.float32)
  kw = dict(output_size=7, sampling_ratio=0, aligned=True)
  with tf.device("/CPU:0"):
    want, want_grad = _run("custom", features, rois, bidx, upstream, spatial_scale=0.25, **kw)
  with tf.device("/GPU:0"):
    f = tf.cast(tf.constant(features), dtype)
    feats = [f, f[:, ::2, ::2]]
    with tf.GradientTape() as tape:
      tape.watch(f)
      out = roi_align(f, rois, bidx, spatial_scale=0.25, **kw)
      multi = multilevel_roi_align(feats, rois, bidx, levels, spatial_scales=[0.25, 0.125], **kw)
      loss = tf.reduce_sum(tf.cast(out, tf.float32) * upstream)
    grad = tape.gradient(loss, f)
  tol = 1e-4 if dtype == tf.float32 else 3e-2
  np.testing.assert_allclose(tf.cast(out, tf.float32).numpy(), want, rtol=tol, atol=tol)
  np.testing.assert_allclose(tf.cast(grad, tf.float32).numpy(), want_grad, rtol=tol, atol=tol)
  with tf.device("/CPU:0"):
    want_multi = multilevel_roi_align([tf.cast(x, tf.float32) for x in feats], rois, bidx, levels,
                                      spatial_scales=[0.25, 0.125], **kw)
  np.testing.assert_allclose(tf.cast(multi, tf.float32).numpy(), want_multi.numpy(), rtol=tol,
                             atol=tol)
  with tf.device("/GPU:0"), pytest.raises(_ERRORS, match="batch_indices"):
    roi_align(f, rois, np.full(64, 5, np.int32), spatial_scale=0.25, **kw)


@pytest.mark.skipif(shutil.which(os.environ.get("CXX", "g++")) is None, reason="no g++")
def test_harness_cpu_path(tmp_path):
  # Build the harness in a temporary copy of custom_ops/ (the default build
  # dir is shared with other runs).
  ops = tmp_path / "custom_ops"
  shutil.copytree(ROOT / "custom_ops", ops, ignore=shutil.ignore_patterns("build"))
  build = subprocess.run(["bash", str(ops / "harness" / "build.sh"), "--cpu-only"],
                         capture_output=True, text=True, timeout=300)
  assert build.returncode == 0, build.stdout + build.stderr
  check = subprocess.run([sys.executable, str(ops / "harness" / "check_roi_align.py"),
                          "--cpu-only"], capture_output=True, text=True, timeout=120)
  assert check.returncode == 0, check.stdout + check.stderr
  assert "PASS" in check.stdout
