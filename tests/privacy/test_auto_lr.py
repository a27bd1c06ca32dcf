"""HyFreeDP's learning rate: quadratic fit, guards, the privatised loss probes."""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fedsearch.errors import ConfigError
from fedsearch.privacy import auto_lr, mechanisms

_CONFIG = auto_lr.AutoLRConfig(max_change=10.0)


def _state(eta, loss_clip=1.0, config=_CONFIG):
  return auto_lr.init(config)._replace(
      log_learning_rate=jnp.log(jnp.float32(eta)),
      loss_clip=jnp.float32(loss_clip))


@pytest.mark.parametrize("eta,a,b", [(0.1, 4.0, 1.0), (1.0, 0.5, 0.4),
                                     (0.01, 100.0, 2.0)])
def test_quadratic_fit_recovers_the_optimum_of_a_noiseless_quadratic(eta, a, b):
  scales = jnp.asarray(_CONFIG.probe_scales)
  losses = 2.0 - b * scales * eta + 0.5 * a * (scales * eta) ** 2
  fit_a, fit_b = auto_lr.fit_quadratic(scales * eta, losses)
  assert float(fit_a) == pytest.approx(a, rel=1e-3)
  assert float(fit_b) == pytest.approx(b, rel=1e-3)
  new = auto_lr.update(_state(eta), losses, _CONFIG)
  expected = np.clip(b / a, eta / 10, eta * 10)
  assert float(jnp.exp(new.log_learning_rate)) == pytest.approx(expected,
                                                                rel=1e-3)
  assert float(new.learning_rate) == pytest.approx(expected, rel=1e-3)
  # R_l follows the loss at η = 0 (times the factor): post-processing.
  assert float(new.loss_clip) == pytest.approx(2.0 * _CONFIG.loss_clip_factor)


@pytest.mark.parametrize("losses", [
    [1.0, 2.0, 3.0],  # Uphill: minimum behind us.
    [3.0, 2.0, 1.0],  # Straight downhill: curvature 0.
    [1.0, 0.0, 1.0e9],  # Huge curvature.
    [1.0, 1.0 - 1e-9, 1.0],  # Tiny curvature, huge b/a.
    [float("nan"), 1.0, 2.0],
    [float("inf"), -float("inf"), 0.0],
    [0.0, 0.0, 0.0],
])
def test_guards_keep_the_learning_rate_finite_and_bounded(losses):
  eta = 0.05
  new = auto_lr.update(_state(eta), jnp.asarray(losses, jnp.float32), _CONFIG)
  new_eta = float(jnp.exp(new.log_learning_rate))
  assert math.isfinite(new_eta) and math.isfinite(float(new.loss_clip))
  assert eta / 10 * (1 - 1e-5) <= new_eta <= eta * 10 * (1 + 1e-5)
  assert float(new.loss_clip) > 0


@pytest.mark.parametrize("losses,factor", [
    ([1.0, 2.0, 3.0], 0.1),  # Uphill (b < 0): shrink by max_change.
    ([3.0, 2.0, 1.0], 10.0),  # Downhill, no curvature (b > 0): grow.
    ([float("nan"), 1.0, 2.0], 1.0),  # Non-finite fit: keep η.
])
def test_guards_on_hand_numbers(losses, factor):
  new = auto_lr.update(_state(0.05), jnp.asarray(losses, jnp.float32),
                       _CONFIG)
  assert float(new.learning_rate) == pytest.approx(0.05 * factor, rel=1e-4)


def test_a_non_finite_loss_at_zero_keeps_the_loss_clip():
  new = auto_lr.update(_state(0.05, loss_clip=0.7),
                       jnp.array([jnp.nan, 1.0, 2.0]), _CONFIG)
  assert float(new.loss_clip) == pytest.approx(0.7)


def _loss_at(per_example, padding, expected=1.0):
  """The batch's per-example losses, whatever the probe's step (adversarial)."""
  return lambda step: (per_example, padding, expected)


