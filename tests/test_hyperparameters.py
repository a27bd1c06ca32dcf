"""Hyperparameter spaces, FEATHERS's bandit, FedEx and the private feedback."""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.configs import default
from fedsearch import hyperparameters as hp
from fedsearch.errors import ConfigError
from fedsearch.hyperparameters import feathers, fedex, feedback


def test_pool_is_reproducible_and_within_ranges():
  # The main job's default space: FEATHERS's ranges.
  space = hp.space_from_dict(default.get_config().hpo.space.to_dict())
  a = hp.draw_pool(space, 200, seed=3)
  b = hp.draw_pool(space, 200, seed=3)
  chex.assert_trees_all_equal(a, b)
  assert not np.array_equal(a["learning_rate"],
                            hp.draw_pool(space, 200, seed=4)["learning_rate"])
  assert np.all((a["learning_rate"] >= 1e-3) & (a["learning_rate"] <= 1e-1))
  assert np.all((a["momentum"] >= 0.6) & (a["momentum"] <= 1.0))
  # Log scale: about half the draws below the geometric midpoint 1e-2.
  assert 0.35 < np.mean(a["learning_rate"] < 1e-2) < 0.65
  space = hp.space_from_dict({"local_steps": {"scale": "categorical",
                                              "choices": [1, 2, 5]}})
  assert set(hp.draw_pool(space, 50, 0)["local_steps"]) <= {1, 2, 5}


@pytest.mark.parametrize("spec,field", [
    ({"lr": {"scale": "cubic", "low": 1, "high": 2}}, "hyperparameters.lr.scale"),
    ({"lr": {"scale": "log", "low": 0.0, "high": 1.0}}, "hyperparameters.lr"),
    ({"lr": {"scale": "uniform", "low": 2.0, "high": 1.0}}, "hyperparameters.lr"),
    ({"bs": {"scale": "categorical"}}, "hyperparameters.bs.choices"),
    ({"lr": {"scale": "log", "lo": 1e-3}}, "unknown keys"),
])
def test_bad_spaces_name_the_field(spec, field):
  with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
    hp.space_from_dict(spec)


def test_feathers_probabilities_and_exploration_length_on_hand_numbers():
  rewards = jnp.array([2.0, 0.0, -1.0, 0.0])
  p = np.exp([1.0, 0.0, -0.5, 0.0])  # r / ‖r‖∞
  p /= p.sum()
  chex.assert_trees_all_close(feathers.probabilities(rewards), p, rtol=1e-6)
  h = -np.sum(p * np.log(p))
  assert int(feathers.exploration_rounds(rewards, 6.0)) == round(6 * h)
  # All-zero rewards: uniform, H = ln 4, round(6 ln 4) = round(8.32) = 8.
  assert int(feathers.exploration_rounds(jnp.zeros(4), 6.0)) == 8


def test_feathers_reward_update_on_hand_numbers():
  state = feathers.FeathersState(jnp.array([0.4, 0.2, 0.6, -0.2]),
                                 jnp.int32(0), jnp.int32(3))
  new = feathers.update(state, jnp.array([0, 0, 2]),
                        gains=jnp.array([1.0, 3.0, -1.0]),
                        weights=jnp.array([1.0, 1.0, 2.0]), alpha=0.5)
  # w = (.25, .25, .5): gain_0 = .25 + .75 = 1.0, gain_2 = -.5.
  chex.assert_trees_all_close(new.rewards, jnp.array([0.7, 0.1, 0.05, -0.1]),
                              rtol=1e-6)


def test_feathers_phases_explore_then_exploit():
  state = feathers.init(4)
  state = state._replace(rewards=jnp.array([0.0, 0.0, 1.0, 0.0]))
  length = int(feathers.exploration_rounds(state.rewards, 2.0))
  assert length >= 1
  flags = []
  for r in range(12):
    state, ids, exploring = feathers.choose(state, jax.random.key(r), 3,
                                            period=5, gamma=2.0)
    flags.append(bool(exploring))
    if not exploring:
      assert list(ids) == [2, 2, 2]  # Exploit argmax r.
  expected = [r % 5 < length for r in range(12)]
  assert flags == expected


def test_fedex_two_arm_update():
  state = fedex.FedExState(jnp.array([0.5, 0.5]), jnp.float32(0.5), jnp.int32(4))
  new = fedex.update(state, jnp.array([0, 1]), gains=jnp.array([1.0, 0.0]),
                     weights=jnp.array([1.0, 1.0]), step_size=1.0,
                     baseline_decay=0.9)
  # ∇̃ = (.5 (1 - .5) / .5, .5 (0 - .5) / .5) = (.5, -.5).
  expected = np.exp([0.5, -0.5]) / np.exp([0.5, -0.5]).sum()
  chex.assert_trees_all_close(new.probs, expected, rtol=1e-5)
  assert float(new.baseline) == pytest.approx(0.9 * 0.5 + 0.1 * 0.5)
  # Repeated: the better arm takes over.
  for r in range(30):
    ids = fedex.choose(new, jax.random.key(r), 8)
    new = fedex.update(new, ids, gains=(ids == 0).astype(jnp.float32),
                       weights=jnp.ones(8))
  assert float(new.probs[0]) > 0.95


