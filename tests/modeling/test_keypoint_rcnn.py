"""Keypoint R-CNN builds as Detectron's: the full-size R-50-FPN model's parameter count by
the arithmetic and one 800x1333 inference; the training outputs of the keypoint part; and
Detectron's rule for keypoint minibatches trained from precomputed proposals."""

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from tests.export import tiny
from tests.modeling import overfit_data
from tfdet.data import keys
from tfdet.modeling.detectors import builders, rcnn_losses, spec
from tfdet.modeling.detectors import outputs as out
from tfdet.modeling.detectors.config import RoiHeadSettings


@pytest.fixture(scope="module")
def r50_fpn_keypoint():
  """Full size, person only (2 classes); score threshold 0 so random weights detect."""
  return builders.build_rcnn(heads="keypoint", use_fpn=True, num_classes=2,
                             roi_settings=RoiHeadSettings(score_threshold=0.0))


def test_full_size_parameter_count(r50_fpn_keypoint):
  model = r50_fpn_keypoint
  model(spec.dummy_batch(), training=False)
  # backbone (trunk + FPN) 26,852,416 and RPN head 593,935: as Mask R-CNN's
  # (tests/modeling/test_rcnn_build.py).
  # box head, 2 classes = fc6 12,544 * 1,024 + 1,024 + fc7 1,024 * 1,024 + 1,024
  #   + cls 1,024 * 2 + 2 + bbox 1,024 * 8 + 8 = 13,905,930
  # keypoint head = conv_fcn1 9 * 256 * 512 + 512 + conv_fcn2..8 7 * (9 * 512 * 512 + 512)
  #   + deconv 4 * 4 * 512 * 17 + 17 = 1,180,160 + 16,518,656 + 139,281 = 17,838,097
  assert model.backbone.count_params() == 26_852_416
  assert model.rpn_head.count_params() == 593_935
  assert model.box_head.count_params() == 13_905_930
  assert model.keypoint_head.count_params() == 17_838_097
  assert model.mask_head is None
  assert model.count_params() == 26_852_416 + 593_935 + 13_905_930 + 17_838_097  # 59,190,378
  # The fixed x2 bilinear upsampling (Detectron's UP_SCALE) has no weight.
  assert [layer.name for layer in model.keypoint_head.layers[-2:]] == ["kps_score_lowres",
                                                                        "kps_score"]


@pytest.mark.slow
def test_full_size_inference_at_800x1333(r50_fpn_keypoint):
  model = r50_fpn_keypoint
  # Zero RPN and box deltas and a constant class score: the detections are anchors of every
  # level with score 0.5, real boxes rather than the degenerate ones that random weights
  # regress to at full size (their logits saturate), so that many survive NMS.
  for head, name in ((model.rpn_head, "rpn_bbox_pred"), (model.box_head, "bbox_pred"),
                     (model.box_head, "cls_score")):
    layer = head.get_layer(name)
    layer.kernel.assign(tf.zeros_like(layer.kernel))
    layer.bias.assign(tf.zeros_like(layer.bias))
  scale = 800.0 / 480.0
  inputs = {keys.IMAGES: tf.random.stateless_normal([1, 800, 1344, 3], seed=[1, 2]) * 50.0,
            keys.IMAGE_INFO: tf.constant([[800.0, 1333.0, scale, 480.0, 800.0]])}
  outputs = model(inputs, training=False)
  assert outputs[out.DETECTION_BOXES].shape == (1, 100, 4)
  assert outputs[out.DETECTION_KEYPOINTS].shape == (1, 100, 17, 3)
  n = int(outputs[out.NUM_DETECTIONS][0])
  assert n >= 50, n  # of 1000 proposals of one class at threshold 0, after NMS
  assert (outputs[out.DETECTION_CLASSES].numpy()[0, :n] == 1).all()
  boxes = outputs[out.DETECTION_BOXES].numpy()[0, :n]
  kps = outputs[out.DETECTION_KEYPOINTS].numpy()[0, :n]
  assert np.isfinite(kps).all()
  # Each keypoint is a heatmap cell's centre in its box (original pixels), whose sides
  # count as at least 1 pixel (Detectron's max(w, 1)).
  b = boxes[:, None]
  assert (kps[..., 0] >= b[..., 0]).all() and (kps[..., 1] >= b[..., 1]).all()
  assert (kps[..., 0] <= np.maximum(b[..., 2], b[..., 0] + 1)).all()
  assert (kps[..., 1] <= np.maximum(b[..., 3], b[..., 1] + 1)).all()
  # The test-time-augmentation entry points compute the same keypoints.
  heatmaps = model.keypoint_heatmaps(inputs, outputs[out.DETECTION_BOXES])
  assert heatmaps.shape == (1, 100, 56, 56, 17)
  again = model.keypoints_from_heatmaps(heatmaps, outputs[out.DETECTION_BOXES])
  np.testing.assert_allclose(again.numpy()[0, :n], kps, rtol=1e-5, atol=1e-3)


