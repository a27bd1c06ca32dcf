"""The ghost backend on stock flax layers equals per-example gradients."""

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

from fedsearch import privacy
from fedsearch.privacy import mechanisms


class ConvNet(nn.Module):
  """Every supported image layer, with the settings that change the norm."""

  groups: int = 2
  padding: object = "SAME"

  @nn.compact
  def __call__(self, x):
    x = nn.Conv(4, (3, 3), strides=2, padding=self.padding, name="conv")(x)
    x = nn.GroupNorm(num_groups=2)(jnp.tanh(x))
    x = nn.Conv(6, (2, 3), kernel_dilation=(2, 1), padding="VALID",
                feature_group_count=self.groups, use_bias=False)(x)
    x = nn.Conv(4, (3, 3), input_dilation=2, padding=((1, 0), (2, 1)))(x)
    x = nn.LayerNorm()(jnp.tanh(x).reshape(len(x), -1))
    return nn.Dense(5)(x)


class TokenNet(nn.Module):
  @nn.compact
  def __call__(self, tokens):
    h = nn.Embed(7, 4)(tokens)  # (B, T, 4); repeated tokens share a row.
    h = nn.Dense(3)(jnp.tanh(h)).mean(axis=1)
    return nn.LayerNorm(use_bias=False)(h)


def _sums(module, x, y, clip_norm, padding):
  params = module.init(jax.random.key(0), x[:1])["params"]
  model = privacy.flax_model(module)
  out = {}
  for backend in ("vmap", "ghost"):
    grad_sum = mechanisms.DP_BACKENDS[backend](True)(
        model, privacy.softmax_cross_entropy, clip_norm)
    out[backend] = grad_sum(params, None, x, y, None,
                            is_padding_example=padding)
  return out


@pytest.mark.parametrize("groups,padding", [(1, "SAME"), (2, 1),
                                            (2, ((0, 1), (1, 2)))])
@pytest.mark.parametrize("clip_norm", [0.05, 100.0])
def test_conv_net_clipped_sum_equals_vmap(groups, padding, clip_norm):
  x = jax.random.normal(jax.random.key(1), (6, 9, 9, 2))
  y = jnp.arange(6) % 5
  padding_rows = jnp.array([False] * 5 + [True])
  sums = _sums(ConvNet(groups, padding), x, y, clip_norm, padding_rows)
  chex.assert_trees_all_close(sums["ghost"], sums["vmap"], atol=2e-5,
                              rtol=2e-4)


def test_embedding_clipped_sum_equals_vmap():
  tokens = jnp.array([[1, 2, 1, 1], [0, 6, 6, 3], [5, 5, 5, 5]])
  sums = _sums(TokenNet(), tokens, jnp.array([0, 2, 1]), 0.1, None)
  chex.assert_trees_all_close(sums["ghost"], sums["vmap"], atol=1e-5,
                              rtol=1e-4)


def test_probed_logits_equal_the_plain_apply():
  x = jax.random.normal(jax.random.key(2), (3, 9, 9, 2))
  module = ConvNet()
  params = module.init(jax.random.key(0), x[:1])["params"]
  model = privacy.flax_model(module)
  logits, probes = model.probed(params, None, None, x)
  chex.assert_trees_all_close(logits, model.apply(params, None, x),
                              atol=1e-6)
  assert set(probes) == {"conv", "GroupNorm_0", "Conv_0", "Conv_1",
                         "LayerNorm_0", "Dense_0"}


class WithBatchNorm(nn.Module):
  @nn.compact
  def __call__(self, x):
    return nn.Dense(3)(nn.BatchNorm(use_running_average=False)(x))


class WithUnknownParameter(nn.Module):
  @nn.compact
  def __call__(self, x):
    return nn.Dense(3)(x) * self.param("temperature", nn.initializers.ones,
                                       ())


@pytest.mark.parametrize("module,named", [
    (WithBatchNorm(), "BatchNorm.*mix the examples"),
    (WithUnknownParameter(), "temperature"),
])
def test_layers_without_a_per_example_bound_are_refused(module, named):
  x = jnp.ones((2, 4))
  variables = module.init(jax.random.key(0), x)
  grad_sum = mechanisms.DP_BACKENDS["ghost"](True)(
      privacy.flax_model(module), privacy.softmax_cross_entropy, 1.0)
  with pytest.raises(ValueError, match=named):
    grad_sum(variables["params"], None, x, jnp.array([0, 1]), None)
