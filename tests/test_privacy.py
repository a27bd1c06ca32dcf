"""Clip bound, noise std, accounting against dp_accounting, batch padding."""

import math

import chex
import dp_accounting
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax_privacy import accounting as jp_accounting

from fedsearch import privacy


def _linear_loss(w, arch, x, y):
  del arch
  return jnp.mean((x @ w - y) ** 2)


@pytest.mark.parametrize("clip_norm", [0.1, 1.0, 10.0])
def test_clipped_per_example_norms_are_bounded(clip_norm):
  x = jax.random.normal(jax.random.key(0), (16, 5)) * 10
  y = jax.random.normal(jax.random.key(1), (16,))
  w = jnp.ones(5)
  grad_sum = privacy.clipped_grad_sum(_linear_loss, 0, clip_norm)
  per_example = [grad_sum(w, None, x[i:i + 1], y[i:i + 1]) for i in range(16)]
  norms = np.array([float(jnp.linalg.norm(g)) for g in per_example])
  assert np.all(norms <= clip_norm * (1 + 1e-5))
  # The sum is the sum of the clipped per-example gradients...
  chex.assert_trees_all_close(grad_sum(w, None, x, y), sum(per_example),
                              rtol=1e-5, atol=1e-6)
  # ...which are the raw gradients scaled by min(1, C / ||g||).
  raw = jax.vmap(jax.grad(_linear_loss), (None, None, 0, 0))(
      w, None, x[:, None], y[:, None])
  scale = np.minimum(1.0, clip_norm / np.linalg.norm(raw, axis=1))
  chex.assert_trees_all_close(per_example, list(raw * scale[:, None]),
                              rtol=1e-5, atol=1e-6)
  assert grad_sum.sensitivity(
      dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE) == clip_norm


def test_joint_clipping_bounds_weights_and_architecture_together():
  # One-stage steps release (weights, architecture) gradients of the same
  # example as one vector: its joint norm, not each part's, is at most C.
  def loss(w, arch, x, y):
    return jnp.mean((x @ w + arch * x.sum(-1) - y) ** 2)
  x = jax.random.normal(jax.random.key(0), (12, 5)) * 10
  y = jax.random.normal(jax.random.key(1), (12,))
  grad_sum = privacy.clipped_grad_sum(loss, (0, 1), 1.0)
  for i in range(12):
    g_w, g_a = grad_sum(jnp.ones(5), jnp.array(0.5), x[i:i + 1], y[i:i + 1])
    raw_w, raw_a = jax.grad(loss, (0, 1))(jnp.ones(5), jnp.array(0.5),
                                          x[i:i + 1], y[i:i + 1])
    joint = float(jnp.sqrt(jnp.sum(g_w ** 2) + g_a ** 2))
    assert joint <= 1.0 + 1e-5
    # Both parts scaled by the same factor: the direction is kept.
    factor = min(1.0, 1.0 / float(jnp.sqrt(jnp.sum(raw_w ** 2) + raw_a ** 2)))
    chex.assert_trees_all_close((g_w, g_a), (raw_w * factor, raw_a * factor),
                                rtol=1e-5, atol=1e-6)


def test_noise_goes_only_where_the_mask_allows():
  opt = privacy.private_optimizer(2.0, jax.random.key(0), 1.0,
                                  optax.identity())
  grads = {"used": jnp.ones(20000), "unused": jnp.zeros(20000)}
  state = opt.init(grads)
  noised, _ = opt.update(grads, state, grads,
                         noise_mask={"used": True, "unused": False})
  np.testing.assert_array_equal(noised["unused"], 0.0)
  assert float(jnp.std(noised["used"])) == pytest.approx(2.0, rel=0.03)
  everywhere, _ = opt.update(grads, state, grads)
  assert float(jnp.std(everywhere["unused"])) == pytest.approx(2.0, rel=0.03)


@pytest.mark.parametrize("clip_norm,gamma", [(1.0, 0.01), (0.5, 1.0)])
def test_auto_clipping_normalises_below_the_bound(clip_norm, gamma):
  # Scales from 1e-3 to 1e3: tiny gradients too are normalised (no min(1, .)).
  x = jax.random.normal(jax.random.key(0), (8, 5)) * jnp.logspace(-3, 3, 8)[:, None]
  y = jnp.zeros(8)
  w = jnp.ones(5)
  grad_sum = privacy.clipped_grad_sum(_linear_loss, 0, clip_norm,
                                      clipping="auto", gamma=gamma)
  per_example = jnp.stack([grad_sum(w, None, x[i:i + 1], y[i:i + 1])
                           for i in range(8)])
  raw = jax.vmap(jax.grad(_linear_loss), (None, None, 0, 0))(
      w, None, x[:, None], y[:, None])
  raw_norms = jnp.linalg.norm(raw, axis=1)
  chex.assert_trees_all_close(
      per_example, raw * (clip_norm / (raw_norms + gamma))[:, None],
      rtol=1e-5, atol=1e-7)
  assert jnp.all(jnp.linalg.norm(per_example, axis=1) < clip_norm)
  assert grad_sum.sensitivity(
      dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE) == clip_norm


