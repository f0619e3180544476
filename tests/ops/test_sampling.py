"""Static-shape random subsets: counts, membership, determinism, distribution."""

import numpy as np
import tensorflow as tf

from tfdet.ops import sampling


def test_without_replacement_counts_and_membership():
  rng = np.random.default_rng(0)
  cand = rng.uniform(size=(4, 50)) < 0.4
  num = tf.constant([0, 3, 10, 100])
  got = sampling.subsample_without_replacement(cand, num, seed=tf.constant([1, 2])).numpy()
  assert not (got & ~cand).any()
  np.testing.assert_array_equal(got.sum(1), np.minimum([0, 3, 10, 100], cand.sum(1)))


def test_without_replacement_is_uniform_and_seeded():
  cand = np.ones((1, 10), bool)
  hits = np.zeros(10)
  for i in range(300):
    hits += sampling.subsample_without_replacement(cand, 2, seed=tf.constant([i, 0])).numpy()[0]
  assert hits.sum() == 600 and hits.min() > 30  # each ~60 expected
  a = sampling.subsample_without_replacement(cand, 3, seed=tf.constant([7, 7]))
  b = sampling.subsample_without_replacement(cand, 3, seed=tf.constant([7, 7]))
  np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_with_replacement_draws_at_most_num_and_keeps_small_rows():
  cand = np.zeros((3, 1000), bool)
  cand[0, :900] = True
  cand[1, 10:14] = True  # fewer candidates than draws: all kept
  got = sampling.subsample_with_replacement(cand, tf.constant([256, 256, 5]), 256,
                                            seed=tf.constant([3, 4])).numpy()
  assert not (got & ~cand).any()
  n0 = got[0].sum()
  # 256 draws among 900 with replacement: expected distinct 900 * (1 - (1 - 1/900)^256) = 224.
  assert 200 < n0 < 256
  np.testing.assert_array_equal(got[1], cand[1])
  assert got[2].sum() == 0
