"""Random search: uniform draws from the pool every round; the best mean gain wins."""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from fedsearch.hyperparameters.base import Strategy, per_config_sums


class RandomSearchState(NamedTuple):
  gain_sums: jax.Array  # (pool,) Σ of weighted gains per configuration
  weight_sums: jax.Array  # (pool,) Σ of the weights behind them


def strategy() -> Strategy:
  def init(pool_size):
    return RandomSearchState(jnp.zeros(pool_size), jnp.zeros(pool_size))

  def choose(state, key, num_clients):
    ids = jax.random.randint(key, (num_clients,), 0, state.gain_sums.shape[0])
    return state, ids, jnp.bool_(True)

  def update(state, ids, gains, weights, aggregate):
    del aggregate
    gain_sums, weight_sums = per_config_sums(ids, gains, weights,
                                             state.gain_sums.shape[0])
    return RandomSearchState(state.gain_sums + gain_sums,
                             state.weight_sums + weight_sums)

  def best(state):
    mean = jnp.where(state.weight_sums > 0,
                     state.gain_sums / jnp.maximum(state.weight_sums, 1e-12),
                     -jnp.inf)
    return jnp.argmax(mean)

  def uniform(state):
    return jnp.full_like(state.gain_sums, 1.0 / state.gain_sums.shape[0])

  return Strategy(init, choose, update, best, uniform)
