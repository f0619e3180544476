"""`tfdet.train`'s command line in a process with 2 logical CPU devices (2 mirrored replicas).

  python -m tests.training.train_two_cpus --gin_file=... --model_dir=...
"""

import sys

import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

from absl import app  # noqa: E402

from tfdet import train  # noqa: E402

if __name__ == "__main__":
  train.define_flags()
  sys.exit(app.run(train.main))
