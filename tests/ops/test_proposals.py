"""Tests of the proposal-generation custom op against its pure-TF reference,
by hand, on bad and non-finite input, and through the ctypes harness."""

import math
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tests.ops.op_library import IMPLEMENTATIONS, needs_gpu, needs_library
from tfdet.ops import anchors as anchor_ops
from tfdet.ops import custom_ops
from tfdet.ops.proposals import generate_proposals

ROOT = pathlib.Path(__file__).resolve().parents[2]
NAN, INF = float("nan"), float("inf")

# (height, width) of P2..P6 for a 96x160 padded image; level 2 is empty.
FPN_SIZES = [(24, 40), (12, 20), (0, 10), (3, 5), (2, 3)]
STRIDES = [4, 8, 16, 32, 64]


def _inputs(seed, convention, sizes=FPN_SIZES, batch=2, delta_std=0.8):
  """Random scores, deltas and Detectron anchors; boxes cross the border
  because image_info is smaller than the padded feature extent."""
  rng = np.random.default_rng(seed)
  scores, deltas, anchors = [], [], []
  for (h, w), stride in zip(sizes, STRIDES, strict=False):
    cell = anchor_ops.generate_cell_anchors(stride, (8 * stride,), (0.5, 1.0, 2.0),
                                            convention=convention)
    anchors.append(anchor_ops.grid_anchors(cell, stride=stride, height=h, width=w))
    scores.append(tf.constant(rng.random((batch, h, w, 3), np.float32)))
    deltas.append(tf.constant(rng.normal(0.0, delta_std, (batch, h, w, 12)).astype(np.float32)))
  info = tf.constant([[90.0, 150.0, 1.5], [80.0, 127.0, 0.75]][:batch], tf.float32)
  return scores, deltas, anchors, info


def _both(scores, deltas, anchors, info, **kw):
  got = generate_proposals(scores, deltas, anchors, info, implementation="custom", **kw)
  want = generate_proposals(scores, deltas, anchors, info, implementation="reference", **kw)
  return [t.numpy() for t in got], [t.numpy() for t in want]


def _assert_same(got, want):
  np.testing.assert_array_equal(got[2], want[2])
  np.testing.assert_allclose(got[0], want[0], atol=2e-3)
  np.testing.assert_allclose(got[1], want[1], atol=1e-6)


@needs_library
@pytest.mark.parametrize("convention", ["detectron", "modern"])
@pytest.mark.parametrize("per_batch", [False, True])
@pytest.mark.parametrize("num_levels", [1, 5])
def test_matches_reference(convention, per_batch, num_levels):
  scores, deltas, anchors, info = _inputs(7 + num_levels, convention)
  n = num_levels
  got, want = _both(scores[:n], deltas[:n], anchors[:n], info, pre_nms_top_n=400,
                    post_nms_top_n=150, nms_threshold=0.7, min_size=2.0,
                    convention=convention, collect_top_n=300, collect_per_batch=per_batch)
  _assert_same(got, want)
  assert got[2].min() > 20
  assert np.all(got[0][..., 2] >= got[0][..., 0])
  # Clipped to each image; sorted by descending score per image.
  for b, (h, w, _) in enumerate(info.numpy()):
    k = got[2][b]
    assert got[0][b, :k, 2].max() <= w and got[0][b, :k, 3].max() <= h
    assert np.all(np.diff(got[1][b, :k]) <= 0)
    assert not got[0][b, k:].any() and not got[1][b, k:].any()
  if per_batch:
    assert got[2].sum() <= 300


