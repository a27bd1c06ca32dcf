"""The fixed reference models: TanhCNN's size and shape, and its ghost clipping."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from fedsearch import models
from fedsearch.privacy import mechanisms
from fedsearch.privacy.mechanisms import softmax_cross_entropy


def _conv(k, cin, cout):
  return k * k * cin * cout + cout  # Kernel and bias.


def _shapes(num_classes, shape):
  return jax.eval_shape(lambda: models.TanhCNN(num_classes).init(
      jax.random.key(0), jnp.zeros((1, *shape))))["params"]


def _weights(num_classes, shape, key):
  """LeCun-scaled normal weights, zero biases, in one draw.

  (Flax's own init compiles a truncated normal per layer: ~2 s each on CPU.)
  """
  shapes = _shapes(num_classes, shape)
  zeros, unravel = ravel_pytree(jax.tree.map(
      lambda s: jnp.zeros(s.shape, s.dtype), shapes))
  draws = unravel(jax.random.normal(key, zeros.shape))
  return jax.tree.map(lambda w: w / np.sqrt(np.prod(w.shape[:-1])) if
                      w.ndim > 1 else jnp.zeros_like(w), draws)


def test_tanh_cnn_has_its_documented_parameter_count():
  # 32x32x3: six 3x3 convs (32, 32, 64, 64, 128, 128), a pool after every
  # second (32 -> 16 -> 8 -> 4), then dense 4·4·128 -> 128 -> 10.
  expected = (_conv(3, 3, 32) + _conv(3, 32, 32) + _conv(3, 32, 64)
              + _conv(3, 64, 64) + _conv(3, 64, 128) + _conv(3, 128, 128)
              + (4 * 4 * 128 * 128 + 128) + (128 * 10 + 10))
  assert expected == 550_570  # "~0.55 M parameters on 32x32x3".
  shapes = _shapes(10, (32, 32, 3))
  assert sum(int(np.prod(s.shape)) for s in jax.tree.leaves(shapes)) == (
      expected)
  assert set(shapes) == {"conv0", "conv1", "conv2", "conv3", "conv4",
                         "conv5", "hidden", "classifier"}


@pytest.mark.parametrize("shape,num_classes", [((32, 32, 3), 10),
                                               ((8, 8, 1), 3)])
def test_tanh_cnn_output_shape(shape, num_classes):
  model = models.tanh_cnn_model(num_classes)
  x = jnp.zeros((2, *shape))
  out = jax.eval_shape(model.apply, _shapes(num_classes, shape), None, x)
  assert out.shape == (2, num_classes)
  if shape == (8, 8, 1):  # And computed: finite logits.
    logits = jax.jit(model.apply)(
        _weights(num_classes, shape, jax.random.key(0)), None,
        jax.random.normal(jax.random.key(1), x.shape))
    chex.assert_shape(logits, (2, num_classes))
    chex.assert_tree_all_finite(logits)
    assert float(jnp.std(logits)) > 0


def _clipped_sums(model, weights, x, clip_norm):
  """The vmap and the ghost backends' clipped sums of one batch: examples
  of very different scales (some clipped, some not) and a padding row."""
  x = x * jnp.array([0.01, 1.0, 30.0]).reshape(-1, 1, 1, 1)
  y, padding = jnp.array([0, 1, 2]), jnp.array([False, False, True])
  return (jax.jit(mechanisms.local(backend).weight_gradient(
      model, softmax_cross_entropy, clip_norm))(
          weights, None, x, y, None, is_padding_example=padding)
          for backend in ("vmap", "ghost"))


def test_tanh_cnn_ghost_clipped_sum_equals_the_vmap_backend():
  # 8x8x3 inputs: pools 8 -> 4 -> 2 -> 1.
  expected, got = _clipped_sums(
      models.tanh_cnn_model(3), _weights(3, (8, 8, 3), jax.random.key(0)),
      jax.random.normal(jax.random.key(2), (3, 8, 8, 3)), 0.5)
  chex.assert_trees_all_close(got, expected, rtol=2e-5, atol=1e-7)
  assert float(jnp.abs(got["conv0"]["kernel"]).sum()) > 0


def test_tanh_cnn_small_is_tramer_and_bonehs_mnist_network():
  # 28x28x1: conv 16 8x8 stride 2 padding 2 -> 13x13; pool 2x2 stride 1 ->
  # 12x12; conv 32 4x4 stride 2 -> 5x5; pool -> 4x4; dense 512 -> 32 -> 10.
  module = models.make_module("tanh_cnn_small", 10)
  shapes = jax.eval_shape(lambda: module.init(
      jax.random.key(0), jnp.zeros((1, 28, 28, 1))))["params"]
  assert shapes["conv0"]["kernel"].shape == (8, 8, 1, 16)
  assert shapes["conv1"]["kernel"].shape == (4, 4, 16, 32)
  assert shapes["hidden"]["kernel"].shape == (4 * 4 * 32, 32)
  expected = _conv(8, 1, 16) + _conv(4, 16, 32) + (512 * 32 + 32) + 330
  assert expected == 26_010
  assert sum(int(np.prod(s.shape)) for s in jax.tree.leaves(shapes)) == (
      expected)


def test_strided_padded_conv_equals_laxs_convolution():
  x = jax.random.normal(jax.random.key(0), (2, 28, 28, 3))
  kernel = jax.random.normal(jax.random.key(1), (8, 8, 3, 5))
  conv = models.layers.Conv(5, 8, stride=2, padding=2)
  got = conv.apply({"params": {"kernel": kernel}}, x)
  want = jax.lax.conv_general_dilated(
      x, kernel, (2, 2), [(2, 2), (2, 2)],
      dimension_numbers=("NHWC", "HWIO", "NHWC"))
  assert got.shape == (2, 13, 13, 5)
  chex.assert_trees_all_close(got, want, rtol=1e-4, atol=1e-4)
  pooled = models.layers.max_pool_2x2_stride_1(got)
  want_pool = jax.lax.reduce_window(got, -jnp.inf, jax.lax.max,
                                    (1, 2, 2, 1), (1, 1, 1, 1), "VALID")
  np.testing.assert_array_equal(pooled, want_pool)


def test_tanh_cnn_small_ghost_clipped_sum_equals_the_vmap_backend():
  module = models.make_module("tanh_cnn_small", 10)
  expected, got = _clipped_sums(
      models.as_model(module),
      module.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))["params"],
      jax.random.normal(jax.random.key(2), (3, 28, 28, 1)), 0.1)
  chex.assert_trees_all_close(got, expected, rtol=2e-5, atol=1e-7)
  # Clipped at 0.1: the sum of two examples is at most 0.2 in norm.
  norm = float(jnp.sqrt(sum(jnp.sum(g ** 2) for g in jax.tree.leaves(got))))
  assert 0 < norm <= 0.2 + 1e-6


def test_an_unknown_model_is_named():
  with pytest.raises(models.ConfigError, match=r"model='vgg'.*tanh_cnn_small"):
    models.make_module("vgg")
