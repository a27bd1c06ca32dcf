"""Server side: weighted FedAvg through an optax server optimiser.

The mean client delta Δ = Σ_k w_k (θ_k − θ) / Σ_k w_k is handed to the server
optimiser as the pseudo-gradient −Δ (Reddi et al. 2021, "Adaptive Federated
Optimization"): `optax.sgd(1.0)` is plain FedAvg, `optax.adam` FedAdam.
Weights and architecture parameters are aggregated alike.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax


class ServerState(NamedTuple):
  params: dict  # {'weights': ..., 'arch': ...}
  opt_state: optax.OptState


def server_init(params, optimizer: optax.GradientTransformation) -> ServerState:
  return ServerState(params, optimizer.init(params))


def weighted_average(stacked, weights: jax.Array):
  """Σ_k w_k x_k / Σ_k w_k over the leading (client) axis of every leaf."""
  weights = weights / jnp.sum(weights)
  return jax.tree.map(lambda x: jnp.tensordot(weights, x, axes=1), stacked)


def server_update(state: ServerState, mean_delta,
                  optimizer: optax.GradientTransformation) -> ServerState:
  pseudo_grad = jax.tree.map(jnp.negative, mean_delta)
  updates, opt_state = optimizer.update(pseudo_grad, state.opt_state,
                                        state.params)
  return ServerState(optax.apply_updates(state.params, updates), opt_state)
