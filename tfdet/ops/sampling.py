"""Random subset selection with static shapes (for anchor and RoI sampling).

Both functions work row-wise on [B, N] boolean candidate masks and return a
[B, N] boolean mask of the chosen positions, so no shape depends on data.
"""

import tensorflow as tf


def _uniform(shape, seed):
  if seed is None:
    return tf.random.uniform(shape)
  return tf.random.stateless_uniform(shape, seed=seed)


def subsample_without_replacement(candidates, num, *, seed=None):
  """Chooses min(num, #candidates) candidates of each row uniformly at random.

  Args:
    candidates: [B, N] bool.
    num: int or [B] int32, how many to keep per row.
    seed: None, or a stateless seed ([2] int32 / int64 tensor).

  Returns:
    [B, N] bool, a subset of `candidates`.
  """
  candidates = tf.convert_to_tensor(candidates, tf.bool)
  keys = tf.where(candidates, _uniform(tf.shape(candidates), seed), -1.0)  # [B, N]
  order = tf.argsort(keys, axis=1, direction="DESCENDING")
  ranks = tf.argsort(order, axis=1)  # rank of each position in the random order
  num = tf.cast(num, tf.int32)
  num = tf.reshape(num, [-1, 1]) if num.shape.rank == 1 else num
  return tf.logical_and(candidates, ranks < num)


def subsample_with_replacement(candidates, num, max_num, *, seed=None):
  """Marks the candidates hit by `num` uniform draws with replacement.

  This is Detectron's RPN background sampling (npr.randint over the
  background indices): an index drawn twice counts once, so fewer than
  `num` positions may be marked. Rows with no more than `num` candidates
  keep all of them, as Detectron does.

  Args:
    candidates: [B, N] bool.
    num: [B] int32 draws per row, each <= max_num.
    max_num: int, static upper bound of `num`.
    seed: None, or a stateless seed.

  Returns:
    [B, N] bool, a subset of `candidates`.
  """
  candidates = tf.convert_to_tensor(candidates, tf.bool)
  num = tf.cast(tf.reshape(num, [-1]), tf.int32)  # [B]
  count = tf.reduce_sum(tf.cast(candidates, tf.int32), axis=1)  # [B]
  batch = tf.shape(candidates)[0]
  n = tf.shape(candidates)[1]
  # Candidate positions first, in index order: [B, N].
  positions = tf.argsort(tf.cast(tf.logical_not(candidates), tf.int32), axis=1, stable=True)
  draws = tf.cast(tf.floor(_uniform([batch, max_num], seed)
                           * tf.cast(count, tf.float32)[:, None]), tf.int32)  # [B, max_num]
  draws = tf.minimum(draws, tf.maximum(count - 1, 0)[:, None])
  picked = tf.gather(positions, draws, batch_dims=1)  # [B, max_num]
  used = tf.logical_and(tf.range(max_num)[None, :] < num[:, None], count[:, None] > 0)
  rows = tf.broadcast_to(tf.range(batch)[:, None], tf.shape(picked))
  index = tf.reshape(tf.stack([rows, picked], axis=-1), [-1, 2])  # [B * max_num, 2]
  hits = tf.scatter_nd(index, tf.reshape(tf.cast(used, tf.int32), [-1]), tf.stack([batch, n]))
  drawn = tf.logical_and(candidates, hits > 0)
  keep_all = (count <= num)[:, None]
  return tf.where(keep_all, candidates, drawn)
