"""The ghost-norm DP backend gives the vmap backend's clipped sum."""

import chex
import dp_accounting
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from fedsearch import search_space as ss
from fedsearch.federated import client
from fedsearch.errors import ConfigError
from fedsearch.privacy import auto_lr, dp_grad, ghost
from fedsearch.search_space import layers
from fedsearch.search_space.network import with_norm_probes


class _Layers(nn.Module):
  """One of each probed layer, with a tanh between (so norms differ)."""

  which: str

  @nn.compact
  def __call__(self, x):
    if self.which == "dense":
      return layers.Dense(3)(x.reshape(x.shape[0], -1))
    if self.which == "conv1x1":
      x = layers.Conv(5)(x)
    elif self.which == "conv3x3_bias":
      x = layers.Conv(5, 3, use_bias=True)(x)
    elif self.which == "depthwise3x3":
      x = layers.DepthwiseConv(3)(x)
    elif self.which == "depthwise5x5_dilated":
      x = layers.DepthwiseConv(5, 2)(x)
    elif self.which == "groupnorm":
      x = layers.GroupNorm(2)(layers.Conv(4)(x))
    x = jnp.tanh(x)
    return layers.Dense(3)(x.reshape(x.shape[0], -1))


def _both_backends(module, x, clip_norm, clipping="flat"):
  apply = with_norm_probes(module, lambda arch, x, key: (x,))
  weights = module.init(jax.random.key(0), x[:1])["params"]
  vmap_sum = dp_grad.clipped_grad_sum(client.cross_entropy_loss(apply), 0,
                                      clip_norm, True, clipping, 0.01)
  ghost_sum = ghost.clipped_grad_sum(client.probed_example_loss(apply),
                                     clip_norm, clipping, 0.01)
  return weights, jax.jit(vmap_sum), jax.jit(ghost_sum)


def _batch(n=6, shape=(6, 6, 4), seed=1):
  x = jax.random.normal(jax.random.key(seed), (n, *shape))
  # Examples of very different scales, so some are clipped and some not.
  x = x * jnp.logspace(-2, 1, n).reshape(-1, 1, 1, 1)
  return x, jnp.arange(n) % 3


@pytest.mark.parametrize("which", ["dense", "conv1x1", "conv3x3_bias",
                                   "depthwise3x3", "depthwise5x5_dilated",
                                   "groupnorm"])
@pytest.mark.parametrize("clipping", ["flat", "auto"])
def test_each_layer_matches_the_vmap_backend(which, clipping):
  x, y = _batch()
  padding = jnp.array([False] * 5 + [True])
  weights, vmap_sum, ghost_sum = _both_backends(_Layers(which), x, 0.3,
                                                clipping)
  expected = vmap_sum(weights, None, x, y, None, is_padding_example=padding)
  got = ghost_sum(weights, None, x, y, None, is_padding_example=padding)
  chex.assert_trees_all_close(got, expected, rtol=2e-5, atol=1e-6)


@pytest.mark.parametrize("clip_norm", [1e-4, 1e4])
def test_all_clipped_and_none_clipped(clip_norm):
  # C tiny: the sum is C·Σ g_i/‖g_i‖, which depends on every norm exactly;
  # C huge: the plain gradient sum.
  x, y = _batch()
  weights, vmap_sum, ghost_sum = _both_backends(_Layers("conv3x3_bias"), x,
                                                clip_norm)
  chex.assert_trees_all_close(ghost_sum(weights, None, x, y, None),
                              vmap_sum(weights, None, x, y, None),
                              rtol=2e-5, atol=1e-9)


@pytest.mark.parametrize("positions,inputs,outputs", [(1, 7, 3), (4, 9, 5),
                                                      (16, 3, 2)])
@pytest.mark.parametrize("ghost_form", [True, False])
def test_both_matmul_norm_forms_equal_the_materialised_norm(
    positions, inputs, outputs, ghost_form):
  rng = np.random.default_rng(0)
  a = jnp.asarray(rng.normal(size=(3, positions, inputs)), jnp.float32)
  g = jnp.asarray(rng.normal(size=(3, positions, outputs)), jnp.float32)
  per_example = np.einsum("bti,bto->bio", np.asarray(a), np.asarray(g))
  np.testing.assert_allclose(
      ghost.matmul_sq_norm(a, g, ghost=ghost_form),
      (per_example ** 2).sum(axis=(1, 2)), rtol=1e-5)


def test_form_choice_follows_the_cost():
  assert ghost.use_ghost_form(64, 1152, 128)  # 8x8 late conv: T small
  assert not ghost.use_ghost_form(1024, 288, 32)  # 32x32 early conv