@needs_library
def test_all_candidates_and_small_collect():
  """pre/post 0 (all), a tight NMS and a collect smaller than the proposals."""
  scores, deltas, anchors, info = _inputs(3, "detectron")
  got, want = _both(scores, deltas, anchors, info, pre_nms_top_n=0, post_nms_top_n=0,
                    nms_threshold=0.5, min_size=0.0, convention="detectron",
                    collect_top_n=50, collect_per_batch=False)
  _assert_same(got, want)
  np.testing.assert_array_equal(got[2], [50, 50])


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_tf_function_and_static_shapes(implementation):
  scores, deltas, anchors, info = _inputs(4, "modern")
  kw = dict(pre_nms_top_n=100, post_nms_top_n=50, convention="modern", collect_top_n=64,
            implementation=implementation)
  fn = tf.function(lambda s, d: generate_proposals(s, d, anchors, info, **kw))
  rois, roi_scores, num = fn(scores, deltas)
  assert rois.shape == (2, 64, 4) and roi_scores.shape == (2, 64) and num.shape == (2,)
  eager = generate_proposals(scores, deltas, anchors, info, **kw)
  # Exact for the compiled op; the reference's graph may fuse float ops differently.
  np.testing.assert_allclose(rois.numpy(), eager[0].numpy(), rtol=0, atol=1e-4)
  np.testing.assert_array_equal(num.numpy(), eager[2].numpy())


def _hand_level(score_values):
  """One level, H=1, W=5, A=1, image 50x60 at scale 1."""
  anchors = tf.constant([[0, 0, 15, 15], [2, 0, 17, 15], [40, 30, 55, 45], [60, 0, 75, 15],
                         [0, 0, 15, 15]], tf.float32)
  deltas = np.zeros((1, 1, 5, 4), np.float32)
  deltas[0, 0, 2] = [0.5, 0.0, math.log(2.0), 0.0]
  scores = tf.constant(np.array(score_values, np.float32).reshape(1, 1, 5, 1))
  info = tf.constant([[50.0, 60.0, 1.0]])
  return [scores], [tf.constant(deltas)], [anchors], info


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("convention, box2", [("detectron", [40, 30, 59, 45]),
                                              ("modern", [40, 30, 60, 45])])
def test_hand_computed(implementation, convention, box2):
  # a3 (0.95) clips to a zero-width box at x = W - off and fails min_size 2;
  # a0 (0.9) is kept; a1 (0.8) has IoU 224/288 (detectron) or 195/255 (modern)
  # > 0.7 with a0 and is suppressed; a2 (0.7): dx 0.5, dw log 2 doubles the
  # width around centre 56 (detectron: aw 16, x1 = 56 - 16, x2 = 56 + 16 - 1)
  # or 55 (modern: aw 15), clipped at W - off; a4 has a NaN score.
  scores, deltas, anchors, info = _hand_level([0.9, 0.8, 0.7, 0.95, NAN])
  rois, roi_scores, num = generate_proposals(
      scores, deltas, anchors, info, pre_nms_top_n=10, post_nms_top_n=10, nms_threshold=0.7,
      min_size=2.0, convention=convention, collect_top_n=4, implementation=implementation)
  np.testing.assert_array_equal(num.numpy(), [2])
  np.testing.assert_allclose(rois.numpy()[0], [[0, 0, 15, 15], box2, [0] * 4, [0] * 4])
  np.testing.assert_allclose(roi_scores.numpy()[0], [0.9, 0.7, 0, 0])
  # pre_nms_top_n = 2 takes a3 and a0 before the size filter drops a3.
  _, _, num = generate_proposals(
      scores, deltas, anchors, info, pre_nms_top_n=2, post_nms_top_n=10, min_size=2.0,
      convention=convention, collect_top_n=4, implementation=implementation)
  np.testing.assert_array_equal(num.numpy(), [1])
  # Without the min size the 1-pixel box a3 survives in "detectron" only.
  _, _, num = generate_proposals(
      scores, deltas, anchors, info, pre_nms_top_n=10, post_nms_top_n=10,
      convention=convention, collect_top_n=4, implementation=implementation)
  np.testing.assert_array_equal(num.numpy(), [3 if convention == "detectron" else 2])


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_ties_prefer_lower_index(implementation):
  # a0 and a4 are the same anchor with the same score: index 0 is taken first.
  scores, deltas, anchors, info = _hand_level([0.9, 0.1, 0.1, 0.1, 0.9])
  d = deltas[0].numpy()
  d[0, 0, 4] = [0.01, 0.0, 0.0, 0.0]  # a4 shifted by 0.16 px: distinguishable
  rois, _, num = generate_proposals(
      scores, [tf.constant(d)], anchors, info, pre_nms_top_n=1, post_nms_top_n=1,
      convention="detectron", collect_top_n=1, implementation=implementation)
  np.testing.assert_allclose(rois.numpy()[0, 0], [0, 0, 15, 15])


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("per_batch, want_num", [(False, [2, 2]), (True, [2, 1])])
def test_collect_per_batch_by_hand(implementation, per_batch, want_num):
  anchors = tf.constant([[0, 0, 9, 9], [20, 20, 29, 29]], tf.float32)
  scores = tf.constant([[[[0.9, 0.7]]], [[[0.8, 0.6]]]])  # [2, 1, 1, 2]
  deltas = tf.zeros([2, 1, 1, 8])
  info = tf.constant([[40.0, 40.0, 1.0], [40.0, 40.0, 1.0]])
  _, roi_scores, num = generate_proposals(
      [scores], [deltas], [anchors], info, pre_nms_top_n=5, post_nms_top_n=5,
      convention="detectron", collect_top_n=3, collect_per_batch=per_batch,
      implementation=implementation)
  np.testing.assert_array_equal(num.numpy(), want_num)
  want = [[0.9, 0.7, 0], [0.8, 0.6, 0]] if not per_batch else [[0.9, 0.7, 0], [0.8, 0, 0]]
  np.testing.assert_allclose(roi_scores.numpy(), want)