def test_feedback_sensitivity_holds_for_adversarial_losses():
  clip = 0.5
  before = jnp.array([1e30, -1e30, jnp.nan, jnp.inf, 2.0, 0.1, -jnp.inf])
  after = jnp.array([-1e30, 1e30, 0.0, jnp.inf, 1.0, 0.3, 5.0])
  padding = jnp.zeros(len(before), bool)
  total = feedback.clipped_gain_sum(before, after, padding, clip)
  assert math.isfinite(float(total))
  for i in range(len(before)):
    removed = feedback.clipped_gain_sum(before, after, padding.at[i].set(True),
                                        clip)
    assert abs(float(total - removed)) <= clip * (1 + 1e-6)


def test_feedback_noise_std():
  keys = jax.random.split(jax.random.key(0), 4000)
  draws = jax.vmap(lambda k: feedback.privatized_gain(
      jnp.zeros(3), jnp.zeros(3), jnp.zeros(3, bool), 0.5, 2.0, k, 20.0))(keys)
  assert float(jnp.std(draws)) == pytest.approx(2.0 * 0.5 / 20.0, rel=0.05)


def test_accountant_total_with_feedback_matches_direct_composition():
  from jax_privacy import accounting as jp_accounting  # pylint: disable=g-import-not-at-top
  import dp_accounting  # pylint: disable=g-import-not-at-top
  from fedsearch.runner.plan import NoiseMultipliers, make_plan  # pylint: disable=g-import-not-at-top
  # 6 clients, 3 per round, 10 rounds of which 4 search; 2 local steps.
  schedule = np.array([[0, 1, 2], [3, 4, 5], [0, 2, 4], [1, 3, 5], [0, 1, 2],
                       [0, 1, 3], [2, 4, 5], [0, 2, 3], [1, 4, 5], [0, 3, 5]])
  plan = make_plan(schedule, search_rounds=4, local_steps=2, sampling_rate=0.3,
                   num_clients=6, epsilon=3.0, delta=1e-5,
                   truncation_delta_fraction=0.1, accountant="rdp",
                   feedback=True, feedback_fraction=0.2)
  sigmas = NoiseMultipliers(gradient=2.0, feedback=6.0)
  # Component-wise max over clients: search participations max 2 (client 0
  # in rounds 0 and 2 ...), training participations max 4 (client 0).
  counts = plan.counts(10)
  search = int(np.bincount(schedule[:4].ravel(), minlength=6).max())
  train = int(np.bincount(schedule[4:].ravel(), minlength=6).max())
  assert counts["hp_feedback"] == search
  acc = dp_accounting.rdp.RdpAccountant(
      orders=jp_accounting.RdpAccountantConfig().orders)
  step = dp_accounting.PoissonSampledDpEvent(0.3, dp_accounting.GaussianDpEvent(2.0))
  acc.compose(step, 2 * search)  # Weight steps.
  acc.compose(step, 2 * search)  # Architecture steps.
  acc.compose(step, 2 * train)
  acc.compose(dp_accounting.GaussianDpEvent(6.0), search)  # Whole val split.
  assert plan.spent(sigmas, 10) == pytest.approx(
      acc.get_epsilon(plan.accounting_delta), rel=1e-9)
  # Calibration: gradients within 80 % of ε, the feedback fills it up.
  calibrated = plan.noise_multipliers(0.0)
  breakdown = plan.breakdown(calibrated)
  assert breakdown["gradients_only"] == pytest.approx(2.4, rel=1e-3)
  assert breakdown["total"] == pytest.approx(3.0, rel=1e-3)
  assert breakdown["total"] <= 3.0 * (1 + 1e-6)


@pytest.mark.parametrize("name", ["feathers", "fedex", "random"])
def test_strategies_share_one_interface(name):
  strategy = hp.strategy.make_strategy(name, period=4, gamma=1.0)
  state = strategy.init(5)
  for r in range(6):
    state, ids, aggregate = strategy.choose(state, jax.random.key(r), 4)
    assert ids.shape == (4,) and aggregate.dtype == jnp.bool_
    # Configuration 3 always gains most.
    gains = jnp.where(ids == 3, 1.0, 0.0)
    state = strategy.update(state, ids, gains, jnp.ones(4), aggregate)
  assert 0 <= int(strategy.best(state)) < 5


def test_unknown_strategy_is_refused():
  with pytest.raises(ConfigError, match="hpo.strategy"):
    hp.strategy.make_strategy("grid")
