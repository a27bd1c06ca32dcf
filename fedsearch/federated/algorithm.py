"""A federated algorithm as an `(init, apply)` pair, in the manner of fedjax.

`federated_algorithm(...)` closes over a model, a per-example loss, a client
optimiser, a server optimiser, the NAS strategy's architecture step and the
privacy mechanism, and returns
  init(params, nas_state=None, client_optimizer_state=None,
       aggregator_state=None) -> ServerState
  apply(state, x, y, inputs, base_key, round, aggregate=True)
      -> (state, per-client privatised gains or None)
`apply` is one jitted round: gather the clients' batches by index from the
device-resident examples, run every client's local update (vmapped, and
sharded over `mesh`), aggregate with the mechanism, then the server step.
`aggregate=False` (FEATHERS's exploration rounds) keeps the stored state:
the round only measures its clients' gains.

A client's gain measures, by default, its own update: under `local` noise
that update carries the full noise, which the round's mean divides by √m,
so the gain charges a large step with ~m times the noise damage the
released model suffers. With `feedback_after_round` each client measures
instead the round's released model against the round's start model (both
public: post-processing of released updates, so the gain is the same
Gaussian mechanism on the same validation split as before).
"""

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from fedsearch.federated.client import (Batches, ClientBatches, ClientConfig,
                                        ClientState, ModelParams,
                                        arch_optimizer, client_keys,
                                        feedback_losses, make_local_update,
                                        validation_gain)
from fedsearch.federated.round import RoundInputs, map_clients
from fedsearch.federated.server import (ServerState, frozen, server_init,
                                        server_per_part, server_update)
from fedsearch.nas.base import ArchContext, ArchStep, weights_only
from fedsearch.optimizers import ClientOptimizer, dpsgd
from fedsearch.privacy import mechanisms
from fedsearch.privacy.mechanisms import Mechanism, Model


# Folded into a round's key for the noise the server's release adds, and
# for the child all of a round's clients run when the mechanism shares its
# noise; client keys fold in client ids, which stay below both.
SERVER_NOISE_STREAM = 2**31 - 1
SHARED_CHILD_STREAM = 2**31 - 2


def client_key(round_key: jax.Array, client_id) -> jax.Array:
  """The key a client's round starts from (`client.client_keys` splits it)."""
  return jax.random.fold_in(round_key, client_id)


def scale_weight_deltas(deltas: ClientState, scale: jax.Array) -> ClientState:
  """Each client's weight delta times its `scale` entry (leading axis:
  clients); the architecture and optimiser deltas as they are."""
  weights = jax.tree.map(
      lambda d: d * jnp.reshape(scale, scale.shape + (1,) * (d.ndim - 1)
                                ).astype(d.dtype),
      deltas.params.weights)
  return deltas._replace(params=deltas.params._replace(weights=weights))


class FederatedAlgorithm(NamedTuple):
  init: Callable[..., ServerState]
  apply: Callable[..., tuple[ServerState, jax.Array | None]]


