"""What a model config names: the function that builds a detector and the one that computes
its training losses.

Every detector family plugs in through a `DetectorSpec`. The model configs
(``gin_configs/models/*.gin``) bind one, once::

    spec.DetectorSpec:
      build = @builders.build_rcnn
      loss = @rcnn_losses.rcnn_losses

and every entry point (train, evaluate, export, infer, the quickstart) builds
whatever the config names, never a family by name. What a built detector
computes is told by the keys of its output dict (`outputs`): boxes, masks,
keypoints, proposals.

A family's contract:

* ``build(**overrides)`` returns a keras.Model; ``overrides`` may hold
  ``implementation`` ("custom" compiled ops, or "reference" pure TF for
  stock TF Serving). The model has a ``convention`` attribute (the box
  convention of its outputs), ``call(batch, training=...)`` takes the batch
  dict of `tfdet.data.keys` and returns a dict of `outputs` keys.
* ``loss(model, outputs, batch)`` returns a dict of float32 scalar losses,
  each a mean over the replica's batch, with their sum under
  `tfdet.modeling.losses.TOTAL_LOSS`.
"""

import dataclasses
from collections.abc import Callable

import tensorflow as tf

from tfdet.data import keys


@dataclasses.dataclass(frozen=True)
class DetectorSpec:
  """A detector family's two functions (module docstring).

  Attributes:
    build: (**overrides) -> keras.Model.
    loss: (model, outputs, batch) -> dict of scalar losses with TOTAL_LOSS.
  """
  build: Callable
  loss: Callable

  def build_model(self, **overrides):
    """The detector with its variables created (one inference on `dummy_batch`)."""
    model = self.build(**overrides)
    model(dummy_batch(), training=False)
    return model

  def losses(self, model, batch):
    """The training losses of `model` on `batch` (one training-mode forward)."""
    return self.loss(model, model(batch, training=True), batch)


def dummy_batch(size=128):
  """A zero image batch that builds a model's variables ([1, size, size, 3]).

  128 is a multiple of every canvas divisor (32 for FPN R-CNN, 128 for
  RetinaNet's P7). It carries one precomputed proposal (the whole image), for
  the models that read them; the others ignore it.
  """
  return {keys.IMAGES: tf.zeros([1, size, size, 3]),
          keys.IMAGE_INFO: tf.constant([[size, size, 1.0, size, size]], tf.float32),
          keys.PROPOSALS: tf.constant([[[0.0, 0.0, size - 1.0, size - 1.0]]]),
          keys.PROPOSAL_SCORES: tf.ones([1, 1]), keys.PROPOSALS_VALID: tf.ones([1, 1], tf.bool)}
