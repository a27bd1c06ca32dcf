"""One federated round, vectorised over clients and sharded over devices.

The m sampled clients run `local_update` under `jax.vmap` (or, when clients
run different programs, e.g. each its own sampled child, in sequence with
`lax.map`: a vmapped `lax.switch` on a per-client index would compute every
branch); with a mesh, the
client axis is also split over the mesh's `clients` axis with `jax.shard_map`
(each device vmaps over its share), and the weighted average over clients
becomes a cross-device reduction. Results equal the single-device round to
float tolerance; the client count is padded to a multiple of the device count
with zero-weight clients whose batches are all padding.
"""

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import PartitionSpec as P

from fedsearch.federated.client import Batches, ClientBatches
from fedsearch.federated.server import ServerState, server_update, weighted_average

CLIENT_AXIS = "clients"


class RoundInputs(NamedTuple):
  """Host-built description of one round (all leading axes = clients).

  Indices are rows of the device-resident example arrays; `padding` marks
  rows that are not real examples. `client_ids` seed each client's noise.
  """

  train_idx: np.ndarray  # (m, S, B_train) int32
  train_padding: np.ndarray  # (m, S, B_train) bool
  val_idx: np.ndarray | None  # (m, S, B_val) int32
  val_padding: np.ndarray | None
  expected_batch: np.ndarray  # (m, 3) float32: q * split sizes, val size
  client_weights: np.ndarray  # (m,) float32: FedAvg weights, 0 for padding
  client_ids: np.ndarray  # (m,) int32
  feedback_idx: np.ndarray | None = None  # (m, V): whole validation split
  feedback_padding: np.ndarray | None = None
  hparams: dict | None = None  # {name: (m,) float32} per-client overrides
  active_steps: np.ndarray | None = None  # (m, S) bool; None: every step


def client_mesh(num_devices: int | None = None) -> jax.sharding.Mesh:
  devices = jax.devices()[:num_devices] if num_devices else jax.devices()
  return jax.make_mesh((len(devices),), (CLIENT_AXIS,), devices=devices,
                       axis_types=(jax.sharding.AxisType.Auto,))


def make_round(local_update: Callable, server_optimizer: optax.GradientTransformation,
               mesh: jax.sharding.Mesh | None = None,
               update_carried: Callable | None = None,
               shared_program: bool = True) -> Callable:
  """Returns jitted `round_fn(state, x, y, inputs, base_key, round, aggregate)`.

  It returns (new state, per-client privatised gains or None).

  `update_carried`, if given, maps the aggregated `params['carried']` to its
  next value on the server (e.g. HyFreeDP's learning-rate fit).
  `shared_program=False` maps the clients of a device in sequence (see the
  module docstring).

  `x`, `y` are all examples, device-resident; the round gathers its batches
  from them by index, so only indices cross from the host each round.
  """

  def client_deltas(params, batches, keys, expected, hparams, first_step):
    def one_client(batches, key, expected, hparams):
      new, gain = local_update(params, batches, key, expected, first_step,
                               hparams)
      return jax.tree.map(jnp.subtract, new, params), gain
    if shared_program:
      return jax.vmap(one_client)(batches, keys, expected, hparams)
    return jax.lax.map(lambda args: one_client(*args),
                       (batches, keys, expected, hparams))

  all_deltas = client_deltas
  if mesh is not None:
    def sharded_body(params, batches, keys, expected, hparams, first_step):
      # Replicated params enter the per-client scan carry, which becomes
      # device-varying: declare it so up front (shard_map's vma check).
      params = jax.lax.pcast(params, (CLIENT_AXIS,), to="varying")
      return client_deltas(params, batches, keys, expected, hparams,
                           first_step)

    all_deltas = jax.shard_map(
        sharded_body, mesh=mesh,
        in_specs=(P(), P(CLIENT_AXIS), P(CLIENT_AXIS), P(CLIENT_AXIS),
                  P(CLIENT_AXIS), P()),
        out_specs=P(CLIENT_AXIS))

  def gather(x, y, idx, padding):
    return Batches(x[idx], y[idx], padding)

  @jax.jit
  def round_fn(state: ServerState, x, y, inputs: RoundInputs, base_key, round_,
               aggregate=True):
    train = gather(x, y, inputs.train_idx, inputs.train_padding)
    val = (None if inputs.val_idx is None
           else gather(x, y, inputs.val_idx, inputs.val_padding))
    feedback = (None if inputs.feedback_idx is None
                else gather(x, y, inputs.feedback_idx, inputs.feedback_padding))
    round_key = jax.random.fold_in(base_key, round_)
    keys = jax.vmap(lambda i: jax.random.fold_in(round_key, i))(inputs.client_ids)
    steps = inputs.train_idx.shape[1]
    batches = ClientBatches(train, val, feedback,
                            None if inputs.active_steps is None
                            else jnp.asarray(inputs.active_steps))
    deltas, gains = all_deltas(state.params, batches,
                               keys, inputs.expected_batch, inputs.hparams,
                               round_ * steps)
    mean_delta = weighted_average(deltas, inputs.client_weights)
    new = server_update(state, mean_delta, server_optimizer)
    if update_carried is not None:
      params = dict(new.params, carried=update_carried(new.params["carried"]))
      new = new._replace(params=params)
    # aggregate=False (FEATHERS's exploration rounds) keeps the stored state:
    # the round only measures its clients' gains.
    new = jax.tree.map(lambda a, b: jnp.where(aggregate, a, b), new, state)
    return new, gains

  return round_fn
