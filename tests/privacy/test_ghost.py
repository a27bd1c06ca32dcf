"""The ghost-norm DP backend gives the vmap backend's clipped sum, with sensitivity C."""

import chex
import dp_accounting
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from fedsearch import nas
from fedsearch import search_space as ss
from fedsearch.errors import ConfigError
from fedsearch.privacy import ghost, mechanisms
from fedsearch.privacy.mechanisms import Model, softmax_cross_entropy
from fedsearch.search_space import layers
from fedsearch.search_space.network import with_norm_probes

_LAYERS = ["dense", "conv1x1", "conv3x3_bias", "depthwise3x3",
           "depthwise5x5_dilated", "groupnorm"]


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


def _sums(module, x, clip_norm, clipping="flat"):
  """Weights and the (vmap, ghost) clipped sums of the local mechanism, unjitted."""
  model = with_norm_probes(module, lambda arch, x, key: (x,))
  weights = module.init(jax.random.key(0), x[:1])["params"]
  vmap_sum, ghost_sum = (
      mechanisms.local(backend).weight_gradient(
          model, softmax_cross_entropy, clip_norm, clipping, 0.01)
      for backend in ("vmap", "ghost"))
  return weights, vmap_sum, ghost_sum


def _both_backends(module, x, clip_norm, clipping="flat"):
  weights, vmap_sum, ghost_sum = _sums(module, x, clip_norm, clipping)
  return weights, jax.jit(vmap_sum), jax.jit(ghost_sum)


def _batch(n=6, shape=(6, 6, 4), seed=1):
  x = jax.random.normal(jax.random.key(seed), (n, *shape))
  # Examples of very different scales, so some are clipped and some not.
  x = x * jnp.logspace(-2, 1, n).reshape(-1, 1, 1, 1)
  return x, jnp.arange(n) % 3


