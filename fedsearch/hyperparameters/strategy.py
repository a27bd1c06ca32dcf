"""Hyperparameter-search strategies behind one small interface.

A strategy is four pure functions over its own state pytree:
  init(pool_size) -> state
  choose(state, key, num_clients) -> (state, config ids, aggregate)
  update(state, ids, gains, weights, aggregate) -> state
  best(state) -> config id
`aggregate` is False for rounds that only measure (FEATHERS's exploration
rounds restart from the stored weights); gains are the clients' privatised
validation-loss decreases and weights their FedAvg weights (0 for padding).
The federated round never branches on the strategy's name.
"""

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from fedsearch.errors import ConfigError
from fedsearch.hyperparameters import feathers, fedex
from fedsearch.hyperparameters.feathers import per_config_sums


class Strategy(NamedTuple):
  init: Callable
  choose: Callable
  update: Callable
  best: Callable


class RandomSearchState(NamedTuple):
  gain_sums: jax.Array  # (pool,) Σ of weighted gains per configuration
  weight_sums: jax.Array  # (pool,) Σ of the weights behind them


def random_search() -> Strategy:
  """Uniform draws every round; the best mean gain wins."""
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

  return Strategy(init, choose, update, best)


def feathers_bandit(period: int, gamma: float, alpha: float) -> Strategy:
  def choose(state, key, num_clients):
    state, ids, exploring = feathers.choose(state, key, num_clients,
                                            period=period, gamma=gamma)
    return state, ids, ~exploring

  def update(state, ids, gains, weights, aggregate):
    updated = feathers.update(state, ids, gains, weights, alpha=alpha)
    return jax.tree.map(lambda a, b: jnp.where(aggregate, b, a), updated, state)

  return Strategy(feathers.init, choose, update,
                  lambda state: jnp.argmax(state.rewards))


def fedex_search(step_size: float) -> Strategy:
  def choose(state, key, num_clients):
    return state, fedex.choose(state, key, num_clients), jnp.bool_(True)

  def update(state, ids, gains, weights, aggregate):
    del aggregate
    return fedex.update(state, ids, gains, weights, step_size=step_size)

  return Strategy(fedex.init, choose, update,
                  lambda state: jnp.argmax(state.probs))


STRATEGIES = ("none", "feathers", "fedex", "random")


def make_strategy(name: str, *, period: int = 15, gamma: float = 6.0,
                  alpha: float = 0.5, fedex_step: float = 1.0) -> Strategy | None:
  if name not in STRATEGIES:
    raise ConfigError(f"hpo.strategy={name!r} is not allowed; choose one of"
                      f" {list(STRATEGIES)}")
  if name == "none":
    return None
  if name == "feathers":
    return feathers_bandit(period, gamma, alpha)
  if name == "fedex":
    return fedex_search(fedex_step)
  return random_search()