_ADVERSARIAL = jnp.array([0.3, 1e30, -1e30, jnp.nan, jnp.inf, -jnp.inf, 0.69])


def test_loss_release_has_sensitivity_loss_clip():
  # Each probe is privatized_mean with bound R_l: removing any one example
  # (as padding) moves every noiseless probe by at most R_l.
  loss_clip = 0.7
  config = auto_lr.AutoLRConfig(loss_noise_multiplier=0.0)
  state = _state(0.1, loss_clip)
  padding = jnp.zeros(len(_ADVERSARIAL), bool)
  release = lambda pad: auto_lr.probe_losses(
      _loss_at(_ADVERSARIAL, pad), state, config, jax.random.key(0))
  full = release(padding).losses
  assert full.shape == (config.releases_per_probe,)
  chex.assert_tree_all_finite(full)
  for i in range(len(_ADVERSARIAL)):  # Remove example i (as padding).
    removed = release(padding.at[i].set(True)).losses
    assert float(jnp.max(jnp.abs(full - removed))) <= loss_clip * (1 + 1e-6)
  # The same as the generic release with bound R_l.
  chex.assert_trees_all_close(
      full[0], mechanisms.privatized_mean(_ADVERSARIAL, padding, loss_clip,
                                          0.0, jax.random.key(0), 1.0))


def test_loss_noise_std_is_sigma_times_loss_clip_over_batch():
  config = auto_lr.AutoLRConfig(loss_noise_multiplier=3.0)
  state = _state(0.1, loss_clip=2.0)
  loss_at = _loss_at(jnp.zeros(5), jnp.zeros(5, bool), expected=10.0)
  keys = jax.random.split(jax.random.key(1), 4000)
  reports = jax.vmap(
      lambda k: auto_lr.probe_losses(loss_at, state, config, k))(keys)
  draws = reports.losses
  np.testing.assert_allclose(jnp.std(draws, axis=0), 3.0 * 2.0 / 10.0,
                             rtol=0.05)
  # The report states that std (public: σ_l, R_l, the expected batch).
  np.testing.assert_allclose(reports.noise_std, 3.0 * 2.0 / 10.0, rtol=1e-6)
  # Each probe draws its own noise: independent, not one draw repeated.
  corr = np.corrcoef(np.asarray(draws).T)
  assert np.all(np.abs(corr[np.triu_indices(3, 1)]) < 0.1)


def test_probes_sit_at_the_scaled_learning_rate_and_use_the_given_noise():
  # loss_at sees s·η for each s in probe_scales; the mechanism's noised_sum
  # (here: a fixed offset) replaces the client's own noise.
  config = auto_lr.AutoLRConfig(probe_scales=(0.0, 1.0, 3.0))
  steps = []

  def loss_at(step):
    steps.append(float(step))
    return jnp.full(4, step), jnp.zeros(4, bool), 2.0

  got = auto_lr.probe_losses(loss_at, _state(0.1, loss_clip=10.0), config,
                             jax.random.key(0),
                             noised_sum=lambda total, std, key: total + 1.0)
  np.testing.assert_allclose(steps, [0.0, 0.1, 0.3], rtol=1e-5)
  np.testing.assert_allclose(got.losses,
                             [(4 * s + 1.0) / 2.0 for s in steps], rtol=1e-5)


def test_probe_scales_without_zero_are_refused():
  with pytest.raises(ConfigError, match="hyfree.probe_scales"):
    auto_lr.AutoLRConfig(probe_scales=(1.0, 2.0, 3.0))


@pytest.mark.parametrize("field,value", [("probe_every", 0),
                                         ("probe_scales", (0.0, 1.0, 1.0)),
                                         ("max_change", 1.0),
                                         ("significance", -1.0),
                                         ("significance", float("inf")),
                                         ("initial_learning_rate", 0.0),
                                         ("evidence_decay", 1.0),
                                         ("evidence_decay", -0.1)])
