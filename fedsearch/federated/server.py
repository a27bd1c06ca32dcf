"""Server side: the explicit aggregation of a round's client states.

The mean client delta Δ = Σ_k w_k (θ_k − θ) / Σ_k w_k (the mechanism's
`aggregate`) is handed to the server optimiser as the pseudo-gradient −Δ
(Reddi et al. 2021, "Adaptive Federated Optimization"): `optax.sgd(1.0)` is
plain FedAvg, `optax.adam` FedAdam. Weights and architecture parameters are
aggregated alike; `server_per_part` gives the architecture an optimiser of
its own on the server. The plug-ins' server-carried states (the client
optimiser's, the NAS strategy's) move by their own mean client delta,
outside the server optimiser, and the client optimiser then takes its
server step (HyFreeDP: the learning-rate fit), given the weights' update
the server has just released.
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from fedsearch.federated.client import ClientState, ModelParams
from fedsearch.optimizers import ClientOptimizer


class ServerState(NamedTuple):
  params: ModelParams
  opt_state: optax.OptState  # the server optimiser's, over `params`
  client_optimizer: Any  # `ClientOptimizer.init()`'s state (None: none)
  nas: Any  # `NasStrategy.init_state()`'s state (None: none)
  # `Mechanism.init_state()`'s state (adaptive clipping's scale; None: none)
  aggregator: Any = None

  def client_state(self) -> ClientState:
    return ClientState(self.params, self.client_optimizer, self.nas)


class PerPartState(NamedTuple):
  weights: optax.OptState
  arch: optax.OptState


def server_per_part(weights_optimizer: optax.GradientTransformation,
                    arch_optimizer: optax.GradientTransformation
                    ) -> optax.GradientTransformation:
  """One server optimiser over `ModelParams` from one per part: the weights
  by the server's (FedAvg, FedAdam), the architecture by its own (used when
  the clients release the architecture's noised gradient, not a step of
  their own optimiser)."""
  def init(params: ModelParams) -> PerPartState:
    return PerPartState(weights_optimizer.init(params.weights),
                        arch_optimizer.init(params.arch))

  def update(updates: ModelParams, state: PerPartState, params=None):
    weights, weights_state = weights_optimizer.update(
        updates.weights, state.weights, None if params is None
        else params.weights)
    arch, arch_state = arch_optimizer.update(
        updates.arch, state.arch, None if params is None else params.arch)
    return ModelParams(weights, arch), PerPartState(weights_state, arch_state)

  return optax.GradientTransformation(init, update)


def frozen(optimizer: optax.GradientTransformation
           ) -> optax.GradientTransformation:
  """`optimizer`'s state, kept as it is, and no update: a phase that must
  not move its parameters but hands its state on to one that will."""
  return optax.GradientTransformation(
      optimizer.init,
      lambda updates, state, params=None: (
          jax.tree.map(jnp.zeros_like, updates), state))


def server_init(params: ModelParams, server_optimizer: optax.GradientTransformation,
                client_optimizer_state=None, nas_state=None,
                aggregator_state=None) -> ServerState:
  return ServerState(params, server_optimizer.init(params),
                     client_optimizer_state, nas_state, aggregator_state)


def server_update(state: ServerState, mean_delta: ClientState,
                  server_optimizer: optax.GradientTransformation,
                  client_optimizer: ClientOptimizer,
                  aggregator_state=None) -> ServerState:
  pseudo_grad = jax.tree.map(jnp.negative, mean_delta.params)
  updates, opt_state = server_optimizer.update(pseudo_grad, state.opt_state,
                                               state.params)
  return ServerState(
      optax.apply_updates(state.params, updates), opt_state,
      client_optimizer.server_update(optax.apply_updates(
          state.client_optimizer, mean_delta.optimizer), updates.weights),
      optax.apply_updates(state.nas, mean_delta.nas), aggregator_state)
