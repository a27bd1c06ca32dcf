"""DARTS: the mixture as the step's model, the DARTS derivation, and the
architecture step as a clipped, noised release on a validation batch."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from fedsearch import federated as fed
from fedsearch import nas
from fedsearch import search_space as ss
from fedsearch.privacy import mechanisms

_SHAPE = (6, 6, 1)
_SPACE = ss.SearchSpace(channels=4, nodes=2, cells=1, num_classes=3,
                        head="flatten", max_in_edges=1)


def _weights_arch_batch(n=5):
  weights = ss.init_supernet(_SPACE, jax.random.key(0), _SHAPE)
  arch = ss.init_arch_params(_SPACE, scale=1.0, key=jax.random.key(1))
  x = jax.random.normal(jax.random.key(2), (n, *_SHAPE))
  # Examples of very different scales, so some are clipped and some not.
  x = x * jnp.logspace(-1, 1.5, n).reshape(-1, 1, 1, 1)
  padding = jnp.zeros(n, bool).at[-1].set(True)
  return weights, arch, fed.Batches(x, jnp.arange(n) % 3, padding)


def test_darts_runs_the_mixture_and_derives_by_the_darts_rule():
  strategy = nas.make_strategy("darts", _SPACE)
  weights, arch, val = _weights_arch_batch()
  mixture = ss.CellNetwork(_SPACE).apply(
      {"params": weights}, val.x, jax.nn.softmax(arch["normal"], -1))
  chex.assert_trees_all_close(strategy.model.apply(weights, arch, val.x),
                              mixture, atol=1e-6)
  # The mixture ignores the key, and predicts what it trains.
  chex.assert_trees_all_close(
      strategy.model.apply(weights, arch, val.x, jax.random.key(9)), mixture,
      atol=1e-6)
  chex.assert_trees_all_close(strategy.predict(weights, arch, val.x),
                              mixture, atol=1e-6)
  assert strategy.derive(arch) == ss.derive(arch, _SPACE)
  # Random DARTS alphas (not DSNAS's uniform start).
  assert float(jnp.std(strategy.init(jax.random.key(3))["normal"])) > 0
  # The mixture runs every op: no weight may go without noise.
  assert strategy.active_weights(weights, arch, jax.random.key(1)) is None


def _context(noise_multiplier, key, arch_clip_norm=0.05):
  model = nas.make_strategy("darts", _SPACE).model
  mechanism = mechanisms.local()
  return nas.ArchContext(
      model=model, loss=mechanisms.softmax_cross_entropy,
      mechanism=mechanism,
      weight_gradient=mechanism.weight_gradient(
          model, mechanisms.softmax_cross_entropy, 1.0),
      arch_optimizer=optax.sgd(1.0), clip_norm=1.0,
      arch_clip_norm=arch_clip_norm, noise_multiplier=noise_multiplier,
      clipping="flat", gamma=0.01, key=key,
      expected_batch=jnp.array([4.0, 3.0, 1.0]))


def _arch_step(noise_multiplier, key, weights, arch, val, arch_clip_norm=0.05):
  step = nas.make_strategy("darts", _SPACE).arch_step(
      _context(noise_multiplier, key, arch_clip_norm))
  new_arch, _ = step.before_weights(step.init(arch, None), weights, arch, val,
                                    jax.random.key(0), 0)
  return new_arch


def test_architecture_step_is_the_clipped_validation_gradient_mean():
  weights, arch, val = _weights_arch_batch()
  model = nas.make_strategy("darts", _SPACE).model
  # Per-example gradients w.r.t. α, clipped to C_a by hand; C_a lies
  # between the examples' norms (0.22–0.49 here).
  c_a = 0.3
  per_example = jax.vmap(jax.grad(lambda a, xi, yi: jnp.mean(
      mechanisms.softmax_cross_entropy(
          model.apply(weights, a, xi[None]), yi[None]))),
      in_axes=(None, 0, 0))(arch, val.x, val.y)["normal"]
  norms = jnp.sqrt(jnp.sum(per_example ** 2, axis=(1, 2)))
  real = ~val.padding
  assert bool(jnp.any((norms > c_a) & real))
  assert bool(jnp.any((norms < c_a) & real))  # Both cases are exercised.
  clipped = per_example * jnp.minimum(1.0, c_a / norms)[:, None, None]
  # Sum over real rows, mean over the expected validation batch (3.0),
  # one SGD step at rate 1 (σ = 0: no noise).
  want = arch["normal"] - jnp.sum(
      jnp.where(real[:, None, None], clipped, 0.0), 0) / 3.0
  got = _arch_step(0.0, jax.random.key(1), weights, arch, val, c_a)
  chex.assert_trees_all_close(got["normal"], want, rtol=1e-4, atol=1e-7)
  assert float(jnp.abs(got["normal"] - arch["normal"]).max()) > 1e-4


def test_architecture_noise_has_std_sigma_times_arch_clip_over_batch():
  weights, arch, val = _weights_arch_batch()
  clean = _arch_step(0.0, jax.random.key(1), weights, arch, val)["normal"]
  keys = jax.random.split(jax.random.key(2), 64)
  noisy = jax.jit(jax.vmap(lambda k: _arch_step(
      2.0, k, weights, arch, val)["normal"]))(keys)
  # N(0, (σ·C_a)²) on the sum, divided by the expected validation batch.
  assert float(jnp.std(noisy - clean)) == pytest.approx(2.0 * 0.05 / 3.0,
                                                         rel=0.1)
  np.testing.assert_allclose(jnp.mean(noisy - clean), 0.0, atol=5e-3)


def test_weight_gradient_is_the_mechanisms_and_darts_reports_no_state():
  weights, arch, val = _weights_arch_batch()
  context = _context(1.0, jax.random.key(1))
  step = nas.make_strategy("darts", _SPACE).arch_step(context)
  g, arch_grad = step.gradients(weights, arch, val, jax.random.key(0))
  chex.assert_trees_all_close(
      g, context.weight_gradient(weights, arch, val.x, val.y,
                                 jax.random.key(0),
                                 is_padding_example=val.padding))
  assert arch_grad is None  # The architecture moved before the weights.
  assert step.report(step.init(arch, None)) is None