def test_bad_constants_name_the_field(field, value):
  with pytest.raises(ConfigError, match=f"hyfree.{field}"):
    auto_lr.AutoLRConfig(**{field: value})


@pytest.mark.parametrize("losses", [[2.0, 1.9, 1.95], [1.0, 2.0, 3.0],
                                    [float("nan"), 1.0, 2.0]])
def test_update_jit_equals_eager(losses):
  state, losses = _state(0.05, 0.7), jnp.asarray(losses, jnp.float32)
  update = lambda s, l: auto_lr.update(s, l, _CONFIG)
  with jax.disable_jit():
    eager = update(state, losses)
  chex.assert_trees_all_close(jax.jit(update)(state, losses), eager,
                              rtol=1e-5)


@pytest.mark.parametrize("sigma", [0.0, 1.5])
def test_probe_losses_jit_equals_eager(sigma):
  # Noise included: the same key gives the same probes under jit.
  config = auto_lr.AutoLRConfig(loss_noise_multiplier=sigma)
  padding = jnp.zeros(len(_ADVERSARIAL), bool).at[0].set(True)

  def probes(state, key):
    def loss_at(step):  # A loss that depends on the step, as a real one.
      return _ADVERSARIAL * (1.0 + step), padding, 4.0
    return auto_lr.probe_losses(loss_at, state, config, key)

  state, key = _state(0.2, 0.7), jax.random.key(3)
  with jax.disable_jit():
    eager = probes(state, key)
  chex.assert_trees_all_close(jax.jit(probes)(state, key), eager, rtol=1e-6)


def test_standard_errors_on_hand_numbers():
  # Probes at (0, η, 2η): aη² is the second difference L0 − 2L1 + L2
  # (variance 6ν²) and bη = 1.5·L0 − 2·L1 + 0.5·L2 (variance 6.5ν²).
  eta, nu = 0.1, 0.03
  sd_a, sd_b = auto_lr.fit_standard_errors(jnp.array([0.0, eta, 2 * eta]), nu)
  assert float(sd_a) == pytest.approx(nu * math.sqrt(6.0) / eta**2, rel=1e-4)
  assert float(sd_b) == pytest.approx(nu * math.sqrt(6.5) / eta, rel=1e-4)


def _quadratic(eta, a, b):
  scales = np.asarray(_CONFIG.probe_scales)
  return jnp.asarray(2.0 - b * scales * eta + 0.5 * a * (scales * eta) ** 2,
                     jnp.float32)


@pytest.mark.parametrize("a,b,nu,factor", [
    # Curvature 40 standard errors: η* = b/a = 0.08, within ×2 of 0.05.
    (10.0, 0.8, 1e-4, 0.08 / 0.05),
    # Curvature under z = 2 standard errors (aη² = 0.0025, sd 0.0024), slope
    # above (bη = 0.05, sd 0.0025): the loss still falls, so η doubles.
    (1.0, 1.0, 1e-3, 2.0),
    # The same slope, rising: η halves.
    (1.0, -1.0, 1e-3, 0.5),
    # Both within noise: η stays.
    (1.0, 0.01, 1e-2, 1.0),
])
def test_eta_moves_only_on_significant_probes(a, b, nu, factor):
  config = auto_lr.AutoLRConfig(max_change=2.0, significance=2.0)
  new = auto_lr.update(_state(0.05), _quadratic(0.05, a, b), config, nu)
  assert float(new.learning_rate) == pytest.approx(0.05 * factor, rel=1e-3)


