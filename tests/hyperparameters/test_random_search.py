"""Random search: uniform draws; the best weighted-mean gain among tried configurations."""

import chex
import jax
import jax.numpy as jnp
import numpy as np

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