@pytest.mark.parametrize("which", _LAYERS)
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
  if clip_norm == 1e4:
    # Nothing clipped: the gradient of the summed loss itself.
    model = with_norm_probes(_Layers("conv3x3_bias"), lambda a, x, k: (x,))
    plain = jax.grad(lambda w: softmax_cross_entropy(
        model.apply(w, None, x), y).sum())(weights)
    chex.assert_trees_all_close(ghost_sum(weights, None, x, y, None), plain,
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


def _adversarial_batch(kind, n=6, shape=(6, 6, 4)):
  x = jax.random.normal(jax.random.key(11), (n, *shape))
  if kind == "huge":  # Every example far above C: all clipped to exactly C.
    x = x * 1e4
  elif kind == "mixed":  # From 1e-3 to 1e5: clipped and unclipped rows.
    x = x * jnp.logspace(-3, 5, n).reshape(-1, 1, 1, 1)
  elif kind == "non_finite":  # One example overflows to inf, one is NaN.
    x = (x * 1e3).at[1].set(jnp.inf).at[4].set(jnp.nan)
  y = jax.random.randint(jax.random.key(12), (n,), 0, 3)
  return x, y


@pytest.mark.parametrize("kind", ["huge", "mixed", "non_finite"])
@pytest.mark.parametrize("clipping", ["flat", "auto"])
def test_removing_one_example_moves_the_sum_by_at_most_c(kind, clipping):
  # The guarantee itself (add/remove adjacency): the clipped sums of a batch
  # and of the batch without example i (as padding) differ by at most C in
  # L2, whatever the examples; jitted and eager alike.
  clip_norm = 0.3
  x, y = _adversarial_batch(kind)
  weights, _, ghost_sum = _sums(_Layers("groupnorm"), x, clip_norm, clipping)
  assert ghost_sum.sensitivity(
      dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE) == clip_norm
  none = jnp.zeros(len(x), bool)
  for fn in (ghost_sum, jax.jit(ghost_sum)):
    full = fn(weights, None, x, y, None, is_padding_example=none)
    chex.assert_tree_all_finite(full)
    moves = []
    for i in range(len(x)):
      removed = fn(weights, None, x, y, None,
                   is_padding_example=none.at[i].set(True))
      moves.append(float(optax.tree.norm(
          jax.tree.map(jnp.subtract, full, removed))))
    assert max(moves) <= clip_norm * (1 + 1e-5), moves
    if kind == "huge" and clipping == "flat":
      # Every example is clipped to norm exactly C: the bound is tight.
      np.testing.assert_allclose(moves, clip_norm, rtol=1e-3)
    if kind == "non_finite":
      assert moves[1] == 0.0 and moves[4] == 0.0
  # One example alone has norm at most C.
  one = jax.jit(ghost_sum)(weights, None, x[:1], y[:1], None)
  assert float(optax.tree.norm(one)) <= clip_norm * (1 + 1e-5)


@pytest.mark.parametrize("which", ["conv3x3_bias", "depthwise5x5_dilated",
                                   "groupnorm"])
@pytest.mark.parametrize("clipping", ["flat", "auto"])
def test_ghost_clipped_sum_jit_equals_eager(which, clipping):
  x, y = _batch()
  x = x.at[3].set(jnp.nan)  # The non-finite path too.
  padding = jnp.array([False] * 5 + [True])
  weights, _, ghost_sum = _sums(_Layers(which), x, 0.3, clipping)
  with jax.disable_jit():
    eager = ghost_sum(weights, None, x, y, None, is_padding_example=padding)
  jitted = jax.jit(ghost_sum)(weights, None, x, y, None,
                              is_padding_example=padding)
  chex.assert_tree_all_finite(jitted)
  chex.assert_trees_all_close(jitted, eager, rtol=1e-5, atol=1e-7)


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
@pytest.mark.parametrize("which", [
    # ~45 s of XLA:CPU compilation (every op of the set, per-example
    # gradients and ghost norms); each layer type the ops are built from is
    # checked above, and the derived child runs by default.
    pytest.param("supernet", marks=pytest.mark.slow),
    "derived"])
def test_supernet_and_derived_model_match_the_vmap_backend(op_set, which):
  # One node (one edge): the supernet still runs every op of the set once;
  # more edges only repeat them (and multiply the compile time).
  space = ss.SearchSpace(op_set=op_set, channels=4, nodes=1, cells=1,
                         groups=2, num_classes=3, head="flatten")
  x, y = _batch(4, (6, 6, 1), seed=2)
  weights = ss.init_supernet(space, jax.random.key(0), (6, 6, 1))
  strategy = nas.make_strategy("darts", space)
  arch = strategy.init(jax.random.key(1))
  genotype = strategy.derive(arch)
  if which == "supernet":
    model, w = ss.supernet_model(space), weights
  else:
    model = ss.derived_model(space, genotype)
    w = ss.extract_weights(weights, space, genotype, (6, 6, 1))
  expected, got = (
      jax.jit(mechanisms.local(backend).weight_gradient(
          model, softmax_cross_entropy, 0.1))(w, arch, x, y, None)
      for backend in ("vmap", "ghost"))
  chex.assert_trees_all_close(got, expected, rtol=2e-5, atol=1e-7)


def test_the_ghost_backend_needs_a_probed_model():
  model = Model(lambda w, a, x, key=None: x)  # No `probed` twin.
  with pytest.raises(ConfigError, match="dp_backend='ghost'.*'vmap'"):
    mechanisms.local("ghost").weight_gradient(model, softmax_cross_entropy,
                                              1.0)
  # The vmap backend takes it.
  mechanisms.local("vmap").weight_gradient(model, softmax_cross_entropy, 1.0)


@pytest.mark.parametrize("clipping,gamma", [("bilinear", 0.01), ("auto", 0.0)])
def test_bad_clipping_options_are_refused(clipping, gamma):
  with pytest.raises(ValueError, match="clipping|gamma"):
    ghost.clipped_grad_sum(lambda *args: None, 1.0, clipping, gamma)