@pytest.mark.parametrize("significance,max_moved", [(3.0, 0.01), (0.0, 1.0)])
def test_on_pure_noise_gated_eta_stays_and_the_papers_rule_drifts_down(
    significance, max_moved):
  # A flat loss probed with noise ν: nothing to learn. The gated rule
  # moves η in under 1 % of draws; the paper's (z = 0) moves it on every
  # draw, and more often down than up (two of the four sign patterns of
  # (a, b) shrink, one grows): the drift that took η from 1e-4 to 1e-6.
  config = auto_lr.AutoLRConfig(max_change=10.0, significance=significance)
  nu, eta = 0.05, 0.05
  noise = nu * jax.random.normal(jax.random.key(0), (4000, 3))
  new = jax.vmap(lambda l: auto_lr.next_learning_rate(
      jnp.float32(eta), 2.0 + l, config, nu))(noise)
  ratio = np.log(np.asarray(new) / eta)
  moved = np.mean(np.abs(ratio) > 1e-4)
  assert moved <= max_moved
  if significance == 0.0:
    assert moved > 0.99
    assert np.mean(ratio < 0) > np.mean(ratio > 0) + 0.1


def test_pooled_evidence_on_hand_numbers():
  # Two probes, ν 0.1 then 0.2, λ 0.5: weights w = 100, 25; the pool is
  # (0.5·100·L1 + 25·L2) / (0.5·100 + 25), with std
  # √(0.25·100 + 25) / (0.5·100 + 25).
  config = auto_lr.AutoLRConfig(evidence_decay=0.5)
  first, second = jnp.array([1.0, 0.9, 0.8]), jnp.array([2.0, 1.7, 1.6])
  state, _, _ = auto_lr.pool_evidence(auto_lr.init(config), first, 0.1, 0.5)
  _, losses, std = auto_lr.pool_evidence(state, second, 0.2, 0.5)
  np.testing.assert_allclose(losses, (50 * first + 25 * second) / 75,
                             rtol=1e-6)
  assert float(std) == pytest.approx(math.sqrt(50.0) / 75, rel=1e-6)


def test_without_decay_or_noise_each_probe_is_fitted_alone():
  losses, nu = _quadratic(0.05, 1.0, 1.0), 1e-3
  stale = _state(0.05)._replace(evidence=jnp.array([9.0, 9.0, 9.0]),
                                evidence_weight=jnp.float32(5.0),
                                evidence_weight_sq=jnp.float32(5.0))
  for decay, noise in ((0.0, nu), (0.9, 0.0)):
    config = auto_lr.AutoLRConfig(max_change=2.0, significance=2.0,
                                  evidence_decay=decay)
    got = auto_lr.update(stale, losses, config, noise)
    want = auto_lr.next_learning_rate(jnp.float32(0.05), losses, config, noise)
    assert float(got.learning_rate) == pytest.approx(float(want), rel=1e-6)


def _probe_sequence(config, probes, nu, key, b=0.0):
  """η over `probes` probes of a loss with slope b (no curvature) along
  the update, each probe with noise ν."""
  def step(state, key):
    eta = state.learning_rate
    scales = jnp.asarray(config.probe_scales)
    losses = 2.0 - b * scales * eta + nu * jax.random.normal(key, (3,))
    state = auto_lr.update(state, losses, config, nu)
    return state, state.learning_rate
  _, etas = jax.lax.scan(step, auto_lr.init(config),
                         jax.random.split(key, probes))
  return etas


def test_pooling_finds_a_slope_that_no_single_probe_shows():
  # bη = 2ν: one probe's slope is 0.78 of its standard error (2.55ν), far
  # under z = 3. Pooled over a window (λ = 0.9: up to 4.4× the z) it is
  # found and η doubles within 40 probes in nearly every run; alone (λ = 0)
  # a probe crosses z = 3 with chance ~1.3 %, in ~40 % of the runs.
  nu = 0.01
  grew = {}
  for decay in (0.0, 0.9):
    config = auto_lr.AutoLRConfig(initial_learning_rate=0.05,
                                  max_change=2.0, evidence_decay=decay)
    etas = jax.vmap(lambda k: _probe_sequence(
        config, 40, nu, k, b=2.0 * nu / 0.05))(
            jax.random.split(jax.random.key(0), 200))
    grew[decay] = np.mean(np.asarray(etas[:, -1]) > 0.05 * 1.5)
  assert grew[0.9] > 0.9
  assert grew[0.0] < 0.6


