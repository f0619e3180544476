"""ResNet/ResNeXt trunks and FPN: exact parameter counts, shapes, freezing, norms."""

import keras
import numpy as np
import pytest

from tfdet.layers.normalization import AffineChannel, make_norm
from tfdet.modeling.backbones import fpn, resnet

# Parameter counts of the trunks without the ImageNet classifier. They equal
# the published totals minus the 2048 * 1000 + 1000 = 2,049,000 parameters of
# the fc layer: ResNet-50 25,557,032; ResNet-101 44,549,160; ResNet-152
# 60,192,808; ResNeXt-101 32x8d 88,791,336; ResNeXt-101 64x4d 83,455,272
# (torchvision's reference models, whose BatchNorm gamma/beta count like
# AffineChannel's scale/bias). ResNeXt-152 32x8d has no such published total;
# its count is ours, from the same block arithmetic.
EXPECTED_PARAMS = {
    (50, 1, 64): 23_508_032,
    (101, 1, 64): 42_500_160,
    (152, 1, 64): 58_143_808,
    (101, 32, 8): 86_742_336,
    (101, 64, 4): 81_406_272,
    (152, 32, 8): 120_323_392,
}


def _block_arithmetic(depth, groups, width):
  """A trunk's parameter count from its blocks (bias-free convs, AffineChannel 2 per channel):
  stem 7 * 7 * 3 * 64 + 2 * 64; per bottleneck c_in -> inner 1x1, grouped 3x3
  (9 * inner^2 / groups), inner -> c_out 1x1, each with its affine; a 1x1 projection
  shortcut in each stage's first block; inner = groups * width, doubling per stage."""
  blocks = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}[depth]
  total, c_in, inner = 7 * 7 * 3 * 64 + 2 * 64, 64, groups * width
  for n, c_out in zip(blocks, (256, 512, 1024, 2048), strict=True):
    for i in range(n):
      total += c_in * inner + 9 * inner * inner // groups + inner * c_out + 2 * (2 * inner + c_out)
      if i == 0:
        total += c_in * c_out + 2 * c_out
      c_in = c_out
    inner *= 2
  return total


def test_written_counts_follow_the_block_arithmetic():
  for (depth, groups, width), expected in EXPECTED_PARAMS.items():
    assert _block_arithmetic(depth, groups, width) == expected, (depth, groups, width)


# Each trunk is built once, here only.
@pytest.mark.parametrize("depth,groups,width", sorted(EXPECTED_PARAMS))
def test_full_size_parameter_counts(depth, groups, width):
  model = resnet.build_resnet(depth=depth, num_groups=groups, width_per_group=width,
                              stride_in_1x1=groups == 1)
  assert model.count_params() == EXPECTED_PARAMS[(depth, groups, width)]


def test_stride_placement_matches_detectron():
  msra = resnet.build_resnet(depth=50, stride_in_1x1=True)
  assert msra.get_layer("res3_0_branch2a").strides == (2, 2)
  assert msra.get_layer("res3_0_branch2b").strides == (1, 1)
  resnext = resnet.build_resnet(depth=50, num_groups=32, width_per_group=4,
                                stride_in_1x1=False)
  assert resnext.get_layer("res3_0_branch2a").strides == (1, 1)
  assert resnext.get_layer("res3_0_branch2b").strides == (2, 2)
  assert resnext.get_layer("res3_0_branch2b").groups == 32
  assert resnext.get_layer("res2_0_branch2b").filters == 128  # 32 groups x 4


