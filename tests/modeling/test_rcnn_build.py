"""Model-zoo detectors build: exact parameter counts of the full-size parts,
every backbone x {C4, FPN} x {RPN, Faster, Mask} at a reduced width and a small
input, and one full-size Mask R-CNN R-50-FPN inference step at 800x1333 whose
detections are checked against proposals decoded by hand."""

import math

import numpy as np
import pytest
import tensorflow as tf

from tfdet.data import keys
from tfdet.modeling.detectors import builders
from tfdet.modeling.detectors import outputs as out
from tfdet.modeling.detectors.config import RoiHeadSettings, c4_rpn_settings


def _inputs(height, width, batch=1):
  return {
      keys.IMAGES: tf.random.stateless_normal([batch, height, width, 3], seed=[1, 2]) * 50.0,
      keys.IMAGE_INFO: tf.constant([[height, width, 1.0, height, width]] * batch, tf.float32),
  }


@pytest.fixture(scope="module")
def r50_fpn_mask():
  """The full-size R-50-FPN Mask R-CNN, built once for its counts and the 800x1333 step.

  Score threshold 0: at random init every class probability is about 1 / 81 < 0.05,
  Detectron's threshold, which would leave no detection to check.
  """
  return builders.build_rcnn(heads="mask", use_fpn=True,
                             roi_settings=RoiHeadSettings(score_threshold=0.0))


def test_full_size_part_counts_r50_fpn_and_c4(r50_fpn_mask):
  # One full-size model per body; the RPN-only and Faster R-CNN models are the same parts
  # without the box / mask heads, so these counts cover them too.
  # R-50-FPN Mask R-CNN:
  #   backbone = trunk 23,508,032 + FPN (laterals 256 * (256+512+1024+2048) + 4 * 256
  #     = 984,064; outputs 4 * (9 * 256 * 256 + 256) = 2,360,320) = 26,852,416
  #   RPN head = 9 * 256 * 256 + 256 + (256 * 3 + 3) + (256 * 12 + 12) = 593,935
  #   box head = fc6 12,544 * 1,024 + 1,024 + fc7 1,024 * 1,024 + 1,024
  #     + cls 1,024 * 81 + 81 + bbox 1,024 * 324 + 324 = 14,310,805
  #   mask head = 4 * 590,080 + deconv (4 * 256 * 256 + 256) + 1x1 (256 * 81 + 81) = 2,643,537
  fpn = r50_fpn_mask
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


# The smoke tests run every trunk at its real depth and grouping, every width divided by 4
# (the most that keeps X-101-64x4d's 64 groups: res2's inner width 64 * 4 / 4 = 64), with
# narrow FPN / heads: the same graphs as the model zoo's, at a fraction of the work.
SMALL = dict(width_divisor=4, fpn_channels=32, mlp_dim=64, mask_conv_dim=32)


@pytest.mark.parametrize("name", sorted(builders.BACKBONES))
@pytest.mark.parametrize("use_fpn", [True, False], ids=["FPN", "C4"])
def test_every_backbone_and_head_builds_and_runs(name, use_fpn):
  shared = None
  # C4 runs res5 on every test proposal (1000 by default, most of them padding
  # at this input size), which takes minutes on a CPU; 100 proves the same.
  rpn = None if use_fpn else c4_rpn_settings(post_nms_top_n_test=100, collect_top_n_test=100)
  for heads in ("rpn", "faster", "mask"):  # keypoint models: tests/modeling/test_keypoint_rcnn.py
    model = builders.build_rcnn(heads=heads, use_fpn=use_fpn, backbone=shared, rpn_settings=rpn,
                                **SMALL, **builders.BACKBONES[name])
    shared = model.backbone
    groups = builders.BACKBONES[name].get("num_groups", 1)
    assert model.backbone.get_layer("res2_0_branch2b").groups == groups
    depth = builders.BACKBONES[name]["depth"]
    last = {50: 5, 101: 22, 152: 35}[depth]  # res4 blocks - 1: 6, 23, 36 blocks
    model.backbone.get_layer(f"res4_{last}_branch2c")  # res4 has this many blocks ...
    with pytest.raises(ValueError):
      model.backbone.get_layer(f"res4_{last + 1}_branch2c")  # ... and no more
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