def test_training_outputs_of_the_keypoint_part():
  batch, _ = overfit_data.make_person_batch([0, 1])
  model = tiny.tiny_model(heads="keypoint", num_classes=2, keypoints={"rois_per_image": 16})
  outputs = model(batch, training=True)
  assert outputs[out.KEYPOINT_LOGITS].shape == (2, 16, 56, 56, 17)
  assert outputs[out.KEYPOINT_TARGETS].shape == (2, 16, 17)
  weights = outputs[out.KEYPOINT_WEIGHTS].numpy()
  # The gt boxes are keypoint RoIs themselves, with all 17 keypoints visible inside.
  assert (weights.sum(axis=(1, 2)) >= 17 * np.array([2, 1])).all()
  targets = outputs[out.KEYPOINT_TARGETS].numpy()
  assert ((targets >= 0) & (targets < 56 * 56)).all() and (targets[weights == 0] == 0).all()
  losses = rcnn_losses.rcnn_losses(model, outputs, batch, seed=tf.constant([0, 0]))
  # At random init the heatmap softmax is about uniform over 56 * 56 positions.
  assert abs(float(losses[rcnn_losses.KEYPOINT_LOSS]) - np.log(56 * 56)) < 1.0
  assert rcnn_losses.SKIPPED_BATCH not in losses


def _with_gt_as_proposals(batch):
  batch = dict(batch)
  batch[keys.PROPOSALS] = batch[keys.GT_BOXES]
  batch[keys.PROPOSAL_SCORES] = tf.cast(batch[keys.GT_VALID], tf.float32)
  batch[keys.PROPOSALS_VALID] = batch[keys.GT_VALID]
  return batch


def test_precomputed_proposals_drop_a_minibatch_with_too_few_visible_keypoints():
  # Scene 1 has one person, 17 visible keypoints; its keypoint RoIs are the gt box and the
  # same box as a proposal: 34 visible keypoints. Detectron's loader drops a minibatch with
  # at most KRCNN.MIN_KEYPOINT_COUNT_FOR_VALID_MINIBATCH of them (20 kept it, 34 drops it).
  batch = _with_gt_as_proposals(overfit_data.make_person_batch([1])[0])
  model = tiny.tiny_model(heads="keypoint", num_classes=2, proposals="precomputed")
  assert model.rpn_head is None
  for threshold, skipped in ((20, False), (33, False), (34, True)):
    model.keypoint.settings = dataclasses.replace(model.keypoint.settings,
                                                  min_visible_keypoints=threshold)
    with tf.GradientTape() as tape:
      outputs = model(batch, training=True)
      losses = rcnn_losses.rcnn_losses(model, outputs, batch)
    assert float(tf.reduce_sum(outputs[out.KEYPOINT_WEIGHTS])) == 34
    assert float(losses[rcnn_losses.SKIPPED_BATCH]) == float(skipped)
    assert rcnn_losses.RPN_CLS_LOSS not in losses
    grads = tape.gradient(losses[rcnn_losses.TOTAL_LOSS], model.trainable_variables)
    norm = float(tf.linalg.global_norm([g for g in grads if g is not None]))
    if skipped:
      assert all(float(v) == 0.0 for k, v in losses.items() if k != rcnn_losses.SKIPPED_BATCH)
      assert norm == 0.0
    else:
      assert float(losses[rcnn_losses.KEYPOINT_LOSS]) > 0 and norm > 0