@needs_library
@pytest.mark.parametrize("convention", ["detectron", "modern"])
def test_non_finite_inputs(convention):
  scores, deltas, anchors, info = _inputs(5, convention, sizes=FPN_SIZES[:2])
  s = scores[0].numpy()
  s[0, 0, :4, 0] = [NAN, INF, -INF, NAN]
  d = deltas[0].numpy()
  d[0, 1, 2, :] = NAN
  d[1, 2, 3, 2] = INF
  d[1, 2, 4, 0] = -INF
  a = anchors[1].numpy()
  a[5] = [INF, 0, 1, 1]
  a[9, 3] = NAN
  scores = [tf.constant(s), scores[1]]
  deltas = [tf.constant(d), deltas[1]]
  anchors = [anchors[0], tf.constant(a)]
  got, want = _both(scores, deltas, anchors, info, pre_nms_top_n=0, post_nms_top_n=100,
                    convention=convention, collect_top_n=200)
  _assert_same(got, want)
  assert np.all(np.isfinite(got[0])) and np.all(np.isfinite(got[1]))
  # An image with a bad image_info gets no proposals.
  bad_info = tf.constant([[90.0, 150.0, 0.0], [80.0, NAN, 1.0]])
  got, want = _both(scores, deltas, anchors, bad_info, pre_nms_top_n=50, post_nms_top_n=50,
                    convention=convention, collect_top_n=20)
  np.testing.assert_array_equal(got[2], [0, 0])
  np.testing.assert_array_equal(want[2], [0, 0])


def _raw_op(scores, deltas, anchors, info, **overrides):
  attrs = dict(pre_nms_top_n=10, post_nms_top_n=10, nms_threshold=0.7, min_size=0.0,
               legacy_plus_one=True, bbox_xform_clip=4.0, collect_top_n=5,
               collect_per_batch=False)
  attrs.update(overrides)
  return custom_ops.load().tfdet_generate_proposals(
      scores=scores, deltas=deltas, anchors=anchors, image_info=info, **attrs)


def _good():
  return ([tf.zeros([2, 3, 4, 2])], [tf.zeros([2, 3, 4, 8])], [tf.zeros([24, 4])],
          tf.ones([2, 3]))


