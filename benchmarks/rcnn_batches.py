"""Synthetic detection batches of the benchmarks: one scene, fed to tfdet's models.

A scene is plain numpy (so that a peer library's process can read the same
one from an .npz): images of `valid_hw` (the resized image) padded to
`padded_hw`, with `instances` boxes per image (x1, y1, x2, y2, resized
pixels), each a rectangle polygon with 17 visible keypoints inside it, and
`proposals` precomputed proposals per image.
"""

import numpy as np

MAX_INSTANCES = 16  # padded ground-truth rows per image
ORIGINAL_HW = (480, 800)  # the "original" image the 800x1333 resize came from


def scene(batch=1, *, valid_hw=(800, 1333), instances=8, proposals=1000, seed=0):
  """dict of numpy arrays: boxes [B, I, 4], keypoints [B, I, 17, 3], proposals [B, P, 4]."""
  rng = np.random.default_rng(seed)
  height, width = valid_hw
  big = min(300.0, 0.4 * min(valid_hw))  # box sides 40..300 at 800x1333, scaled down below
  xy = rng.uniform(0, [width - big, height - big], [batch, instances, 2])
  wh = rng.uniform(big * 40 / 300, big, [batch, instances, 2])
  boxes = np.concatenate([xy, xy + wh], -1).astype(np.float32)
  keypoints = np.zeros([batch, instances, 17, 3], np.float32)
  keypoints[..., :2] = boxes[:, :, None, :2] + rng.uniform(
      0, 1, [batch, instances, 17, 2]) * wh[:, :, None]
  keypoints[..., 2] = 2
  pxy = rng.uniform(0, [width - big / 3, height - big / 3], [batch, proposals, 2])
  props = np.concatenate([pxy, pxy + rng.uniform(big * 16 / 300, big, [batch, proposals, 2])],
                         -1)
  return {"boxes": boxes, "keypoints": keypoints, "proposals": props.astype(np.float32),
          "valid_hw": np.array(valid_hw, np.int32)}


def tfdet_batch(scene_arrays, padded_hw, *, seed=0):
  """The scene as tfdet's model input dict (keys.*), images random around the pixel mean."""
  import tensorflow as tf

  from tfdet.data import keys

  boxes = scene_arrays["boxes"]
  batch, instances = boxes.shape[:2]
  height, width = (int(s) for s in scene_arrays["valid_hw"])
  m, v = MAX_INSTANCES, 16
  gt = np.zeros([batch, m, 4], np.float32)
  gt[:, :instances] = boxes
  polys = np.zeros([batch, m, v, 2], np.float32)
  x1, y1, x2, y2 = (boxes[..., i] for i in range(4))
  polys[:, :instances, :4] = np.stack(
      [np.stack(c, -1) for c in ((x1, y1), (x2, y1), (x2, y2), (x1, y2))], 2)
  ids = -np.ones([batch, m, v], np.int32)
  ids[:, :instances, :4] = 0
  valid = np.broadcast_to(np.arange(m) < instances, [batch, m])
  kps = np.zeros([batch, m, 17, 3], np.float32)
  kps[:, :instances] = scene_arrays["keypoints"]
  props = scene_arrays["proposals"]
  scale = height / ORIGINAL_HW[0]
  info = np.tile([[height, width, scale, *ORIGINAL_HW]], [batch, 1]).astype(np.float32)
  rng = np.random.default_rng(seed)
  return {
      keys.IMAGES: tf.constant(rng.normal(0, 50, [batch, *padded_hw, 3]).astype(np.float32)),
      keys.IMAGE_INFO: tf.constant(info),
      keys.GT_BOXES: tf.constant(gt), keys.GT_CLASSES: tf.constant(valid.astype(np.int32)),
      keys.GT_VALID: tf.constant(valid), keys.GT_IS_CROWD: tf.constant(np.zeros([batch, m], bool)),
      keys.GT_POLYGONS: tf.constant(polys), keys.GT_POLYGON_IDS: tf.constant(ids),
      keys.GT_KEYPOINTS: tf.constant(kps),
      keys.PROPOSALS: tf.constant(props),
      keys.PROPOSAL_SCORES: tf.constant(
          np.tile(np.linspace(1, 0, props.shape[1], dtype=np.float32), [batch, 1])),
      keys.PROPOSALS_VALID: tf.ones(props.shape[:2], tf.bool),
  }


def fpn_rois(num_rois, batch, image_hw=(800, 1344), seed=0, rng=None):
  """[R, 4] RoIs (x1, y1, x2, y2 pixels) of sizes 16..800 spread over the FPN levels, and
  [R] image indices (the first R / batch in image 0, ...); drawn from `rng` if given, else
  from a generator seeded with `seed`."""
  rng = np.random.default_rng(seed) if rng is None else rng
  side = np.exp(rng.uniform(np.log(16), np.log(800), num_rois))
  aspect = np.exp(rng.uniform(np.log(0.5), np.log(2.0), num_rois))
  w, h = side * np.sqrt(aspect), side / np.sqrt(aspect)
  x1 = rng.uniform(0, image_hw[1] - np.minimum(w, image_hw[1] - 1))
  y1 = rng.uniform(0, image_hw[0] - np.minimum(h, image_hw[0] - 1))
  x2, y2 = np.minimum(x1 + w, image_hw[1] - 1), np.minimum(y1 + h, image_hw[0] - 1)
  rois = np.stack([x1, y1, x2, y2], axis=1).astype(np.float32)
  return rois, (np.arange(num_rois) * batch // num_rois).astype(np.int32)


def train_step(spec, model, batch, learning_rate):
  """A tf.function: one training step (forward, the spec's losses, backward, SGD with
  momentum 0.9) of `model` on `batch`; returns the total loss."""
  import tensorflow as tf

  optimizer = tf.keras.optimizers.SGD(learning_rate=learning_rate, momentum=0.9)

  @tf.function
  def step():
    with tf.GradientTape() as tape:
      losses = spec.loss(model, model(batch, training=True), batch)
    total = losses["total_loss"]
    grads = tape.gradient(total, model.trainable_variables)
    optimizer.apply_gradients(
        [(g, w) for g, w in zip(grads, model.trainable_variables, strict=True) if g is not None])
    return total

  return step
