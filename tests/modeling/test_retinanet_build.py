"""Full-size RetinaNet builds: parameter counts by the arithmetic, levels, anchors, outputs."""

import numpy as np
import pytest

from tests.modeling.test_backbones import EXPECTED_PARAMS
from tfdet.data import keys
from tfdet.modeling.detectors import builders, spec
from tfdet.modeling.detectors import outputs as out
from tfdet.ops import anchors as anchor_ops


def _conv(k, c_in, c_out):
  return k * k * c_in * c_out + c_out  # with bias


def retinanet_params_without_trunk(num_classes=80, anchors=9, channels=256, num_convs=4):
  """FPN P3..P7 and the shared head, layer by layer (Detectron's retinanet configs).

  FPN: 1x1 laterals on C3, C4, C5 (512, 1024, 2048 -> 256), 3x3 outputs on
  P3..P5, P6 a 3x3 stride-2 conv on C5 (2048 -> 256), P7 one on ReLU(P6).
  Head: two towers of `num_convs` 3x3 convs of 256, a 3x3 conv to A * K class
  logits and one to A * 4 deltas.
  """
  fpn = sum(_conv(1, c, channels) for c in (512, 1024, 2048))
  fpn += 3 * _conv(3, channels, channels) + _conv(3, 2048, channels) + _conv(3, channels, channels)
  head = 2 * num_convs * _conv(3, channels, channels)
  head += _conv(3, channels, anchors * num_classes) + _conv(3, channels, anchors * 4)
  return fpn + head


def test_the_arithmetic_by_hand():
  # FPN 918,272 + 1,770,240 + 4,718,848 + 590,080; head 4,720,640 + 1,659,600 + 82,980.
  assert retinanet_params_without_trunk() == 7_997_440 + 6_463_220


@pytest.mark.parametrize("trunk", ["R-50", "R-101", "X-101-64x4d", "X-101-32x8d"])
def test_full_size_parameter_counts(trunk):
  kwargs = builders.BACKBONES[trunk]
  model = builders.build_retinanet(**kwargs)
  model(spec.dummy_batch(), training=False)
  key = (kwargs["depth"], kwargs.get("num_groups", 1), kwargs.get("width_per_group", 64))
  assert model.count_params() == EXPECTED_PARAMS[key] + retinanet_params_without_trunk()


def test_levels_anchors_and_outputs_at_800x1344_reduced_width():
  model = builders.build_retinanet(width_divisor=8, fpn_channels=32, num_convs=1)
  batch = {keys.IMAGES: np.zeros([1, 800, 1344, 3], np.float32),
           keys.IMAGE_INFO: np.array([[800, 1333, 1.0, 800, 1333]], np.float32)}
  outputs = model(batch, training=False)
  # P3..P7 of 800x1344: 100x168, 50x84, 25x42, 13x21, 7x11 cells of 9 anchors.
  cells = [100 * 168, 50 * 84, 25 * 42, 13 * 21, 7 * 11]
  n = 9 * sum(cells)
  assert outputs[out.RETINANET_LOGITS].shape == (1, n, 80)
  assert outputs[out.RETINANET_DELTAS].shape == (1, n, 4)
  assert outputs[out.ANCHORS].shape == (n, 4)
  assert outputs[out.DETECTION_BOXES].shape == (1, 100, 4)
  # The last anchors are P7's at cell (6, 10): Detectron's cell anchors shifted by 128 * (10, 6).
  cell = anchor_ops.retinanet_cell_anchors(128, aspect_ratios=(1.0, 2.0, 0.5),
                                           convention="detectron")
  np.testing.assert_allclose(outputs[out.ANCHORS][-9:], cell + [1280, 768, 1280, 768],
                             rtol=1e-6)
  # Random-init classes start at the prior: sigmoid(bias) = 0.01 where the features are 0.
  probs = 1.0 / (1.0 + np.exp(-outputs[out.RETINANET_LOGITS].numpy()))
  np.testing.assert_allclose(np.median(probs), 0.01, rtol=0.05)
