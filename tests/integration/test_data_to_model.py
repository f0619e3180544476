"""The whole training road on a fresh machine: synthetic COCO -> data_prep
shards -> tf.data pipeline -> a tiny Mask R-CNN's losses and one SGD step."""

import numpy as np
import tensorflow as tf

from tests.export import tiny
from tfdet.data import keys, pipeline
from tfdet.modeling.detectors import rcnn_losses


def test_synthetic_shards_feed_a_mask_rcnn_training_step(synthetic_data):
  data = synthetic_data
  dataset = pipeline.build_dataset(data["instances"]["train"], mode="train", batch_size=2,
                                   scales=(128,), max_size=160, max_instances=16,
                                   max_polygon_vertices=64, deterministic=True, seed=1)
  batch = next(iter(dataset))
  assert batch[keys.IMAGES].shape[0] == 2
  model = tiny.tiny_model(num_classes=8, implementation="custom", build=False)
  optimizer = tf.keras.optimizers.SGD(learning_rate=0.001, momentum=0.9)
  with tf.GradientTape() as tape:
    losses = rcnn_losses.rcnn_losses(model, model(batch, training=True), batch)
  grads = tape.gradient(losses[rcnn_losses.TOTAL_LOSS], model.trainable_variables)
  assert all(np.isfinite(float(v)) for v in losses.values()), losses
  assert losses[rcnn_losses.MASK_LOSS] > 0.0  # the synthetic polygons gave mask targets
  assert sum(float(tf.reduce_sum(tf.abs(g))) for g in grads if g is not None) > 0.0
  optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
  eval_batch = next(iter(pipeline.build_dataset(data["instances"]["val"], mode="eval",
                                                batch_size=2, scales=(128,), max_size=160)))
  detections = model(eval_batch, training=False)
  assert detections["detection_boxes"].shape == (2, tiny.ROI["detections_per_image"], 4)