def test_a_non_finite_example_adds_nothing():
  x, y = _batch()
  bad = x.at[2].set(jnp.inf)
  weights, _, ghost_sum = _both_backends(_Layers("conv3x3_bias"), x, 0.3)
  keep = jnp.array([True, True, False, True, True, True])
  got = ghost_sum(weights, None, bad, y, None)
  chex.assert_tree_all_finite(got)
  chex.assert_trees_all_close(
      got, ghost_sum(weights, None, x, y, None, is_padding_example=~keep),
      rtol=1e-5, atol=1e-7)


def test_the_clipped_sum_has_sensitivity_c():
  x, y = _batch()
  weights, _, ghost_sum = _both_backends(_Layers("groupnorm"), x, 0.3)
  one = ghost_sum(weights, None, x[:1], y[:1], None)
  assert float(optax.tree.norm(one)) <= 0.3 * (1 + 1e-5)
  unjitted = ghost.clipped_grad_sum(lambda *args: None, 0.3)
  assert unjitted.sensitivity(
      dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE) == 0.3


def test_a_parameter_outside_the_probed_layers_is_refused():
  class WithFlaxDense(nn.Module):
    @nn.compact
    def __call__(self, x):
      x = layers.Dense(4)(x.reshape(x.shape[0], -1))
      return nn.Dense(3, name="plain")(x)

  x, y = _batch()
  weights, _, ghost_sum = _both_backends(WithFlaxDense(), x, 1.0)
  with pytest.raises(ValueError, match="plain/kernel.*dp_backend='vmap'"):
    ghost_sum(weights, None, x, y, None)


@pytest.mark.parametrize("op_set", [
    pytest.param("dpnas", marks=pytest.mark.slow),  # Same layers as darts.
    "darts"])
def test_supernet_and_derived_model_match_the_vmap_backend(op_set):
  space = ss.SearchSpace(op_set=op_set, channels=4, nodes=2, cells=1,
                         groups=2, num_classes=3, head="flatten")
  x, y = _batch(4, (6, 6, 1), seed=2)
  weights = ss.init_supernet(space, jax.random.key(0), (6, 6, 1))
  arch = ss.make_strategy("darts", space).init(jax.random.key(1))
  genotype = ss.make_strategy("darts", space).derive(arch)
  for apply, w in [
      (ss.supernet_apply(space), weights),
      (ss.derived_apply(space, genotype),
       ss.extract_weights(weights, space, genotype, (6, 6, 1)))]:
    expected = jax.jit(dp_grad.clipped_grad_sum(
        client.cross_entropy_loss(apply), 0, 0.1))(w, arch, x, y, None)
    got = jax.jit(ghost.clipped_grad_sum(client.probed_example_loss(apply),
                                         0.1))(w, arch, x, y, None)
    chex.assert_trees_all_close(got, expected, rtol=2e-5, atol=1e-7)


def test_backend_is_checked_and_needs_a_probed_model():
  with pytest.raises(ConfigError, match="privacy.dp_backend.*'ghost'"):
    client.ClientConfig(dp_backend="opacus")
  with pytest.raises(ConfigError, match="dp_backend='ghost'.*'vmap'"):
    client.weight_grad_sum(lambda w, a, x, key=None: x,
                           client.ClientConfig(dp_backend="ghost"))


@pytest.mark.parametrize("optimizer", [
    "dpsgd",
    pytest.param("hyfree", marks=pytest.mark.slow),  # Auto clip: tested above.
])
def test_a_client_update_is_the_same_with_either_backend(optimizer):
  # Search phase on the supernet: architecture steps (always vmap) and weight
  # steps (the backend under test), same keys, so the same noise.
  space = ss.SearchSpace(channels=4, nodes=1, cells=1, num_classes=3,
                         head="flatten")
  x, y = _batch(6, (6, 6, 1), seed=3)
  steps = 2
  train = client.Batches(jnp.stack([x] * steps), jnp.stack([y] * steps),
                         jnp.zeros((steps, 6), bool).at[:, -1].set(True))
  batches = client.ClientBatches(train, train)
  params = {"weights": ss.init_supernet(space, jax.random.key(0), (6, 6, 1)),
            "arch": ss.init_arch_params(space, key=jax.random.key(1))}
  lr_config = auto_lr.AutoLRConfig(probe_every=1)
  if optimizer == "hyfree":
    params["carried"] = auto_lr.init_carried(lr_config)
  results = []
  for backend in ("vmap", "ghost"):
    config = client.ClientConfig(noise_multiplier=0.5, clip_norm=0.1,
                                 optimizer=optimizer, auto_lr=lr_config,
                                 dp_backend=backend)
    local = jax.jit(client.make_local_update(ss.supernet_apply(space), config,
                                             True))
    results.append(local(params, batches, jax.random.key(4),
                         jnp.array([5.0, 5.0, 5.0]), 0)[0])
  chex.assert_trees_all_close(results[1], results[0], rtol=1e-4, atol=1e-6)
  assert not np.allclose(results[0]["weights"]["classifier"]["kernel"],
                         params["weights"]["classifier"]["kernel"])
