"""The synthetic data set that every test reading shards shares (the `synthetic_data`
fixture of tests/conftest.py generates it once per session)."""

import glob

from tfdet.data import synthetic

# The generator's image sizes; 4 training images in one shard; 8 validation images in 4
# shards of 2 (a test that wants fewer images reads one shard: `first_shard`).
SYNTHETIC = dict(num_train_images=4, num_val_images=8, image_size=(192, 320), num_train_shards=1,
                 num_val_shards=4, seed=0)


def synthetic_tfrecords(data_dir):
  """`synthetic.ensure_synthetic_tfrecords` of the shared settings under ``data_dir``."""
  return synthetic.ensure_synthetic_tfrecords(data_dir, **SYNTHETIC)


def first_shard(pattern):
  """The first shard (sorted) of a glob pattern."""
  return sorted(glob.glob(pattern))[0]
