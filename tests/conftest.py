"""Test setup: quiet TF logs, and no random state leaking from one test into the next."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import random  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402
from keras.src.backend.common import global_state  # noqa: E402
from keras.src.random import seed_generator  # noqa: E402
from keras.src.utils import rng_utils  # noqa: E402

from tests import shared_data  # noqa: E402


def clear_random_state():
  """No global seed anywhere: TF's (and its op-seed counter), Keras', NumPy's, Python's.

  `keras.utils.set_random_seed` sets all four; a test that calls it would
  otherwise fix the random streams (tf.data's seeded shuffles included, which
  combine the op seed with the global one) of every test after it.
  """
  tf.random.set_seed(None)
  global_state.set_global_attribute(rng_utils.GLOBAL_RANDOM_SEED, None)
  global_state.set_global_attribute(seed_generator.GLOBAL_SEED_GENERATOR, None)
  np.random.seed(None)
  random.seed(None)


@pytest.fixture(autouse=True)
def _clean_random_state():
  clear_random_state()
  yield
  clear_random_state()



@pytest.fixture(scope="session")
def synthetic_data(tmp_path_factory):
  """The paths of the synthetic data set the tests share (`tests.shared_data`), generated once."""
  return shared_data.synthetic_tfrecords(str(tmp_path_factory.mktemp("synthetic")))
