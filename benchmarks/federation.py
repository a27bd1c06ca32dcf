r"""A federated round, vectorised, vs a Python loop over the same clients.

Three timings in one run, on random inputs of the model's shape:
- the round of `federated.federated_algorithm` (its `apply`): clients
  `vmap`ped within a device and sharded over the devices' `clients` axis,
  one jitted call;
- the same clients' local updates as a Python loop over a jitted one-client
  update (gather, local DP steps, delta), then the same weighted average and
  server step;
- one centralised DP step (same backend, same model) on a batch as large as
  the round's total, C clients x S steps x B examples: the per-example
  gradient throughput the round is compared with.

Each local update is the main job's training-phase update (DP-SGD weight
steps on a fixed model); `--model=supernet` instead runs the search phase of
the default search space (architecture and weight steps on the supernet).
With `--max_clients` the script doubles the client count until a round no
longer fits the device (accelerators) and reports the largest that ran and
its peak memory. `--sweep=10,40,160 --client_chunk=10` instead measures,
for each clients-per-round count, the round with all clients at once and
in a scan over chunks of `client_chunk` (`federated.client_chunk`): clients
per second and the compiled round's peak memory, whose growth with the
clients is what chunking bounds.

  python -m benchmarks.federation                    # GPU: 64 clients x 4 x 32
  python -m benchmarks.federation --clients=8 --steps=2 --batch=16  # CPU form
  python -m benchmarks.federation --sweep=10,40,160 --client_chunk=10 \
      --steps=1 --batch=8                                # chunking, CPU form
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app, flags

from experiments import cli, reporting
from experiments.configs import default
from fedsearch import federated as fed, models, nas, search_space as ss
from fedsearch.federated import server
from fedsearch.optimizers import dpsgd
from fedsearch.privacy import mechanisms, private_optimizer

_MODEL = flags.DEFINE_enum("model", "cnn", ["cnn", "supernet"],
                           "cnn: 6-conv tanh CNN, training phase; supernet:"
                           " the default search space, search phase")
_CLIENTS = flags.DEFINE_integer("clients", None,
                                "clients per round (default 64; 8 on CPU)")
_STEPS = flags.DEFINE_integer("steps", None, "local steps (default 4; 2 on CPU)")
_BATCH = flags.DEFINE_integer("batch", None,
                              "examples per local step (default 32; 16 on CPU)")
_BACKEND = flags.DEFINE_enum("dp_backend", "ghost", ["vmap", "ghost"],
                             "per-example clipping backend of weight steps")
_ROUNDS = flags.DEFINE_integer("rounds", 3, "timed repetitions (median)")
_MAX_CLIENTS = flags.DEFINE_bool("max_clients", False,
                                 "search the largest client count that fits")
_SWEEP = flags.DEFINE_list("sweep", [], "clients-per-round counts to measure"
                           " all at once and in chunks")
_CHUNK = flags.DEFINE_integer("client_chunk", 10, "clients per chunk (--sweep)")

INPUT_SHAPE = (32, 32, 3)


def _model(name: str):
  """(model, params, DARTS strategy or None) of the benchmarked local update.

  With a strategy, the local update takes its architecture steps (on
  validation batches) as well as the weight steps.
  """
  if name == "cnn":
    weights = models.TanhCNN().init(jax.random.key(0),
                                    jnp.zeros((1, *INPUT_SHAPE)))["params"]
    return models.tanh_cnn_model(), fed.ModelParams(weights, {}), None
  config = default.get_config()
  space = ss.SearchSpace(num_classes=10, **config.space.to_dict())
  strategy = nas.make_strategy("darts", space)
  params = fed.ModelParams(
      ss.init_supernet(space, jax.random.key(0), INPUT_SHAPE),
      ss.init_arch_params(space, key=jax.random.key(1)))
  return strategy.model, params, strategy


def _inputs(clients, steps, batch, examples, train_arch, multiple, seed=0):
  rng = np.random.default_rng(seed)
  m = -(-clients // multiple) * multiple
  idx = lambda: rng.integers(0, examples, (m, steps, batch)).astype(np.int32)
  padding = np.zeros((m, steps, batch), bool)
  padding[clients:] = True
  weights = np.zeros(m, np.float32)
  weights[:clients] = 1.0
  return fed.RoundInputs(
      train_idx=idx(), train_padding=padding,
      val_idx=idx() if train_arch else None,
      val_padding=padding.copy() if train_arch else None,
      expected_batch=np.full((m, 3), batch, np.float32),
      client_weights=weights, client_ids=np.arange(m, dtype=np.int32))


def _peak_bytes(compiled) -> int | None:
  device = jax.devices()[0]
  stats = device.memory_stats() if hasattr(device, "memory_stats") else None
  if stats and "peak_bytes_in_use" in stats:
    return stats["peak_bytes_in_use"]
  if compiled.memory_analysis() is None:
    return None
  return reporting.compiled_peak_bytes(compiled)


def _sweep(model, params, strategy, steps, batch, config, update_options):
  """Clients per second and peak memory, all clients at once vs in chunks."""
  train_arch = strategy is not None
  devices = jax.device_count()
  mesh = fed.client_mesh() if devices > 1 else None
  counts = [int(c) for c in _SWEEP.value]
  examples = 4 * max(counts) * steps * batch
  x = jax.random.normal(jax.random.key(1), (examples, *INPUT_SHAPE))
  y = jnp.arange(examples) % 10
  key = jax.random.key(2)
  print(reporting.machine_line())
  print(f"model {_MODEL.value}, {steps} local steps x batch {batch},"
        f" dp_backend {_BACKEND.value}, {devices} device(s), chunks of"
        f" {_CHUNK.value}; median of {_ROUNDS.value}")
  print("| clients / round | all at once: clients/s | peak MiB |"
        " chunked: clients/s | peak MiB | peak ratio (all / chunked) |")
  print("|---|---|---|---|---|---|")
  for clients in counts:
    row = []
    for chunk in (0, _CHUNK.value):
      algorithm = fed.federated_algorithm(
          model, config, optax.sgd(1.0), client_optimizer=dpsgd(), mesh=mesh,
          client_chunk=chunk, **update_options)
      state = algorithm.init(params)
      inputs = _inputs(clients, steps, batch, examples, train_arch,
                       math.lcm(devices, chunk or 1))
      seconds = reporting.median_seconds(
          lambda: algorithm.apply(state, x, y, inputs, key, 0)[0],
          _ROUNDS.value)
      compiled = algorithm.apply.lower(state, x, y, inputs, key, 0).compile()
      row.append((clients / seconds, reporting.compiled_peak_bytes(compiled)))
    (rate, peak), (chunk_rate, chunk_peak) = row
    print(f"| {clients} | {rate:,.1f} | {peak / 2**20:,.1f} |"
          f" {chunk_rate:,.1f} | {chunk_peak / 2**20:,.1f} |"
          f" {peak / chunk_peak:.2f} |", flush=True)


def main(argv):
  del argv
  on_cpu = jax.default_backend() == "cpu"
  clients = _CLIENTS.value or (8 if on_cpu else 64)
  steps = _STEPS.value or (2 if on_cpu else 4)
  batch = _BATCH.value or (16 if on_cpu else 32)
  model, params, strategy = _model(_MODEL.value)
  train_arch = strategy is not None
  config = fed.ClientConfig(noise_multiplier=1.0)
  mechanism = mechanisms.local(dp_backend=_BACKEND.value)
  client_optimizer = dpsgd()
  update_options = dict(
      mechanism=mechanism, arch_step=(strategy.arch_step if strategy
                                      else nas.weights_only),
      reads_validation=train_arch)
  if _SWEEP.value:
    _sweep(model, params, strategy, steps, batch, config, update_options)
    return
  local = fed.make_local_update(model, config, optimizer=client_optimizer,
                                **update_options)
  server_opt = optax.sgd(1.0)
  examples = 4 * clients * steps * batch
  x = jax.random.normal(jax.random.key(1), (examples, *INPUT_SHAPE))
  y = jnp.arange(examples) % 10
  key = jax.random.key(2)
  devices = jax.device_count()
  mesh = fed.client_mesh() if devices > 1 else None
  algorithm = fed.federated_algorithm(
      model, config, server_opt, client_optimizer=client_optimizer,
      mesh=mesh, **update_options)
  round_fn = algorithm.apply
  state = algorithm.init(params)
  inputs = _inputs(clients, steps, batch, examples, train_arch, devices)

  vectorised = reporting.median_seconds(
      lambda: round_fn(state, x, y, inputs, key, 0)[0], _ROUNDS.value)
  compiled = round_fn.lower(state, x, y, inputs, key, 0).compile()
  peak = _peak_bytes(compiled)

  @jax.jit
  def one_client(train_idx, val_idx, client_key):
    batches = fed.ClientBatches(
        fed.Batches(x[train_idx], y[train_idx],
                    jnp.zeros(train_idx.shape, bool)),
        None if val_idx is None else fed.Batches(
            x[val_idx], y[val_idx], jnp.zeros(val_idx.shape, bool)))
    start = state.client_state()
    new, _ = local(start, batches, client_key,
                   jnp.full((3,), batch, jnp.float32), 0)
    return jax.tree.map(jnp.subtract, new, start)

  @jax.jit
  def apply_mean(state, total):
    return server.server_update(
        state, jax.tree.map(lambda d: d / clients, total), server_opt,
        client_optimizer)

  def loop():
    total = None
    for c in range(clients):
      delta = one_client(inputs.train_idx[c],
                         None if inputs.val_idx is None else inputs.val_idx[c],
                         jax.random.fold_in(key, c))
      total = delta if total is None else jax.tree.map(jnp.add, total, delta)
    return apply_mean(state, total)

  looped = reporting.median_seconds(loop, _ROUNDS.value)

  total_batch = clients * steps * batch
  weight_grad = mechanism.weight_gradient(
      model, mechanisms.softmax_cross_entropy, config.clip_norm,
      client_optimizer.clipping, config.auto_clip_gamma)

  @jax.jit
  def centralised_step(weights, key):
    g = weight_grad(weights, params.arch, x[:total_batch], y[:total_batch],
                    None)
    opt = private_optimizer(config.noise_multiplier * config.clip_norm, key,
                            total_batch, optax.sgd(0.1))
    updates, _ = opt.update(g, opt.init(weights), weights)
    return optax.apply_updates(weights, updates)

  central = reporting.median_seconds(
      lambda: centralised_step(params.weights, key), _ROUNDS.value)
  # Example gradients per second: a search round also takes architecture
  # steps (as many examples again); the centralised step only weight steps.
  round_examples = total_batch * (2 if train_arch else 1)
  print(f"{reporting.machine_line()}")
  print(f"model {_MODEL.value}, {clients} clients x {steps} local steps x"
        f" batch {batch}, dp_backend {_BACKEND.value}, {devices} device(s);"
        f" median of {_ROUNDS.value}")
  print("| | seconds | example gradients / s | ratio |")
  print("|---|---|---|---|")
  print(f"| vectorised round | {vectorised:.3f} |"
        f" {round_examples / vectorised:,.0f} | {looped / vectorised:.2f}×"
        " the loop |")
  print(f"| Python loop over clients | {looped:.3f} |"
        f" {round_examples / looped:,.0f} | 1 |")
  print(f"| one centralised DP step, batch {total_batch} | {central:.3f} |"
        f" {total_batch / central:,.0f} | round throughput"
        f" {(round_examples / vectorised) / (total_batch / central):.2f}× |")
  if peak is not None:
    print(f"peak memory of the round: {peak / 2**20:.1f} MiB")
  if _MAX_CLIENTS.value:
    if on_cpu:
      print("max clients: searched on accelerators only")
      return
    largest, count = None, clients
    while True:
      try:
        trial = _inputs(count, steps, batch, examples, train_arch, devices)
        jax.block_until_ready(round_fn(state, x, y, trial, key, 0)[0])
        largest = (count, _peak_bytes(
            round_fn.lower(state, x, y, trial, key, 0).compile()))
        count *= 2
      except jax.errors.JaxRuntimeError as e:  # Resource exhausted.
        print(f"{count} clients: {str(e).splitlines()[0][:120]}")
        break
    if largest:
      print(f"largest round that ran: {largest[0]} clients, peak"
            f" {largest[1] / 2**30:.2f} GiB")


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
