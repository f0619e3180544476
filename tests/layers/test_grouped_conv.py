"""GroupedConv2D computes what Keras's grouped Conv2D computes, without its XLA route."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfdet.layers.grouped_conv import GroupedConv2D
from tfdet.modeling.backbones import resnet


def _per_group(x, kernel, groups, stride, dilation):
  """The grouped convolution as `groups` plain convolutions (numpy in, numpy out)."""
  xs = np.split(x, groups, axis=-1)
  ks = np.split(kernel, groups, axis=-1)
  return np.concatenate([tf.nn.conv2d(a, k, stride, "VALID", dilations=dilation).numpy()
                         for a, k in zip(xs, ks, strict=True)], axis=-1)


@pytest.mark.parametrize("stride,dilation", [(1, 1), (2, 1), (1, 2)])
def test_forward_and_gradients_match_keras_conv2d(stride, dilation):
  rng = np.random.default_rng(0)
  groups, cin, cout = 8, 32, 48
  x = tf.constant(rng.normal(size=[2, 19, 23, cin]).astype(np.float32))
  kw = dict(strides=stride, dilation_rate=dilation, groups=groups, padding="valid",
            use_bias=False)
  ours, theirs = GroupedConv2D(cout, 3, **kw), keras.layers.Conv2D(cout, 3, **kw)
  ours.build(x.shape)
  theirs.build(x.shape)
  kernel = rng.normal(size=[3, 3, cin // groups, cout]).astype(np.float32)
  ours.kernel.assign(kernel)
  theirs.kernel.assign(kernel)

  def run(layer):
    with tf.GradientTape() as tape:
      tape.watch(x)
      y = layer(x)
      loss = tf.reduce_sum(y * y)
    return [t.numpy() for t in (y, *tape.gradient(loss, [x, layer.kernel]))]

  want = _per_group(x.numpy(), kernel, groups, stride, dilation)
  got, got_keras = run(ours), run(theirs)
  np.testing.assert_allclose(got[0], want, rtol=1e-5, atol=1e-4)
  for a, b in zip(got, got_keras, strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-3 * np.abs(b).max())


def test_config_round_trip_and_channels_first_is_refused():
  layer = GroupedConv2D(16, 3, groups=4, name="g")
  clone = keras.layers.deserialize(keras.layers.serialize(layer))
  assert isinstance(clone, GroupedConv2D) and clone.groups == 4 and clone.name == "g"
  with pytest.raises(ValueError, match="channels_last"):
    GroupedConv2D(16, 3, groups=4, data_format="channels_first")


def test_resnext_uses_it_and_resnet_does_not():
  images = keras.Input([64, 64, 3])
  resnext = keras.Model(images, resnet.resnet_features(
      images, depth=50, num_groups=4, width_per_group=4, stage_blocks=(1, 1, 1, 1)))
  resnet50 = keras.Model(images, resnet.resnet_features(images, depth=50,
                                                         stage_blocks=(1, 1, 1, 1)))
  assert type(resnext.get_layer("res3_0_branch2b")) is GroupedConv2D
  assert resnext.get_layer("res3_0_branch2b").groups == 4
  assert type(resnet50.get_layer("res3_0_branch2b")) is keras.layers.Conv2D
