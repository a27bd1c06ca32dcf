"""Random search: uniform draws from the pool every round; the best gain wins.

Which configuration is best (`hpo.random_estimate`):
  "mean"     the highest weighted mean gain, as published;
  "blocked"  the highest configuration effect of the additive model
             gain = round effect + client effect + configuration effect
             + noise, fitted by weighted least squares: the rounds and the
             clients are the blocks of a randomised block design (Fisher
             1935). A gain depends on the round (an early round's model gains
             more from any step) and on the client (its label-skewed split)
             as well as on the configuration, and the mean credits each
             configuration with the rounds and clients that happened to draw
             it. The round effects are absorbed by centring each round's
             design on its weighted mean (Frisch–Waugh–Lovell), so the state
             is the normal equations of the client and configuration effects,
             a fixed size over any number of rounds. Measured on digits
             (experiments/README.md, "Why random search's choice varies"):
             round and client hold 27 % of the released gains' variance, the
             clients' own training noise 67 %; the blocked estimate changed
             one choice in eight seeds and was not adopted (−0.17 points).
Both read only released gains and public ids and weights: no ε.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from fedsearch.hyperparameters.base import Strategy, per_config_sums

ESTIMATES = ("mean", "blocked")


class RandomSearchState(NamedTuple):
  gain_sums: jax.Array  # (pool,) Σ of weighted gains per configuration
  weight_sums: jax.Array  # (pool,) Σ of the weights behind them


class BlockedState(NamedTuple):
  # Normal equations of (client effects, configuration effects), each round
  # centred on its weighted means and weighted to a total of 1.
  normal: jax.Array  # (clients + pool, clients + pool)
  target: jax.Array  # (clients + pool,)
  weight_sums: jax.Array  # (pool,) Σ of the weights behind each configuration


def _choose(state, key, num_clients):
  ids = jax.random.randint(key, (num_clients,), 0,
                           state.weight_sums.shape[0])
  return state, ids, jnp.bool_(True)


def _best_of(effects, weight_sums):
  """The tried configuration with the highest effect (untried: never)."""
  return jnp.argmax(jnp.where(weight_sums > 0, effects, -jnp.inf))


def _uniform(state):
  return jnp.full_like(state.weight_sums, 1.0 / state.weight_sums.shape[0])


def _mean_strategy() -> Strategy:
  def init(pool_size):
    return RandomSearchState(jnp.zeros(pool_size), jnp.zeros(pool_size))

  def update(state, ids, gains, weights, aggregate, clients=None):
    del aggregate, clients
    gain_sums, weight_sums = per_config_sums(ids, gains, weights,
                                             state.gain_sums.shape[0])
    return RandomSearchState(state.gain_sums + gain_sums,
                             state.weight_sums + weight_sums)

  def best(state):
    return _best_of(state.gain_sums / jnp.maximum(state.weight_sums, 1e-12),
                    state.weight_sums)

  return Strategy(init, _choose, update, best, _uniform)


def configuration_effects(state: BlockedState) -> jax.Array:
  """The fitted configuration effects, up to a common constant.

  The client and configuration indicators both sum to one in every row, so
  the normal equations are singular along (1, −1); differences of
  configuration effects are the same for every solution, and the
  pseudo-inverse picks one.
  """
  effects = jnp.linalg.pinv(state.normal, hermitian=True) @ state.target
  return effects[-state.weight_sums.shape[0]:]


def _blocked_strategy(num_clients: int) -> Strategy:
  if num_clients < 1:
    raise ValueError("hpo.random_estimate='blocked' needs the federation's"
                     f" client count, got {num_clients}")

  def init(pool_size):
    size = num_clients + pool_size
    return BlockedState(jnp.zeros((size, size)), jnp.zeros(size),
                        jnp.zeros(pool_size))

  def update(state, ids, gains, weights, aggregate, clients=None):
    del aggregate
    if clients is None:
      raise ValueError("hpo.random_estimate='blocked' compares configurations"
                       " within clients: update needs the slots' client ids")
    pool_size = state.weight_sums.shape[0]
    clients = jnp.asarray(clients)
    present = (jnp.asarray(weights) > 0) & (clients >= 0)
    weights = jnp.where(present, weights, 0.0)
    total = jnp.sum(weights)
    w = weights / jnp.maximum(total, 1e-12)
    gains = jnp.where(present, gains, 0.0)
    design = jnp.concatenate([jax.nn.one_hot(clients, num_clients),
                              jax.nn.one_hot(ids, pool_size)], axis=1)
    centred = design - w @ design
    centred_gains = gains - w @ gains
    return BlockedState(state.normal + centred.T @ (w[:, None] * centred),
                        state.target + centred.T @ (w * centred_gains),
                        state.weight_sums + weights @ design[:, num_clients:])

  def best(state):
    return _best_of(configuration_effects(state), state.weight_sums)

  return Strategy(init, _choose, update, best, _uniform)


def strategy(estimate: str = "mean", num_clients: int = 0) -> Strategy:
  return (_blocked_strategy(num_clients) if estimate == "blocked"
          else _mean_strategy())
