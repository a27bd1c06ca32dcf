"""The hyperparameter-search protocol.

A strategy is four pure functions over its own state pytree:
  init(pool_size) -> state
  choose(state, key, num_clients) -> (state, config ids, aggregate)
  update(state, ids, gains, weights, aggregate, clients=None) -> state
  best(state) -> config id
  probabilities(state) -> (pool,) the strategy's current distribution over
    the configurations (uniform for random search), for pictures and logs
  metrics(state) -> {name: value} for the round's log (optional)
`aggregate` is False for rounds that only measure (FEATHERS's exploration
rounds, as the paper runs them, restart from the stored weights; with
`hpo.explore_aggregates` they aggregate too), or a (clients,) bool for a
round that aggregates some clients and only measures the others (FEATHERS's
`hpo.feathers_exploration = "client"`); gains are the clients' privatised
validation-loss decreases, weights their FedAvg weights (0 for padding) and
clients the slots' client ids (−1 for padding; read by random search's
`hpo.random_estimate = "blocked"`, which compares configurations within a
client).
Everything it reads is privatised (the gains) or public (the pool, the
weights), so its decisions are post-processing.
"""

from collections.abc import Callable
from typing import NamedTuple

import jax


class Strategy(NamedTuple):
  init: Callable
  choose: Callable
  update: Callable
  best: Callable
  probabilities: Callable
  metrics: Callable[..., dict] = lambda state: {}


def per_config_sums(config_ids: jax.Array, values: jax.Array,
                    weights: jax.Array, pool_size: int
                    ) -> tuple[jax.Array, jax.Array]:
  """(Σ_{k: c_k=j} w_k·v_k, Σ_{k: c_k=j} w_k) for every configuration j.

  Clients of weight 0 (padding) count for nothing.
  """
  weighted = jax.nn.one_hot(config_ids, pool_size) * weights[:, None]
  return weighted.T @ values, weighted.sum(axis=0)
