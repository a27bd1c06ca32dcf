"""Running many clients at once: `vmap` within a device, `shard_map` across.

The m sampled clients run `local_update` under `jax.vmap` (or, when clients
run different programs, e.g. each its own sampled child, in sequence with
`lax.map`: a vmapped `lax.switch` on a per-client index would compute every
branch); with a mesh, the client axis is also split over the mesh's
`clients` axis with `jax.shard_map` (each device maps over its share).
Results equal the single-device round to float tolerance; the client count
is padded to a multiple of the device count with zero-weight clients whose
batches are all padding.
"""

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

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
  # (m,) float32: multiplies each client's weight delta before aggregation
  # (`hpo.exploration_step`); None: 1.
  update_scale: np.ndarray | None = None


def client_mesh(num_devices: int | None = None) -> jax.sharding.Mesh:
  devices = jax.devices()[:num_devices] if num_devices else jax.devices()
  return jax.make_mesh((len(devices),), (CLIENT_AXIS,), devices=devices,
                       axis_types=(jax.sharding.AxisType.Auto,))


def map_clients(local_update: Callable, mesh: jax.sharding.Mesh | None = None,
                shared_program: bool = True) -> Callable:
  """`(start, batches, keys, expected, hparams, first_step, shared_key) ->
  (deltas, gains)`, stacked over clients: each client's `local_update` from
  the same `start` (and the same `shared_key`), and its result minus
  `start`."""

  def client_deltas(start, batches, keys, expected, hparams, first_step,
                    shared_key):
    def one_client(batches, key, expected, hparams):
      new, gain = local_update(start, batches, key, expected, first_step,
                               hparams, shared_key)
      return jax.tree.map(jnp.subtract, new, start), gain
    if shared_program:
      return jax.vmap(one_client)(batches, keys, expected, hparams)
    return jax.lax.map(lambda args: one_client(*args),
                       (batches, keys, expected, hparams))

  if mesh is None:
    return client_deltas

  def sharded_body(start, batches, keys, expected, hparams, first_step,
                   shared_key):
    # The replicated start enters the per-client scan carry, which becomes
    # device-varying: declare it so up front (shard_map's vma check).
    start = jax.lax.pcast(start, (CLIENT_AXIS,), to="varying")
    return client_deltas(start, batches, keys, expected, hparams, first_step,
                         shared_key)

  return jax.shard_map(
      sharded_body, mesh=mesh,
      in_specs=(P(), P(CLIENT_AXIS), P(CLIENT_AXIS), P(CLIENT_AXIS),
                P(CLIENT_AXIS), P(), P()),
      out_specs=P(CLIENT_AXIS))
