"""tests/conftest.py clears every global seed around each test (the two tests run in order)."""

import random

import keras
import numpy as np
import tensorflow as tf
from keras.src.utils import rng_utils


def _global_seeds():
  return (tf.compat.v1.get_seed(None)[0], rng_utils.get_random_seed())


def test_a_test_that_sets_every_seed():
  assert _global_seeds() == (None, None)
  keras.utils.set_random_seed(7)
  assert _global_seeds() == (7, 7)


def test_the_next_test_starts_clean():
  assert _global_seeds() == (None, None)
  # Had the seed-7 state leaked, these would be the first draws of seed 7's streams.
  assert np.random.random() != np.random.RandomState(7).random_sample()
  assert random.random() != random.Random(7).random()
