"""Two federated rounds over a client mesh; run across processes by
tests/federated/test_multihost.py
(`python -m tests.federated.multihost_round PORT RANK OUT`)."""

import pathlib
import sys

import numpy as np


def two_rounds(mesh) -> dict:
  """Final server params (numpy) after two DP rounds over `mesh`."""
  import jax
  import optax
  from fedsearch import data
  from fedsearch import federated as fed
  from fedsearch import nas
  from fedsearch import search_space as ss

  ds = data.load_dataset("digits")
  # Host (numpy) inputs: identical in every process, so jit may treat them
  # as replicated over a mesh that spans processes.
  x = data.normalize("digits", ds.train_x, ds.pixel_max)
  y = ds.train_y
  splits = fed.split_clients(data.partition(y, "dirichlet", 8, seed=0), 0.3,
                             seed=0)
  space = ss.SearchSpace(channels=4, nodes=1, cells=1)
  params = fed.ModelParams(
      ss.init_supernet(space, jax.random.key(0), (8, 8, 1)),
      ss.init_arch_params(space, key=jax.random.key(1)))
  params = jax.tree.map(np.asarray, params)
  # A DARTS search round (architecture steps on validation batches).
  strategy = nas.make_strategy("darts", space)
  algorithm = fed.federated_algorithm(
      strategy.model, fed.ClientConfig(noise_multiplier=1.0),
      optax.sgd(1.0, 0.5), arch_step=strategy.arch_step,
      reads_validation=strategy.traits.reads_validation, mesh=mesh)
  state = jax.tree.map(np.asarray, algorithm.init(params))
  for round_ in range(2):
    inputs = fed.round_inputs(
        splits, np.array([0, 2, 3, 5, 6, 7]), seed=0, round_=round_, steps=2,
        sampling_rate=0.2, batch_sizes=(24, 12), validation_batches=True,
        train_on_all_local_data=False, client_multiple=mesh.size)
    state, _ = algorithm.apply(state, x, y, inputs, jax.random.key(7),
                               round_)
  # The server state is replicated: every process holds all of it.
  return {jax.tree_util.keystr(path, simple=True, separator="/"):
              np.asarray(leaf.addressable_data(0))
          for path, leaf in jax.tree_util.tree_leaves_with_path(state.params)}


def main(port: str, rank: str, out: str) -> None:
  import jax
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=2,
                             process_id=int(rank))
  from fedsearch import federated as fed
  mesh = fed.client_mesh()
  # One mesh over both processes' devices, not two local ones.
  assert jax.process_count() == 2 and mesh.size == 2 * jax.local_device_count()
  result = two_rounds(mesh)
  if jax.process_index() == 0:
    np.savez(out, **result)
  # Each process draws its own OS entropy; all must use process 0's.
  from fedsearch.privacy import randomness
  secret = randomness.fresh("secret", 0).entropy
  pathlib.Path(f"{out}.secret{rank}").write_text(f"{secret:x}")
  jax.distributed.shutdown()


if __name__ == "__main__":
  main(*sys.argv[1:])
