"""The client optimiser protocol: what a client does with a privatised gradient.

A `ClientOptimizer` is an optax-style pair around the DP step:
  init(weights) -> state          what the server carries for it between
                                  rounds (None: stateless), from the model's
                                  initial weights
  transform(hparams) -> optax     the base optimiser, applied after the noise
                                  and the mean over the expected batch
  update(updates, state, probe)   on the client, every local step: the final
      -> (updates, state)         step, and the state to report back
  server_update(state, applied)   on the server, after the clients' states
      -> state                    are averaged; `applied`: the weights'
                                  update the server has just released
  map_weights(state, f) -> state  the state for a model whose weights are
                                  f(weights) (a search's derived child):
                                  any weight-shaped part mapped by f too
`clipping` is the per-example clipping it wants ("flat" or "auto"), and
`probe_every` / `releases_per_probe` what it releases besides gradients (the
accountant counts them). Anything computed from data in `update` must be a
release of the mechanism it is given.
"""

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import optax


class StepProbe(NamedTuple):
  """What a step offers an optimiser that measures the loss along its update.

  `loss_at(step_size, direction=None) -> (per-example losses, padding,
  expected batch)` of the step's batch at θ + step_size·u, u the step's own
  update, or `direction` (a weights tree) when given.
  """

  loss_at: Callable[..., tuple[jax.Array, jax.Array, jax.Array]]
  global_step: jax.Array
  key: jax.Array


class ClientOptimizer(NamedTuple):
  name: str
  clipping: str
  init: Callable[[Any], Any]
  transform: Callable[[Mapping[str, jax.Array]], optax.GradientTransformation]
  update: Callable[[Any, Any, StepProbe], tuple[Any, Any]]
  server_update: Callable[[Any, Any], Any]
  # state -> {name: float} for the per-round metrics line.
  metrics: Callable[[Any], dict]
  map_weights: Callable[[Any, Callable], Any] = lambda state, f: state
  probe_every: int = 0
  releases_per_probe: int = 0
