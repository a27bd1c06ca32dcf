"""FEATHERS's bandit on hand numbers: probabilities, phases, reward updates."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fedsearch.hyperparameters import feathers


def test_feathers_probabilities_and_exploration_length_on_hand_numbers():
  rewards = jnp.array([2.0, 0.0, -1.0, 0.0])
  p = np.exp([1.0, 0.0, -0.5, 0.0])  # r / ‖r‖∞
  p /= p.sum()
  chex.assert_trees_all_close(feathers.probabilities(rewards), p, rtol=1e-6)
  h = -np.sum(p * np.log(p))
  assert int(feathers.exploration_rounds(rewards, 6.0)) == round(6 * h)
  # All-zero rewards: uniform, H = ln 4, round(6 ln 4) = round(8.32) = 8.
  chex.assert_trees_all_close(feathers.probabilities(jnp.zeros(4)),
                              jnp.full(4, 0.25))
  assert int(feathers.exploration_rounds(jnp.zeros(4), 6.0)) == 8


def _state(rewards, round_=3, exploring=True):
  rewards = jnp.asarray(rewards, jnp.float32)
  return feathers.init(rewards.shape[0])._replace(
      rewards=rewards, round=jnp.int32(round_), exploring=jnp.bool_(exploring))


def test_feathers_reward_update_on_hand_numbers():
  state = _state([0.4, 0.2, 0.6, -0.2])
  new = feathers.update(state, jnp.array([0, 0, 2]),
                        gains=jnp.array([1.0, 3.0, -1.0]),
                        weights=jnp.array([1.0, 1.0, 2.0]), alpha=0.5)
  # w = (.25, .25, .5): gain_0 = .25 + .75 = 1.0, gain_2 = -.5; unused
  # configurations decay: α·r.
  chex.assert_trees_all_close(new.rewards, jnp.array([0.7, 0.1, 0.05, -0.1]),
                              rtol=1e-6)
  # Only the rewards (and the running sums) move.
  assert int(new.round) == 3 and int(new.explore_left) == 0


def test_mean_memory_keeps_every_released_gain_on_hand_numbers():
  state = _state([0.0] * 4)
  first = feathers.update(state, jnp.array([0, 0, 2]), jnp.array([1.0, 3.0,
                                                                  -1.0]),
                          jnp.array([1.0, 1.0, 2.0]), memory="mean")
  # w = (.25, .25, .5): config 0 has Σ w·g = 1.0 over Σ w = .5 -> 2.0;
  # config 2: -.5 / .5 -> -1.0; undrawn configurations stay 0.
  chex.assert_trees_all_close(first.rewards, jnp.array([2.0, 0.0, -1.0, 0.0]))
  second = feathers.update(first, jnp.array([0, 1]), jnp.array([-1.0, 4.0]),
                           jnp.array([3.0, 1.0]), memory="mean")
  # w = (.75, .25): config 0 has (1.0 - .75) / (.5 + .75) = 0.2; config 1
  # 1.0 / .25 = 4.0; config 2 is not drawn and keeps its mean (no decay).
  chex.assert_trees_all_close(second.rewards,
                              jnp.array([0.2, 4.0, -1.0, 0.0]), rtol=1e-6)
  # The published memory forgets config 2 (α·r) and weighs the last draw.
  decayed = feathers.update(first, jnp.array([0, 1]), jnp.array([-1.0, 4.0]),
                            jnp.array([3.0, 1.0]), alpha=0.5)
  chex.assert_trees_all_close(decayed.rewards,
                              jnp.array([0.625, 0.5, -0.5, 0.0]), rtol=1e-6)


def test_feathers_phases_explore_then_exploit():
  state = feathers.init(4)
  state = state._replace(rewards=jnp.array([0.0, 0.0, 1.0, 0.0]))
  length = int(feathers.exploration_rounds(state.rewards, 2.0))
  assert length >= 1
  flags = []
  for r in range(12):
    state, ids, explorers = feathers.choose(state, jax.random.key(r), 3,
                                            period=5, gamma=2.0)
    exploring = bool(state.exploring)
    # As published, the whole round explores or none of it does.
    assert list(np.asarray(explorers)) == [exploring] * 3
    flags.append(exploring)
    if not exploring:
      assert list(ids) == [2, 2, 2]  # Exploit argmax r.
  expected = [r % 5 < length for r in range(12)]
  assert flags == expected


@pytest.mark.parametrize("explore_aggregates", [False, True])
def test_the_strategy_moves_rewards_only_after_exploration_rounds(
    explore_aggregates):
  # Exploration rounds update the rewards; exploitation rounds (argmax r)
  # leave them. The paper's exploration rounds only measure (no
  # aggregation); with `explore_aggregates` the server keeps them too.
  strategy = feathers.strategy(period=5, gamma=6.0, alpha=0.5,
                               explore_aggregates=explore_aggregates)
  state = strategy.init(4)
  state, ids, aggregate = strategy.choose(state, jax.random.key(0), 4)
  assert bool(state.exploring)
  assert strategy.metrics(state) == {"hp_exploring": True}
  assert bool(aggregate) == explore_aggregates
  gains = jnp.ones(4)
  explored = strategy.update(state, ids, gains, jnp.ones(4), aggregate)
  chex.assert_trees_all_close(explored.rewards, feathers.update(
      state, ids, gains, jnp.ones(4), alpha=0.5).rewards)
  assert float(jnp.abs(explored.rewards).sum()) > 0
  # Past the phase (8 rounds for 4 uniform configurations): exploitation.
  for r in range(8):
    state, ids, aggregate = strategy.choose(state, jax.random.key(r), 4)
  assert not bool(state.exploring) and bool(aggregate)
  assert strategy.metrics(state) == {"hp_exploring": False}
  exploited = strategy.update(state, ids, gains, jnp.ones(4), aggregate)
  chex.assert_trees_all_equal(exploited, state)


@pytest.mark.parametrize("round_", [0, 3])
def test_choose_jit_equals_eager(round_):
  state = _state([0.3, -0.1, 0.5], round_, exploring=False)
  choose = lambda s, k: feathers.choose(s, k, 5, period=3, gamma=6.0)
  with jax.disable_jit():
    eager = choose(state, jax.random.key(1))
  chex.assert_trees_all_equal(jax.jit(choose)(state, jax.random.key(1)),
                              eager)


def test_client_exploration_runs_the_incumbent_beside_the_explorers():
  # Feedback has arrived (weight_sums > 0): about half the clients explore
  # (drawn from p), the others run argmax r = 2, and only they aggregate.
  state = _state([0.0, 0.1, 1.0, 0.0], round_=0, exploring=False)._replace(
      weight_sums=jnp.ones(4))
  strategy = feathers.strategy(period=5, gamma=6.0, exploration="client",
                               explore_share=0.5)
  new, ids, aggregate = strategy.choose(state, jax.random.key(0), 400)
  assert bool(new.exploring)
  aggregate, ids = np.asarray(aggregate), np.asarray(ids)
  assert aggregate.shape == (400,)
  assert 0.4 < 1 - aggregate.mean() < 0.6  # The explorers' share.
  assert np.all(ids[aggregate] == 2)
  assert len(set(ids[~aggregate].tolist())) == 4  # Drawn from p.
  # Every client's gain moves the rewards, the incumbent's too.
  gains = jnp.where(jnp.asarray(ids) == 2, 1.0, 0.0)
  moved = strategy.update(new, jnp.asarray(ids), gains, jnp.ones(400),
                          jnp.asarray(aggregate))
  assert float(moved.rewards[2]) > float(state.rewards[2]) * 0.5


def test_client_exploration_measures_only_before_any_feedback():
  strategy = feathers.strategy(period=5, gamma=6.0, exploration="client")
  _, _, aggregate = strategy.choose(strategy.init(4), jax.random.key(0), 50)
  assert not np.any(np.asarray(aggregate))  # No incumbent yet: as published.


@pytest.mark.parametrize("exploration", feathers.EXPLORATIONS)
def test_client_exploration_jit_equals_eager(exploration):
  state = _state([0.3, -0.1, 0.5], round_=0, exploring=False)._replace(
      weight_sums=jnp.ones(3))
  strategy = feathers.strategy(period=3, gamma=6.0, exploration=exploration)
  with jax.disable_jit():
    eager = strategy.choose(state, jax.random.key(1), 6)
  chex.assert_trees_all_equal(
      jax.jit(strategy.choose, static_argnums=2)(state, jax.random.key(1), 6),
      eager)