def _decode_by_hand(deltas, rois, height, width):
  """Detectron's bbox_transform (weights 10, 10, 5, 5, +1 widths) and clip_tiled_boxes.

  deltas [C, 4], rois [P, 4] -> [P, C, 4] float64 boxes clipped to [0, W-1] x [0, H-1].
  """
  rois = rois.astype(np.float64)[:, None, :]
  w = rois[..., 2] - rois[..., 0] + 1.0
  h = rois[..., 3] - rois[..., 1] + 1.0
  cx = rois[..., 0] + 0.5 * w
  cy = rois[..., 1] + 0.5 * h
  dx, dy = deltas[None, :, 0] / 10.0, deltas[None, :, 1] / 10.0
  dw = np.minimum(deltas[None, :, 2] / 5.0, math.log(1000.0 / 16.0))
  dh = np.minimum(deltas[None, :, 3] / 5.0, math.log(1000.0 / 16.0))
  pcx, pcy = dx * w + cx, dy * h + cy
  pw, ph = np.exp(dw) * w, np.exp(dh) * h
  boxes = np.stack([pcx - 0.5 * pw, pcy - 0.5 * ph, pcx + 0.5 * pw - 1.0, pcy + 0.5 * ph - 1.0],
                   axis=-1)
  return np.clip(boxes, 0.0, [width - 1.0, height - 1.0, width - 1.0, height - 1.0])


def _zero_kernel(layer, bias):
  layer.kernel.assign(np.zeros(layer.kernel.shape, np.float32))
  layer.bias.assign(np.broadcast_to(np.asarray(bias, np.float32).reshape(-1), layer.bias.shape))


@pytest.mark.slow
def test_full_size_mask_rcnn_r50_fpn_inference_at_800x1333(r50_fpn_mask):
  model = r50_fpn_mask
  # Known deltas, independent of the (random) features: the RPN's are 0, so the proposals
  # are anchors of every level (clipped), real boxes rather than the slivers a random RPN
  # makes; bbox_pred gives every proposal the class-c deltas deltas[c], large enough
  # (dx, dy up to 0.3 widths, dw, dh up to 0.4) that decoding moves the boxes.
  deltas = np.random.default_rng(0).uniform(-1.0, 1.0, (81, 4)) * [3.0, 3.0, 2.0, 2.0]
  _zero_kernel(model.rpn_head.get_layer("rpn_bbox_pred"), 0.0)
  _zero_kernel(model.box_head.get_layer("bbox_pred"), deltas)
  inputs = _inputs(800, 1344)  # 800x1333 padded to a multiple of 32
  scale = 800.0 / 480.0
  inputs[keys.IMAGE_INFO] = tf.constant([[800.0, 1333.0, scale, 480.0, 800.0]])
  outputs = model(inputs, training=False)
  assert outputs[out.PROPOSALS].shape == (1, 1000, 4)
  assert outputs[out.DETECTION_BOXES].shape == (1, 100, 4)
  assert outputs[out.DETECTION_MASKS].shape == (1, 100, 28, 28)
  num_proposals = int(outputs[out.NUM_PROPOSALS][0])
  assert num_proposals == 1000  # ~270k anchors, far more than 1000 survive NMS
  # 1000 proposals x 80 classes, every score > 0: NMS leaves far more than the 100 kept.
  assert int(outputs[out.NUM_DETECTIONS][0]) == 100
  boxes = outputs[out.DETECTION_BOXES][0].numpy()
  classes = outputs[out.DETECTION_CLASSES][0].numpy()
  scores = outputs[out.DETECTION_SCORES][0].numpy()
  assert ((classes >= 1) & (classes <= 80)).all()
  assert (scores > 0).all() and (np.diff(scores) <= 0).all()
  # Boxes are in original-image pixels (480x800), clipped with Detectron's +1.
  assert (boxes[:, 0] >= 0).all() and (boxes[:, 2] <= 799).all() and (boxes[:, 3] <= 479).all()
  # Each detection is its class's deltas applied to one proposal divided by the image
  # scale (Detectron decodes rois / im_scale), clipped to the original image.
  proposals = outputs[out.PROPOSALS][0].numpy()
  candidates = _decode_by_hand(deltas, proposals / scale, 480.0, 800.0)  # [P, 81, 4]
  undivided = _decode_by_hand(deltas, proposals, 480.0, 800.0)
  plain = np.clip(proposals / scale, 0.0, [799.0, 479.0, 799.0, 479.0])
  moved = undivided_matches = 0
  for box, c in zip(boxes, classes, strict=True):
    error = np.abs(candidates[:, c] - box).max(axis=1)  # [P]
    assert error.min() < 1e-2, (box, c, error.min())
    undivided_matches += np.abs(undivided[:, c] - box).max(axis=1).min() < 1e-2
    moved += np.abs(plain - box).max(axis=1).min() > 0.5
  # Decoding the resized-image proposals instead explains (next to) none of them; a box
  # clipped to the image's corner could coincide with one by chance.
  assert undivided_matches <= 5, undivided_matches
  assert moved >= 90  # the deltas moved the boxes (a corner box may clip back in place)
  assert np.isfinite(outputs[out.DETECTION_MASKS].numpy()).all()
