"""Random search: uniform draws; the best weighted-mean gain among tried configurations."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fedsearch.hyperparameters import random_search


def test_best_is_the_highest_weighted_mean_gain_on_hand_numbers():
  strategy = random_search.strategy()
  state = strategy.init(4)
  # Config 0: (1 + 3) / 2 = 2.0; config 1: 1.5; config 2 only on a padding
  # client (weight 0): not tried, whatever its gain.
  state = strategy.update(state, jnp.array([0, 0, 1, 2]),
                          jnp.array([1.0, 3.0, 1.5, 100.0]),
                          jnp.array([1.0, 1.0, 2.0, 0.0]), jnp.bool_(True))
  chex.assert_trees_all_close(state.gain_sums, jnp.array([4.0, 3.0, 0.0, 0.0]))
  chex.assert_trees_all_close(state.weight_sums,
                              jnp.array([2.0, 2.0, 0.0, 0.0]))
  assert int(strategy.best(state)) == 0
  # Another round: config 1 -> (3 + 2·5) / 4 = 3.25 overtakes.
  state = strategy.update(state, jnp.array([1]), jnp.array([5.0]),
                          jnp.array([2.0]), jnp.bool_(True))
  assert int(strategy.best(state)) == 1


def test_an_untried_configuration_never_wins():
  # Every tried mean is negative; untried ones have no mean (not 0).
  strategy = random_search.strategy()
  state = strategy.update(strategy.init(3), jnp.array([2, 2]),
                          jnp.array([-1.0, -3.0]), jnp.ones(2),
                          jnp.bool_(True))
  assert int(strategy.best(state)) == 2


def test_choose_is_uniform_over_the_pool_and_always_aggregates():
  strategy = random_search.strategy()
  state = strategy.init(5)
  new, ids, aggregate = strategy.choose(state, jax.random.key(0), 20000)
  chex.assert_trees_all_equal(new, state)
  assert bool(aggregate)
  np.testing.assert_allclose(np.bincount(ids, minlength=5) / 20000, 0.2,
                             atol=0.015)


def _additive_rounds(clients, configs, effects):
  """Gains that are exactly round + client + configuration effects."""
  round_effect = {0: 1.0, 1: 0.2, 2: -0.5}
  client_effect = {0: 0.0, 1: 0.6, 2: -0.3}
  return [(jnp.array(ids), jnp.array([round_effect[t] + client_effect[c]
                                      + effects[j]
                                      for c, j in zip(clients, ids)]))
          for t, ids in enumerate(configs)]


def test_blocked_estimate_recovers_configuration_effects_the_mean_misses():
  # Configuration 1 is best by 0.1, but the weakest client (2) drew it twice
  # and the strongest (1) drew configuration 0 twice, once in the first
  # round, whose model gains most: the means prefer 0 (0.63 against 0.13),
  # the blocked estimate 1.
  effects = {0: 0.0, 1: 0.1, 2: -0.2}
  clients = jnp.array([0, 1, 2])
  configs = [[2, 0, 1], [0, 2, 1], [1, 0, 2]]
  mean = random_search.strategy()
  blocked = random_search.strategy("blocked", num_clients=3)
  states = [s.init(3) for s in (mean, blocked)]
  for ids, gains in _additive_rounds([0, 1, 2], configs, effects):
    states = [s.update(state, ids, gains, jnp.ones(3), jnp.bool_(True),
                       clients)
              for s, state in zip((mean, blocked), states)]
  assert int(mean.best(states[0])) == 0
  assert int(blocked.best(states[1])) == 1
  # The fitted effects' differences are the true ones.
  effects_fitted = random_search.configuration_effects(states[1])
  chex.assert_trees_all_close(effects_fitted - effects_fitted[0],
                              jnp.array([0.0, 0.1, -0.2]), atol=1e-5)


def test_blocked_estimate_ignores_padding_and_needs_client_ids():
  blocked = random_search.strategy("blocked", num_clients=2)
  state = blocked.init(3)
  # Two real clients on configurations 0 and 1; a padding slot (id −1,
  # weight 0) on configuration 2 with a huge gain counts for nothing.
  state = blocked.update(state, jnp.array([0, 1, 2]),
                         jnp.array([0.0, 1.0, 100.0]),
                         jnp.array([1.0, 1.0, 0.0]), jnp.bool_(True),
                         jnp.array([0, 1, -1]))
  chex.assert_trees_all_close(state.weight_sums, jnp.array([1.0, 1.0, 0.0]))
  state = blocked.update(state, jnp.array([1, 0]), jnp.array([0.5, 0.3]),
                         jnp.ones(2), jnp.bool_(True), jnp.array([0, 1]))
  assert int(blocked.best(state)) == 1
  with pytest.raises(ValueError, match="client ids"):
    blocked.update(state, jnp.array([0]), jnp.array([1.0]), jnp.ones(1),
                   jnp.bool_(True))
  with pytest.raises(ValueError, match="client count"):
    random_search.strategy("blocked")


def test_blocked_update_is_the_same_under_jit():
  blocked = random_search.strategy("blocked", num_clients=4)
  args = (blocked.init(5), jnp.array([0, 3, 3, 1]),
          jnp.array([0.2, -0.1, 0.4, 0.05]), jnp.array([1.0, 2.0, 0.5, 0.0]),
          jnp.bool_(True), jnp.array([2, 0, 1, -1]))
  chex.assert_trees_all_close(jax.jit(blocked.update)(*args),
                              blocked.update(*args), atol=1e-6)


def _halving_round(strategy, state, gains_by_config):
  """One round in which configuration j gains gains_by_config[j]."""
  ids = jnp.arange(len(gains_by_config))
  return strategy.update(state, ids, jnp.asarray(gains_by_config),
                         jnp.ones(len(gains_by_config)), jnp.bool_(True))


def test_halving_keeps_the_better_half_of_the_survivors_on_hand_numbers():
  strategy = random_search.strategy(halving_rounds=2)
  state = strategy.init(5)
  state = _halving_round(strategy, state, [0.1, 0.5, 0.3, 0.2, 0.0])
  assert bool(jnp.all(state.alive))  # Not a rung's end yet.
  state = _halving_round(strategy, state, [0.1, 0.1, 0.3, 0.4, 0.0])
  # Means 0.1, 0.3, 0.3, 0.3, 0.0: ceil(5 / 2) = 3 survive.
  chex.assert_trees_all_equal(state.alive,
                              jnp.array([False, True, True, True, False]))
  assert strategy.metrics(state) == {"hp_survivors": 3}
  chex.assert_trees_all_close(strategy.probabilities(state),
                              jnp.array([0, 1 / 3, 1 / 3, 1 / 3, 0]))
  # Dropped configurations are never drawn again, whatever their gains.
  _, ids, _ = strategy.choose(state, jax.random.key(0), 3000)
  assert set(np.unique(ids).tolist()) == {1, 2, 3}
  state = _halving_round(strategy, state, [9.0, 0.0, 0.9, 0.3, 9.0])
  state = _halving_round(strategy, state, [9.0, 0.0, 0.0, 0.3, 9.0])
  # Survivors' means: 0.15, 0.375, 0.3 -> ceil(3 / 2) = 2 survive; the
  # best is the survivors' highest mean, not a dropped one's (4.55 for 0).
  chex.assert_trees_all_equal(state.alive,
                              jnp.array([False, False, True, True, False]))
  assert int(strategy.best(state)) == 2


def test_halving_draws_as_published_while_all_survive():
  published = random_search.strategy()
  halving = random_search.strategy(halving_rounds=3)
  key = jax.random.key(7)
  chex.assert_trees_all_equal(published.choose(published.init(10), key, 50)[1],
                              halving.choose(halving.init(10), key, 50)[1])


def test_halving_update_is_the_same_under_jit():
  strategy = random_search.strategy(halving_rounds=1)
  args = (strategy.init(4), jnp.array([0, 3, 3, 1]),
          jnp.array([0.2, -0.1, 0.4, 0.05]), jnp.array([1.0, 2.0, 0.5, 0.0]),
          jnp.bool_(True))
  chex.assert_trees_all_close(jax.jit(strategy.update)(*args),
                              strategy.update(*args))


def test_halving_refuses_a_negative_rung_and_the_blocked_estimate():
  with pytest.raises(ValueError, match="positive number of rounds"):
    random_search.strategy(halving_rounds=-2)
  with pytest.raises(ValueError, match="random_estimate='mean'"):
    random_search.strategy("blocked", num_clients=3, halving_rounds=5)
