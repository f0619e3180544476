"""A stand-in keypoint detector for tests: the tiny model plus keypoints computed from its boxes.

These tests exercise everything downstream of a keypoint head (evaluation,
export, infer) with a model whose `detection_keypoints` are a fixed function
of its other outputs, so every consumer's result can be predicted exactly
(`expected_keypoints`); the real head is tested in
tests/modeling/test_keypoint_rcnn.py and test_keypoint_overfit.py.
"""

import keras
import numpy as np
import tensorflow as tf

from tfdet.modeling.detectors import outputs as out

NUM_KEYPOINTS = 17


class BoxKeypointModel(keras.Model):
  """Wraps a detector; adds DETECTION_KEYPOINTS [B, D, 17, 3] at inference.

  Keypoint j of a detection (x1, y1, x2, y2) with score s lies on the box's
  diagonal at fraction t_j = (j + 0.5) / 17 -- (x1 + t_j (x2 - x1),
  y1 + t_j (y2 - y1)), in the boxes' original pixels -- with score j - 8 + s.

  Args:
    detector: a built detector (e.g. `tiny.tiny_model()`).
  """

  def __init__(self, detector, **kwargs):
    super().__init__(**kwargs)
    self.detector = detector
    self.convention = detector.convention
    self.implementation = detector.implementation

  def call(self, inputs, training=False):
    result = dict(self.detector(inputs, training=training))
    if training or out.DETECTION_BOXES not in result:
      return result
    boxes = result[out.DETECTION_BOXES]  # [B, D, 4]
    t = (tf.range(NUM_KEYPOINTS, dtype=tf.float32) + 0.5) / NUM_KEYPOINTS  # [J]
    x = boxes[..., 0:1] + t * (boxes[..., 2:3] - boxes[..., 0:1])  # [B, D, J]
    y = boxes[..., 1:2] + t * (boxes[..., 3:4] - boxes[..., 1:2])
    det_scores = result[out.DETECTION_SCORES][..., None]  # [B, D, 1]
    score = tf.range(NUM_KEYPOINTS, dtype=tf.float32) - 8.0 + det_scores  # [B, D, J]
    result[out.DETECTION_KEYPOINTS] = tf.stack([x, y, score], axis=-1)  # [B, D, J, 3]
    return result


def expected_keypoints(boxes, scores):
  """numpy reference of `BoxKeypointModel`'s keypoints: [D, 4], [D] -> [D, 17, 3]."""
  boxes = np.asarray(boxes, np.float64)
  t = (np.arange(NUM_KEYPOINTS) + 0.5) / NUM_KEYPOINTS
  x = boxes[:, :1] + t * (boxes[:, 2:3] - boxes[:, :1])
  y = boxes[:, 1:2] + t * (boxes[:, 3:4] - boxes[:, 1:2])
  score = np.arange(NUM_KEYPOINTS) - 8.0 + np.asarray(scores, np.float64)[:, None]
  return np.stack([x, y, score], axis=-1)