def federated_algorithm(
    model: Model, client_config: ClientConfig,
    server_optimizer: optax.GradientTransformation, *,
    loss: Callable = mechanisms.softmax_cross_entropy,
    client_optimizer: ClientOptimizer | None = None,
    mechanism: Mechanism | None = None,
    arch_step: Callable[[ArchContext], ArchStep] = weights_only,
    reads_validation: bool = False,
    active_weights: Callable | None = None,
    arch_penalty: Callable | None = None,
    mesh: jax.sharding.Mesh | None = None,
    shared_program: bool = True,
    client_chunk: int = 0,
    server_arch_optimizer: optax.GradientTransformation | None = None,
    feedback_after_round: bool = False
    ) -> FederatedAlgorithm:
  """See the module docstring; the keyword arguments are those of
  `client.make_local_update`, plus `mesh` (shard clients over its devices),
  `shared_program=False` (map a device's clients in sequence) and
  `client_chunk` (> 0: run the round's clients that many at a time, in a
  scan that adds each chunk's `mechanism.combine` into its carry, so that
  memory grows with the chunk, not with the clients per round; a multiple
  of the mesh's devices, dividing the padded client count; 0: all at once).
  The round's sum is then released once (`mechanism.release`), so chunking
  changes nothing but memory, whatever the mechanism.

  When the mechanism `shares_noise` (example-level `aggregate`), a client's
  own state carries only its share of the noise, so the round keeps every
  release a function of the round-start state: all clients run the child
  drawn from the round's key (one program, vectorised), and the
  architecture moves on the server by `server_arch_optimizer` (default:
  the client config's `arch_optimizer` with `arch_penalty`) from the
  released mean gradient, while `server_optimizer` moves the weights.
  """
  client_optimizer = client_optimizer or dpsgd()
  mechanism = mechanism or mechanisms.local()
  if mechanism.shares_noise:
    shared_program = True
    arch_server = server_arch_optimizer or arch_optimizer(
        client_config, penalty=arch_penalty)
    # A controller's warm-up continues the search's server state but must
    # not move α (decay and penalty would): the same state, frozen.
    server_optimizer = server_per_part(
        server_optimizer, arch_server if arch_step is not weights_only
        else frozen(arch_server))
  local_update = make_local_update(
      model, client_config, loss=loss, mechanism=mechanism,
      optimizer=client_optimizer, arch_step=arch_step,
      reads_validation=reads_validation, active_weights=active_weights,
      arch_penalty=arch_penalty)
  all_deltas = map_clients(local_update, mesh, shared_program)
  gain_losses = feedback_losses(model, loss, client_config)

  def released_model_gains(before: ModelParams, after: ModelParams, x, y,
                           inputs: RoundInputs, round_key) -> jax.Array:
    """Every client's privatised validation-loss decrease from `before` to
    `after`, with the feedback keys its local update would have used."""
    def one_client(idx, padding, client_id, expected):
      return validation_gain(
          gain_losses, before, after, Batches(x[idx], y[idx], padding),
          client_keys(client_key(round_key, client_id)), client_config,
          expected[2], mechanism.noised_sum)
    per_client = (inputs.feedback_idx, inputs.feedback_padding,
                  inputs.client_ids, inputs.expected_batch)
    if not client_chunk:
      return jax.vmap(one_client)(*per_client)
    return jax.lax.map(lambda args: one_client(*args), per_client,
                       batch_size=client_chunk)

  def init(params: ModelParams, nas_state=None,
           client_optimizer_state=None, aggregator_state=None) -> ServerState:
    if client_optimizer_state is None:
      client_optimizer_state = client_optimizer.init(params.weights)
    if aggregator_state is None:
      aggregator_state = mechanism.init_state()
    return server_init(params, server_optimizer, client_optimizer_state,
                       nas_state, aggregator_state)

  def gather(x, y, idx, padding):
    return None if idx is None else Batches(x[idx], y[idx], padding)

  def clients_result(state, x, y, inputs: RoundInputs, round_key,
                     first_step):
    """(combined deltas, their weight, gains) of some of the clients."""
    batches = ClientBatches(
        gather(x, y, inputs.train_idx, inputs.train_padding),
        gather(x, y, inputs.val_idx, inputs.val_padding),
        None if feedback_after_round
        else gather(x, y, inputs.feedback_idx, inputs.feedback_padding),
        None if inputs.active_steps is None
        else jnp.asarray(inputs.active_steps))
    keys = jax.vmap(lambda i: client_key(round_key, i))(inputs.client_ids)
    shared_key = (jax.random.fold_in(round_key, SHARED_CHILD_STREAM)
                  if mechanism.shares_noise else None)
    deltas, gains = all_deltas(state.client_state(), batches, keys,
                               inputs.expected_batch, inputs.hparams,
                               first_step, shared_key)
    if inputs.update_scale is not None:
      deltas = scale_weight_deltas(deltas, inputs.update_scale)
    total, weight = mechanism.combine(deltas, inputs.client_weights,
                                      state.aggregator)
    return total, weight, gains

  def chunked_result(state, x, y, inputs: RoundInputs, round_key,
                     first_step):
    clients = inputs.client_ids.shape[0]
    if clients % client_chunk:
      raise ValueError(f"{clients} clients do not split into chunks of"
                       f" {client_chunk}")
    chunks = jax.tree.map(
        lambda a: jnp.reshape(a, (clients // client_chunk, client_chunk,
                                  *a.shape[1:])), inputs)
    run = lambda part: clients_result(state, x, y, part, round_key,
                                      first_step)
    total_shape = jax.eval_shape(
        lambda: run(jax.tree.map(lambda a: a[0], chunks)))[0]

    def body(total, part):
      chunk_total, weight, gains = run(part)
      return jax.tree.map(jnp.add, total, chunk_total), (weight, gains)

    total, (weights, gains) = jax.lax.scan(
        body, jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype),
                           total_shape), chunks)
    gains = None if gains is None else jnp.reshape(gains, (clients,))
    return total, jnp.sum(weights), gains

  @jax.jit
  def apply(state: ServerState, x, y, inputs: RoundInputs, base_key, round_,
            aggregate=True):
    round_key = jax.random.fold_in(base_key, round_)
    first_step = round_ * inputs.train_idx.shape[1]
    result = chunked_result if client_chunk else clients_result
    total, weight, gains = result(state, x, y, inputs, round_key, first_step)
    mean_delta, aggregator = mechanism.release(
        total, weight, client_config.noise_multiplier,
        jax.random.fold_in(round_key, SERVER_NOISE_STREAM), state.aggregator)
    new = server_update(state, mean_delta, server_optimizer, client_optimizer,
                        aggregator)
    new = jax.tree.map(lambda a, b: jnp.where(aggregate, a, b), new, state)
    if feedback_after_round and inputs.feedback_idx is not None:
      gains = released_model_gains(state.params, new.params, x, y, inputs,
                                   round_key)
    return new, gains

  return FederatedAlgorithm(init, apply)
