"""Model-zoo detectors build: exact parameter counts of the full-size parts,
every backbone x {C4, FPN} x {RPN, Faster, Mask} at a small input, and one
full-size Mask R-CNN R-50-FPN inference step at 800x1333."""

import numpy as np
import pytest
import tensorflow as tf

from tfdet.data import keys
from tfdet.modeling.detectors import builders
from tfdet.modeling.detectors import outputs as out
from tfdet.modeling.detectors.config import c4_rpn_settings


def _inputs(height, width, batch=1):
  return {
      keys.IMAGES: tf.random.stateless_normal([batch, height, width, 3], seed=[1, 2]) * 50.0,
      keys.IMAGE_INFO: tf.constant([[height, width, 1.0, height, width]] * batch, tf.float32),
  }


def test_full_size_part_counts_r50_fpn_and_c4():
  # R-50-FPN Mask R-CNN:
  #   backbone = trunk 23,508,032 + FPN (laterals 256 * (256+512+1024+2048) + 4 * 256
  #     = 984,064; outputs 4 * (9 * 256 * 256 + 256) = 2,360,320) = 26,852,416
  #   RPN head = 9 * 256 * 256 + 256 + (256 * 3 + 3) + (256 * 12 + 12) = 593,935
  #   box head = fc6 12,544 * 1,024 + 1,024 + fc7 1,024 * 1,024 + 1,024
  #     + cls 1,024 * 81 + 81 + bbox 1,024 * 324 + 324 = 14,310,805
  #   mask head = 4 * 590,080 + deconv (4 * 256 * 256 + 256) + 1x1 (256 * 81 + 81) = 2,643,537
  fpn = builders.build_rcnn(heads="mask", use_fpn=True)
  assert fpn.backbone.count_params() == 26_852_416
  assert fpn.rpn_head.count_params() == 593_935
  assert fpn.box_head.count_params() == 14_310_805
  assert fpn.mask_head.count_params() == 2_643_537
  # R-50-C4 Mask R-CNN: trunk to res4 = 23,508,032 - res5 14,964,736 = 8,543,296;
  #   RPN head = 9 * 1024 * 1024 + 1024 + (1024 * 15 + 15) + (1024 * 60 + 60) = 9,515,083
  #   box head = res5 14,964,736 + cls 2048 * 81 + 81 + bbox 2048 * 324 + 324 = 15,794,581
  #   mask head = deconv 4 * 2048 * 256 + 256 + 1x1 256 * 81 + 81 = 2,118,225
  c4 = builders.build_rcnn(heads="mask", use_fpn=False)
  assert c4.backbone.count_params() == 8_543_296
  assert c4.rpn_head.count_params() == 9_515_083
  assert c4.box_head.count_params() == 15_794_581
  assert c4.mask_head.count_params() == 2_118_225


@pytest.mark.parametrize("name", sorted(builders.BACKBONES))
@pytest.mark.parametrize("use_fpn", [True, False], ids=["FPN", "C4"])
def test_every_backbone_and_head_builds_and_runs(name, use_fpn):
  shared = None
  # C4 runs res5 on every test proposal (1000 by default, most of them padding
  # at this input size), which takes minutes on a CPU; 100 proves the same.
  rpn = None if use_fpn else c4_rpn_settings(post_nms_top_n_test=100, collect_top_n_test=100)
  for heads in builders.HEADS:
    model = builders.build_rcnn(heads=heads, use_fpn=use_fpn, backbone=shared, rpn_settings=rpn,
                                **builders.BACKBONES[name])
    shared = model.backbone
    outputs = model(_inputs(64, 96), training=False)
    # P2..P5 of 64x96 are exact; P6 subsamples P5 (2x3) to 1x2.
    num_anchors = ((16 * 24 + 8 * 12 + 4 * 6 + 2 * 3 + 1 * 2) * 3 if use_fpn else 4 * 6 * 15)
    assert outputs[out.RPN_LOGITS].shape == (1, num_anchors)
    assert outputs[out.PROPOSALS].shape == (1, 1000 if use_fpn else 100, 4)
    if heads == "rpn":
      assert out.DETECTION_BOXES not in outputs
      continue
    assert outputs[out.DETECTION_BOXES].shape == (1, 100, 4)
    assert outputs[out.DETECTION_CLASSES].shape == (1, 100)
    if heads == "mask":
      m = 28 if use_fpn else 14
      assert outputs[out.DETECTION_MASKS].shape == (1, 100, m, m)
    else:
      assert out.DETECTION_MASKS not in outputs


def test_full_size_mask_rcnn_r50_fpn_inference_at_800x1333():
  model = builders.build_rcnn(heads="mask", use_fpn=True)
  inputs = _inputs(800, 1344)  # 800x1333 padded to a multiple of 32
  inputs[keys.IMAGE_INFO] = tf.constant([[800.0, 1333.0, 1.6667, 480.0, 800.0]])
  outputs = model(inputs, training=False)
  assert outputs[out.PROPOSALS].shape == (1, 1000, 4)
  assert outputs[out.DETECTION_BOXES].shape == (1, 100, 4)
  assert outputs[out.DETECTION_MASKS].shape == (1, 100, 28, 28)
  n = int(outputs[out.NUM_DETECTIONS][0])
  boxes = outputs[out.DETECTION_BOXES][0, :n].numpy()
  # Boxes are in original-image pixels (480x800), clipped with Detectron's +1.
  assert (boxes[:, 0] >= 0).all() and (boxes[:, 2] <= 799).all() and (boxes[:, 3] <= 479).all()
  assert np.isfinite(outputs[out.DETECTION_MASKS].numpy()).all()