def test_output_shapes_and_strides():
  model = resnet.build_resnet(depth=50)
  out = model(np.zeros([1, 64, 96, 3], np.float32))
  for stage, stride in resnet.STAGE_STRIDES.items():
    assert out[stage].shape == (1, 64 // stride, 96 // stride, resnet.STAGE_CHANNELS[stage])


def test_freeze_at_two_freezes_stem_and_res2_only():
  model = resnet.build_resnet(depth=50, freeze_at=2)
  trainable = {w.path.split("/")[0] for w in model.trainable_weights}
  assert "conv1" not in trainable and "res2_0_branch2a" not in trainable
  assert "res3_0_branch2a" in trainable
  assert not any(isinstance(model.get_layer(n), AffineChannel) for n in trainable)
  everything = resnet.build_resnet(depth=50, freeze_at=0, norm="bn")
  assert "conv1" in {w.path.split("/")[0] for w in everything.trainable_weights}


def test_c4_trunk_stops_at_res4_and_res5_head_halves():
  images = keras.Input((None, None, 3))
  outs = resnet.resnet_features(images, depth=50, last_stage="res4")
  assert set(outs) == {"res2", "res3", "res4"}
  rois = keras.Input((14, 14, 1024))
  head = resnet.resnet_stage(rois, stage="res5", num_blocks=3, dim_inner=512, stride=2)
  assert tuple(head.shape) == (None, 7, 7, 2048)


def test_stem_padding_is_symmetric_like_caffe2():
  # conv1 (7x7/2) output row i sees input rows [2i - 3, 2i + 3] with caffe2's
  # symmetric padding of 3, so a pixel at row 4 reaches rows 1..3 only; TF's
  # "same" padding (2 before, 3 after) would reach rows 0..3.
  images = keras.Input((None, None, 3))
  model = keras.Model(images, resnet.resnet_stem(images))
  conv = keras.Model(model.input, model.get_layer("conv1").output)
  conv.get_layer("conv1").kernel.assign(np.ones([7, 7, 3, 64], np.float32))
  img = np.zeros([1, 32, 32, 3], np.float32)
  img[0, 4, 4, :] = 1.0
  out = conv(img).numpy()[0, :, :, 0]
  assert out.shape == (16, 16)
  np.testing.assert_array_equal(np.nonzero(out.sum(axis=1))[0], [1, 2, 3])
  np.testing.assert_array_equal(np.nonzero(out.sum(axis=0))[0], [1, 2, 3])
  assert model(img).shape == (1, 8, 8, 64)


def test_affine_channel_is_exact_and_serializable():
  layer = AffineChannel(name="bn")
  layer.build((None, 3))
  layer.scale.assign([1.0, 2.0, 3.0])
  layer.bias.assign([0.5, 0.0, -1.0])
  np.testing.assert_allclose(layer(np.ones([2, 3], np.float32)), [[1.5, 2.0, 2.0]] * 2)
  clone = AffineChannel.from_config(layer.get_config())
  assert clone.trainable is False and clone.name == "bn"
  with pytest.raises(ValueError, match="norm must be one of"):
    make_norm("ln", name="x")


@pytest.mark.parametrize("norm", ["bn", "sync_bn", "gn"])
def test_other_norms_build(norm):
  model = resnet.build_resnet(depth=50, norm=norm, freeze_at=0)
  out = model(np.zeros([1, 32, 32, 3], np.float32))
  assert out["res5"].shape == (1, 1, 1, 2048)


def test_fpn_levels_channels_and_p6_is_subsampled_p5():
  images = keras.Input((None, None, 3))
  stages = resnet.resnet_features(images, depth=50)
  levels = fpn.fpn_features(stages, min_level=2, max_level=6)
  model = keras.Model(images, levels)
  out = model(np.random.default_rng(0).normal(size=[1, 128, 192, 3]).astype(np.float32))
  for level in range(2, 7):
    assert out[f"p{level}"].shape == (1, 128 >> level, 192 >> level, 256)
  np.testing.assert_array_equal(out["p6"].numpy(), out["p5"].numpy()[:, ::2, ::2, :])


def test_retinanet_fpn_p3_to_p7_from_c5():
  images = keras.Input((None, None, 3))
  stages = resnet.resnet_features(images, depth=50)
  levels = fpn.fpn_features(stages, min_level=3, max_level=7, extra="conv")
  model = keras.Model(images, levels)
  assert sorted(levels) == ["p3", "p4", "p5", "p6", "p7"]
  assert model.get_layer("fpn_6").kernel.shape == (3, 3, 2048, 256)
  assert model.get_layer("fpn_7").kernel.shape == (3, 3, 256, 256)
  with pytest.raises(ValueError, match="fpn_inner_res2_lateral"):
    model.get_layer("fpn_inner_res2_lateral")
  out = model(np.zeros([1, 128, 128, 3], np.float32))
  assert out["p7"].shape == (1, 1, 1, 256)