def test_pooling_keeps_the_false_move_rate_of_one_probe():
  # A flat loss: each pooled test's statistic is N(0, 1) on noise alone, so
  # moves stay as rare per probe as without pooling (~0.4 % at z = 3).
  config = auto_lr.AutoLRConfig(initial_learning_rate=0.05, evidence_decay=0.9)
  etas = jax.vmap(lambda k: _probe_sequence(config, 50, 0.01, k))(
      jax.random.split(jax.random.key(1), 400))
  etas = np.concatenate([np.full((400, 1), 0.05), np.asarray(etas)], axis=1)
  moves = np.abs(np.diff(np.log(etas), axis=1)) > 1e-4
  assert moves.mean() < 0.01


def test_a_move_restarts_the_pool():
  config = auto_lr.AutoLRConfig(max_change=2.0, significance=2.0)
  new = auto_lr.update(_state(0.05), _quadratic(0.05, 1.0, 1.0), config, 1e-3)
  assert float(new.learning_rate) == pytest.approx(0.1, rel=1e-4)
  chex.assert_trees_all_equal(
      (new.evidence, new.evidence_weight, new.evidence_weight_sq),
      (jnp.zeros(3), jnp.float32(0.0), jnp.float32(0.0)))
  kept = auto_lr.update(_state(0.05), _quadratic(0.05, 1.0, 0.0), config, 1e-3)
  assert float(kept.learning_rate) == pytest.approx(0.05, rel=1e-6)
  assert float(kept.evidence_weight) == pytest.approx(1e6, rel=1e-4)


@pytest.mark.parametrize("shrinks,want", [(False, [2.0, 4.0, 4.0, 4.0]),
                                          (True, [2.0, 4.0, 1.0, 0.2])])
def test_loss_clip_grows_with_the_loss_and_only_the_papers_rule_follows_it_down(
    shrinks, want):
  # Privatised losses at η = 0 of 1, 2, then 0.5, 0.1 as training goes on
  # (factor 2): R_l follows them up; only the paper's rule follows them down.
  config = auto_lr.AutoLRConfig(loss_clip_shrinks=shrinks)
  state, got = _state(0.05, loss_clip=1.0, config=config), []
  for at_zero in (1.0, 2.0, 0.5, 0.1):
    state = auto_lr.update(state, jnp.array([at_zero, at_zero, at_zero]),
                           config, 0.01)
    got.append(float(state.loss_clip))
  np.testing.assert_allclose(got, want, rtol=1e-6)


def test_easy_examples_do_not_collapse_the_loss_clip():
  # 90 % of the examples at loss 0.01, 10 % at 5: the clipped mean is below
  # R_l/2 for every R_l above 0.0225, so following it takes R_l from 2 to
  # that fixed point (the collapse measured on MNIST); growing only, it
  # holds.
  losses = jnp.concatenate([jnp.full(90, 0.01), jnp.full(10, 5.0)])
  loss_at = lambda step: (losses, jnp.zeros(100, bool), 100.0)
  for shrinks, floor in ((True, 0.05), (False, 2.0)):
    config = auto_lr.AutoLRConfig(loss_noise_multiplier=0.0,
                                  loss_clip_shrinks=shrinks)
    state = _state(0.05, loss_clip=2.0, config=config)
    for i in range(20):
      report = auto_lr.probe_losses(loss_at, state, config,
                                    jax.random.key(i))
      state = auto_lr.update(state, report.losses, config)
    if shrinks:
      assert float(state.loss_clip) < floor
    else:
      assert float(state.loss_clip) >= floor