def test_padding_and_non_finite_examples_contribute_nothing():
  x = jnp.ones((4, 3)).at[1].set(jnp.nan)
  y = jnp.ones(4)
  grad_sum = privacy.clipped_grad_sum(_linear_loss, 0, 1.0, nan_safe=True)
  padding = jnp.array([False, False, False, True])
  total = grad_sum(jnp.zeros(3), None, x, y, is_padding_example=padding)
  only_first = grad_sum(jnp.zeros(3), None, x[:1], y[:1])
  chex.assert_tree_all_finite(total)
  # Examples 0 and 2 are identical; 1 is NaN (zeroed), 3 is padding.
  chex.assert_trees_all_close(total, 2 * only_first, rtol=1e-6)
  assert float(jnp.linalg.norm(total)) <= 2.0 + 1e-6


@pytest.mark.parametrize("sigma,clip,expected_batch", [(1.0, 1.0, 1.0),
                                                       (0.7, 2.0, 8.0)])
def test_noise_std_is_sigma_times_clip_over_expected_batch(sigma, clip,
                                                           expected_batch):
  opt = privacy.private_optimizer(sigma * clip, jax.random.key(3),
                                  expected_batch, optax.identity())
  zeros = jnp.zeros(200_000)
  noisy, _ = opt.update(zeros, opt.init(zeros))
  std = float(jnp.std(noisy))
  assert std == pytest.approx(sigma * clip / expected_batch, rel=0.01)
  assert float(jnp.mean(noisy)) == pytest.approx(0.0, abs=0.01 * std)


def _direct_epsilon(streams, delta, accountant):
  # jax-privacy's RDP accountant evaluates a finer grid of orders than
  # dp_accounting's default; the direct computation uses the same grid.
  orders = jp_accounting.RdpAccountantConfig().orders
  acc = (dp_accounting.rdp.RdpAccountant(orders=orders) if accountant == "rdp"
         else dp_accounting.pld.PLDAccountant())
  for s in streams:
    if s.count:
      acc.compose(dp_accounting.PoissonSampledDpEvent(
          s.sampling_rate, dp_accounting.GaussianDpEvent(s.noise_multiplier)),
                  s.count)
  return acc.get_epsilon(delta)


@pytest.mark.parametrize("accountant", ["rdp", "pld"])
def test_epsilon_matches_direct_dp_accounting(accountant):
  streams = [privacy.ReleaseStream("weights", 0.05, 300, 1.1),
             privacy.ReleaseStream("arch", 0.1, 120, 1.1),
             privacy.ReleaseStream("unused", 0.5, 0, 1.1)]
  ours = privacy.epsilon(streams, 1e-5, accountant)
  assert ours == pytest.approx(_direct_epsilon(streams, 1e-5, accountant),
                               rel=1e-9)


def test_calibration_spends_the_target():
  make = lambda s: [privacy.ReleaseStream("w", 0.02, 2000, s)]
  sigma = privacy.calibrate_noise_multiplier(make, 3.0, 1e-5)
  assert privacy.epsilon(make(sigma), 1e-5) <= 3.0
  assert privacy.epsilon(make(sigma * 0.99), 1e-5) > 3.0
  # Same σ as dp_accounting's own calibration of the same event.
  direct = dp_accounting.calibrate_dp_mechanism(
      lambda: dp_accounting.rdp.RdpAccountant(
          orders=jp_accounting.RdpAccountantConfig().orders),
      lambda s: dp_accounting.SelfComposedDpEvent(
          dp_accounting.PoissonSampledDpEvent(
              0.02, dp_accounting.GaussianDpEvent(s)), 2000), 3.0, 1e-5)
  assert sigma == pytest.approx(direct, rel=1e-3)


@pytest.mark.parametrize("n,q", [(50, 0.25), (5000, 0.01), (7, 0.9)])
def test_padded_batch_size_bounds_the_truncation_probability(n, q):
  from scipy import stats
  tail = privacy.truncation_tail(4000, 3.0, 1e-6)
  b = privacy.padded_batch_size(n, q, tail)
  assert stats.binom.sf(b, n, q) <= tail
  assert b == n or stats.binom.sf(b - 1, n, q) > tail
  assert tail == pytest.approx(1e-6 / ((1 + math.exp(3.0)) * 4000))
