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


def test_feathers_reward_update_on_hand_numbers():
  state = feathers.FeathersState(jnp.array([0.4, 0.2, 0.6, -0.2]),
                                 jnp.int32(0), jnp.int32(3), jnp.bool_(True))
  new = feathers.update(state, jnp.array([0, 0, 2]),
                        gains=jnp.array([1.0, 3.0, -1.0]),
                        weights=jnp.array([1.0, 1.0, 2.0]), alpha=0.5)
  # w = (.25, .25, .5): gain_0 = .25 + .75 = 1.0, gain_2 = -.5; unused
  # configurations decay: α·r.
  chex.assert_trees_all_close(new.rewards, jnp.array([0.7, 0.1, 0.05, -0.1]),
                              rtol=1e-6)
  # Only the rewards move.
  assert int(new.round) == 3 and int(new.explore_left) == 0


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
  state = feathers.FeathersState(jnp.array([0.3, -0.1, 0.5]), jnp.int32(0),
                                 jnp.int32(round_), jnp.bool_(False))
  choose = lambda s, k: feathers.choose(s, k, 5, period=3, gamma=6.0)
  with jax.disable_jit():
    eager = choose(state, jax.random.key(1))
  chex.assert_trees_all_equal(jax.jit(choose)(state, jax.random.key(1)),
                              eager)
