"""Server side: weighted FedAvg through an optax server optimiser.

The mean client delta Δ = Σ_k w_k (θ_k − θ) / Σ_k w_k is handed to the server
optimiser as the pseudo-gradient −Δ (Reddi et al. 2021, "Adaptive Federated
Optimization"): `optax.sgd(1.0)` is plain FedAvg, `optax.adam` FedAdam.
Weights and architecture parameters are aggregated alike. `params['carried']`,
when present, is client-side optimiser state the server keeps between rounds
(HyFreeDP's learning rate): it moves by the mean client delta, outside the
server optimiser.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax


class ServerState(NamedTuple):
  params: dict  # {'weights': ..., 'arch': ...}
  opt_state: optax.OptState


def _split_carried(tree):
  tree = dict(tree)
  return tree, tree.pop("carried", None)


def server_init(params, optimizer: optax.GradientTransformation) -> ServerState:
  trained, _ = _split_carried(params)
  return ServerState(params, optimizer.init(trained))


def weighted_average(stacked, weights: jax.Array):
  """Σ_k w_k x_k / Σ_k w_k over the leading (client) axis of every leaf."""
  weights = weights / jnp.sum(weights)
  return jax.tree.map(lambda x: jnp.tensordot(weights, x, axes=1), stacked)


def server_update(state: ServerState, mean_delta,
                  optimizer: optax.GradientTransformation) -> ServerState:
  params, carried = _split_carried(state.params)
  mean_delta, carried_delta = _split_carried(mean_delta)
  pseudo_grad = jax.tree.map(jnp.negative, mean_delta)
  updates, opt_state = optimizer.update(pseudo_grad, state.opt_state, params)
  params = optax.apply_updates(params, updates)
  if carried is not None:
    params["carried"] = optax.apply_updates(carried, carried_delta)
  return ServerState(params, opt_state)