@needs_library
@pytest.mark.parametrize("graph", [False, True])
@pytest.mark.parametrize("case, name", [
    ("scores_rank", "scores[0]"), ("deltas_rank", "deltas[0]"), ("anchors_cols", "anchors[0]"),
    ("deltas_channels", "deltas[0]"), ("anchor_rows", "anchors[0]"),
    ("scores_batch", "scores[0]"), ("deltas_hw", "deltas[0]"), ("info_shape", "image_info"),
])
def test_bad_shapes_name_the_argument(graph, case, name):
  s, d, a, info = _good()
  if case == "scores_rank":
    s = [tf.zeros([2, 12, 2])]
  elif case == "deltas_rank":
    d = [tf.zeros([2, 12, 8])]
  elif case == "anchors_cols":
    a = [tf.zeros([24, 5])]
  elif case == "deltas_channels":
    d = [tf.zeros([2, 3, 4, 6])]
  elif case == "anchor_rows":
    a = [tf.zeros([23, 4])]
  elif case == "scores_batch":
    s = [tf.zeros([3, 3, 4, 2])]
  elif case == "deltas_hw":
    d = [tf.zeros([2, 3, 5, 8])]
  elif case == "info_shape":
    info = tf.ones([2, 2])
  fn = tf.function(_raw_op) if graph else _raw_op
  with pytest.raises((tf.errors.InvalidArgumentError, ValueError), match=name.replace("[", r"\[")):
    fn(s, d, a, info)


@needs_library
@pytest.mark.parametrize("attr", ["pre_nms_top_n", "post_nms_top_n", "collect_top_n"])
def test_negative_top_n_in_the_op(attr):
  s, d, a, info = _good()
  with pytest.raises(tf.errors.InvalidArgumentError, match=attr):
    _raw_op(s, d, a, info, **{attr: -1})


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("attr", ["pre_nms_top_n", "post_nms_top_n", "collect_top_n"])
def test_negative_top_n(attr, implementation):
  s, d, a, info = _good()
  kw = dict(pre_nms_top_n=10, post_nms_top_n=10, collect_top_n=5)
  kw[attr] = -1
  with pytest.raises(ValueError, match=attr):
    generate_proposals(s, d, a, info, convention="detectron", implementation=implementation,
                       **kw)


def test_unknown_implementation():
  s, d, a, info = _good()
  with pytest.raises(ValueError, match="implementation"):
    generate_proposals(s, d, a, info, convention="detectron", pre_nms_top_n=1,
                       post_nms_top_n=1, collect_top_n=1, implementation="fast")


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_no_gradient(implementation):
  scores, deltas, anchors, info = _inputs(1, "detectron", sizes=FPN_SIZES[:1])
  with tf.GradientTape() as tape:
    tape.watch(scores[0])
    _, roi_scores, _ = generate_proposals(scores, deltas, anchors, info, pre_nms_top_n=10,
                                          post_nms_top_n=10, convention="detectron",
                                          collect_top_n=10, implementation=implementation)
  assert tape.gradient(roi_scores, scores[0]) is None


@needs_library
@needs_gpu
@pytest.mark.parametrize("per_batch", [False, True])
def test_gpu_matches_cpu(per_batch):
  scores, deltas, anchors, info = _inputs(11, "detectron")
  kw = dict(pre_nms_top_n=400, post_nms_top_n=150, convention="detectron", collect_top_n=300,
            collect_per_batch=per_batch)
  with tf.device("/CPU:0"):
    cpu = [t.numpy() for t in generate_proposals(scores, deltas, anchors, info, **kw)]
  with tf.device("/GPU:0"):
    gpu = [t.numpy() for t in generate_proposals(scores, deltas, anchors, info, **kw)]
  _assert_same(gpu, cpu)


@pytest.mark.skipif(shutil.which("g++") is None, reason="g++ not found")
def test_harness_cpu_only():
  build = subprocess.run([str(ROOT / "custom_ops/harness/build.sh"), "--cpu-only"],
                         capture_output=True, text=True, cwd=ROOT)
  assert build.returncode == 0, build.stdout + build.stderr
  check = subprocess.run([sys.executable, str(ROOT / "custom_ops/harness/check_proposals.py"),
                          "--cpu-only"], capture_output=True, text=True, cwd=ROOT)
  assert check.returncode == 0, check.stdout + check.stderr
  assert "ALL OK" in check.stdout
