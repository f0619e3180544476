"""Tiny detectors overfit three hand-drawn images: losses fall and COCO AP
(pycocotools) on the same images passes a threshold.

This proves that targets, losses, gradients through the custom RoIAlign and
the inference path (decode, NMS, mask pasting, COCO json) fit together. The
models are tiny (one block per stage, widths / 8) and trained from scratch
with trainable BatchNorm, which makes a from-scratch net trainable in a few
hundred steps; the real configurations use Detectron's frozen BN.
"""

import dataclasses
import json

import numpy as np
import pytest
import tensorflow as tf

from tests.modeling import overfit_data
from tfdet.evaluation import coco as coco_eval
from tfdet.modeling.detectors import builders, rcnn_losses
from tfdet.modeling.detectors import outputs as out
from tfdet.modeling.detectors.config import (
    RoiHeadSettings,
    RpnSettings,
    c4_roi_settings,
    c4_rpn_settings,
)
from tfdet.ops import boxes as box_ops
from tfdet.ops import masks as mask_ops

SCENES = [0, 1, 2]
RPN = dict(pre_nms_top_n_train=300, post_nms_top_n_train=200, collect_top_n_train=200,
           pre_nms_top_n_test=300, post_nms_top_n_test=100, collect_top_n_test=100,
           batch_size_per_image=64)
ROI = dict(batch_size_per_image=32, detections_per_image=20)


def _tiny(heads, use_fpn):
  rpn = RpnSettings(**RPN) if use_fpn else c4_rpn_settings(**RPN)
  roi = RoiHeadSettings(**ROI) if use_fpn else c4_roi_settings(**ROI)
  return builders.build_rcnn(
      heads=heads, use_fpn=use_fpn, num_classes=3, stage_blocks=(1, 1, 1, 1), width_divisor=8,
      norm="bn", freeze_at=0, fpn_channels=32, mlp_dim=128, mask_conv_dim=32,
      rpn_settings=rpn, roi_settings=roi)


def _train(model, batch, steps, lr=0.005):
  model(batch, training=True)
  optimizer = tf.keras.optimizers.SGD(learning_rate=lr, momentum=0.9, clipnorm=10.0)

  @tf.function
  def step():
    with tf.GradientTape() as tape:
      losses = rcnn_losses.rcnn_losses(model, model(batch, training=True), batch,
                                       seed=tf.constant([0, 0]))
    variables = model.trainable_variables
    optimizer.apply_gradients(zip(tape.gradient(losses[rcnn_losses.TOTAL_LOSS], variables),
                                  variables, strict=True))
    return losses

  history = [step() for _ in range(steps)]
  return ({k: float(np.mean([float(h[k]) for h in history[:10]])) for k in history[0]},
          {k: float(np.mean([float(h[k]) for h in history[-10:]])) for k in history[0]})


def _coco_results(model, batch, with_masks):
  outputs = model(batch, training=False)
  pasted = None
  if with_masks:
    pasted = mask_ops.paste_masks(outputs[out.DETECTION_MASKS], outputs[out.DETECTION_BOXES],
                                  overfit_data.SIZE, overfit_data.SIZE,
                                  convention="detectron").numpy()
  results = []
  for i, image_id in enumerate(SCENES):
    results += coco_eval.detections_to_coco(
        image_id, outputs[out.DETECTION_BOXES][i].numpy(),
        outputs[out.DETECTION_SCORES][i].numpy(), outputs[out.DETECTION_CLASSES][i].numpy(),
        outputs[out.NUM_DETECTIONS][i].numpy(), class_to_category={1: 1, 2: 2},
        convention="detectron", masks=None if pasted is None else pasted[i])
  return results


def _ground_truth(tmp_path, coco):
  path = tmp_path / "gt.json"
  path.write_text(json.dumps(coco))
  return coco_eval.load_ground_truth(str(path))


@pytest.mark.parametrize("heads,use_fpn,steps", [
    ("faster", True, 150),
    ("mask", True, 150),
    ("faster", False, 150),
    ("mask", False, 150),
])
def test_detector_overfits(tmp_path, heads, use_fpn, steps):
  tf.keras.utils.set_random_seed(0)
  batch, coco = overfit_data.make_batch(SCENES)
  model = _tiny(heads, use_fpn)
  first, last = _train(model, batch, steps)
  # Box regression starts near 0 (few foreground RoIs until the RPN learns),
  # so the classification losses and the total are the ones that must fall.
  falling = [rcnn_losses.TOTAL_LOSS, rcnn_losses.RPN_CLS_LOSS, rcnn_losses.BOX_CLS_LOSS]
  if heads == "mask":
    falling.append(rcnn_losses.MASK_LOSS)
  for name in falling:
    assert last[name] < 0.5 * first[name], (name, first[name], last[name])
  gt = _ground_truth(tmp_path, coco)
  stats, summary = coco_eval.evaluate(gt, _coco_results(model, batch, heads == "mask"), "bbox")
  assert stats["AP50"] >= 0.9 and stats["AP"] >= 0.6, summary
  if heads == "faster" and use_fpn:
    # Detectron's TEST.SOFT_NMS and TEST.BBOX_VOTE options run through the model.
    model.roi_settings = dataclasses.replace(model.roi_settings, soft_nms_method="gaussian",
                                             box_voting_threshold=0.8)
    stats, summary = coco_eval.evaluate(gt, _coco_results(model, batch, False), "bbox")
    assert stats["AP50"] >= 0.9, summary
  if heads == "mask":
    stats, summary = coco_eval.evaluate(gt, _coco_results(model, batch, True), "segm")
    # 14x14 (C4) masks of the one small triangle (~700 px) are coarse.
    assert stats["AP50"] >= 0.8 and stats["AP"] >= 0.5, summary


def test_rpn_only_overfits_and_recalls_every_object():
  """Every object is found at IoU >= 0.5 among the top 20 proposals."""
  tf.keras.utils.set_random_seed(0)
  batch, coco = overfit_data.make_batch(SCENES)
  model = _tiny("rpn", True)
  first, last = _train(model, batch, 200)
  assert last[rcnn_losses.RPN_CLS_LOSS] < 0.5 * first[rcnn_losses.RPN_CLS_LOSS]
  outputs = model(batch, training=False)
  iou = box_ops.pairwise_iou(outputs[out.PROPOSALS][:, :20], batch["gt_boxes"],
                             convention="detectron").numpy()  # top 20 proposals
  best = iou.max(axis=1)  # [B, M]
  valid = batch["gt_valid"].numpy()
  assert (best[valid] >= 0.5).all(), best[valid]
