r"""Per-step cost of HyFreeDP vs plain DP-SGD, measured in one run.

Times a client's local update of K=10 steps (so exactly one loss probe, with
its 3 extra forward passes) under both optimisers on the same digits batches,
for the default derived model (training phase) and the supernet (search
phase, architecture steps included). Prints the ratio HyFreeDP / DP-SGD;
the target is <= 1.1.

  python -m benchmarks.hyfree_step [--batch=256] [--repeats=20]
"""

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from experiments import cli, reporting
from experiments.configs import default
from fedsearch import data, federated as fed, nas, optimizers
from fedsearch import search_space as ss
from fedsearch.privacy import auto_lr

_BATCH = flags.DEFINE_integer("batch", 256, "examples per step")
_STEPS = flags.DEFINE_integer("steps", 10, "local steps = probe period K")
_REPEATS = flags.DEFINE_integer("repeats", 20, "timed calls per case")


def main(argv):
  del argv
  config = default.get_config()
  ds = data.load_dataset("digits")
  x = jnp.asarray(data.normalize("digits", ds.train_x, ds.pixel_max))
  y = jnp.asarray(ds.train_y)
  rng = np.random.default_rng(0)
  steps, batch = _STEPS.value, _BATCH.value
  idx = rng.integers(0, len(y), (steps, batch))
  train = fed.Batches(x[idx], y[idx], jnp.zeros((steps, batch), bool))
  space = ss.SearchSpace(num_classes=10, **config.space.to_dict())
  weights = ss.init_supernet(space, jax.random.key(0), x.shape[1:])
  arch = ss.init_arch_params(space, key=jax.random.key(1))
  genotype = ss.derive(arch, space)
  darts = nas.make_strategy("darts", space)
  # (model, params, DARTS strategy of the search step or None).
  cases = {
      "derived model (train step)": (
          ss.derived_model(space, genotype),
          fed.ModelParams(
              ss.extract_weights(weights, space, genotype, x.shape[1:]), {}),
          None),
      "supernet (search step)": (darts.model, fed.ModelParams(weights, arch),
                                 darts),
  }
  lr_config = auto_lr.AutoLRConfig(probe_every=steps)
  print(f"{reporting.machine_line()}; batch {batch}, {steps} steps per call,"
        f" K={steps}")
  print("| model | DP-SGD ms/step | HyFreeDP ms/step | ratio |")
  print("|---|---|---|---|")
  for name, (model, params, strategy) in cases.items():
    train_arch = strategy is not None
    batches = fed.ClientBatches(train, train if train_arch else None)
    timings = {}
    for optimizer in ("dpsgd", "hyfree"):
      client_optimizer = optimizers.make_client_optimizer(optimizer, lr_config)
      client = fed.ClientConfig(noise_multiplier=1.0)
      start = fed.ClientState(params, client_optimizer.init(),
                              strategy.init_state() if strategy else None)
      local = jax.jit(fed.make_local_update(
          model, client, optimizer=client_optimizer,
          arch_step=strategy.arch_step if strategy else nas.weights_only,
          reads_validation=train_arch))
      args = (start, batches, jax.random.key(2),
              jnp.array([batch, batch, batch], jnp.float32), 0)
      timings[optimizer] = reporting.median_seconds(
          lambda: local(*args), _REPEATS.value) / steps
    print(f"| {name} | {1e3 * timings['dpsgd']:.2f} |"
          f" {1e3 * timings['hyfree']:.2f} |"
          f" {timings['hyfree'] / timings['dpsgd']:.3f} |", flush=True)


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
