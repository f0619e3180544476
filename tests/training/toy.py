"""A tiny deterministic regression problem for the training-loop tests (no BN)."""

import keras
import numpy as np
import tensorflow as tf

NUM_EXAMPLES = 64


def examples(nan_at=None, huge_at=None):
  """The regression data; example `nan_at` has a NaN target, `huge_at` a 1e15 one (its
  squared error, ~1e30, is finite but wrecks the weights)."""
  rng = np.random.default_rng(0)
  x = rng.normal(size=(NUM_EXAMPLES, 3)).astype(np.float32)
  y = (x @ np.array([[1.0], [-2.0], [0.5]], np.float32) + 0.3).astype(np.float32)
  if nan_at is not None:
    y[nan_at] = np.nan
  if huge_at is not None:
    y[huge_at] = 1e15
  return x, y


def model_fn():
  model = keras.Sequential([
      keras.Input((3,)),
      keras.layers.Dense(4, activation="tanh",
                         kernel_initializer=keras.initializers.RandomNormal(seed=1)),
      keras.layers.Dense(1, kernel_initializer=keras.initializers.RandomNormal(seed=2)),
  ])
  return model


def loss_fn(model, batch):
  pred = model(batch["x"], training=True)
  mse = tf.reduce_mean(tf.square(pred - batch["y"]))
  return {"loss_mse": mse, "total_loss": mse}


def dataset_fn_for(global_batch, nan_at=None, *, shuffle=False, seeds=None, huge_at=None):
  """Per-pipeline, per-replica batches of consecutive examples, repeated.

  In order unless `shuffle` (a seeded shuffle of the examples, reshuffled
  each epoch); `seeds`: a list the seed of every call is appended to.
  """
  def dataset_fn(ctx, seed):
    if seeds is not None:
      seeds.append(seed)
    x, y = examples(nan_at, huge_at)
    ds = tf.data.Dataset.from_tensor_slices({"x": x, "y": y})
    ds = ds.shard(ctx.num_input_pipelines, ctx.input_pipeline_id)
    if shuffle:
      ds = ds.shuffle(NUM_EXAMPLES, seed=seed)
    return ds.repeat().batch(ctx.get_per_replica_batch_size(global_batch), drop_remainder=True)
  return dataset_fn


def fingerprint_loss_fn(model, batch):
  """`loss_fn` plus "input_sum": the sum of the batch's inputs (which examples it holds)."""
  losses = loss_fn(model, batch)
  return {**losses, "input_sum": tf.reduce_sum(batch["x"])}


def weights(model):
  return [np.array(v) for v in model.trainable_variables]
