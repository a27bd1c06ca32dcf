r"""One-stage sampled search vs the DARTS mixture, measured in one run.

1. Client compute per round on the same space, clients and batches: wall
   time (median over timed rounds, after compilation) and XLA's peak buffer
   size of the compiled round (temporaries + arguments + outputs), for a
   DARTS round (architecture step on a validation batch and weight step on a
   train batch over the mixture, clients vmapped) and a one-stage round (one
   joint step on the sampled child, clients mapped in sequence). Target:
   ≥ 5× less compute per round.
2. Final test accuracy at the same total ε of (a) the one-stage child
   deployed with the weights it trained with, no retraining, and (b) the
   DARTS-derived model after retraining. Target: within 1 point.

  python -m benchmarks.one_stage [--seeds=0,1] [--config.space.nodes=3]
"""

import dataclasses
import statistics
import time

import jax
from absl import app, flags

from experiments import cli
from experiments import reporting
from fedsearch import federated as fed
from fedsearch import optimizers
from fedsearch import runner
from fedsearch import search_space as ss
from fedsearch.privacy import NoiseMultipliers
from fedsearch.runner import job as job_lib

_CONFIG = cli.define_config_file(cli.DEFAULT_CONFIG, "Main-job configuration.")
_TIMED = flags.DEFINE_integer("timed_rounds", 10, "rounds timed per strategy")
_SEEDS = flags.DEFINE_list("seeds", ["0"], "seeds of the accuracy runs")
_ONE_STAGE_TRAIN_ROUNDS = flags.DEFINE_integer(
    "one_stage_train_rounds", 0,
    "DP fine-tune rounds after the one-stage search (0: deploy as searched)")


def _round_cost(config, strategy_name):
  """(median seconds per round, peak bytes) of one search round."""
  config = config.copy_and_resolve_references()
  config.nas.strategy = strategy_name
  job = job_lib.build_job(config)
  # The main job's search phase (its batch shapes and data use), with a
  # fixed σ, on one device and without a cost penalty: timing only.
  sigmas = NoiseMultipliers(1.0)
  job = dataclasses.replace(
      job, sigmas=sigmas, client_config=job_lib.client_config(
          config, sigmas, job.federation.sizes),
      client_optimizer=optimizers.make_client_optimizer(
          config.client.optimizer,
          job_lib.auto_lr_config(config, sigmas.loss),
          job.mechanism.noised_sum),
      mesh=None, costs=None)
  phase = runner.build_phase(job)
  round_fn = phase.algorithm.apply
  federation, plan = job.federation, job.plan
  keys = jax.random.split(jax.random.key(0))
  state = phase.algorithm.init(
      fed.ModelParams(
          ss.init_supernet(job.space, keys[0], federation.input_shape),
          job.nas.init(keys[1])),
      nas_state=job.nas.init_state())
  inputs = fed.round_inputs(
      federation.splits, plan.schedule[0], seed=0, round_=0,
      steps=plan.local_steps, sampling_rate=plan.sampling_rate,
      batch_sizes=phase.batch_sizes,
      validation_batches=phase.validation_batches,
      train_on_all_local_data=phase.all_local_data)
  args = (state, federation.x, federation.y, inputs, jax.random.key(1), 0)
  compiled = round_fn.lower(*args).compile()
  peak = reporting.compiled_peak_bytes(compiled)
  jax.block_until_ready(round_fn(*args))
  times = []
  for r in range(_TIMED.value):
    start = time.perf_counter()
    jax.block_until_ready(round_fn(*args[:-1], r))
    times.append(time.perf_counter() - start)
  return statistics.median(times), peak


def main(argv):
  del argv
  config = _CONFIG.value
  f = config.federated
  print(f"{reporting.machine_line()}; {config.dataset}, {f.num_clients}"
        f" clients x {f.local_steps} local step(s), q={f.sampling_rate},"
        f" space {dict(config.space)}")
  darts_s, darts_bytes = _round_cost(config, "darts")
  one_s, one_bytes = _round_cost(config, "one_stage")
  print("\n| search round | wall ms | peak MiB |\n|---|---|---|")
  print(f"| DARTS mixture (arch + weight step) | {1e3 * darts_s:.1f} |"
        f" {darts_bytes / 2**20:.1f} |")
  print(f"| one-stage sampled child (joint step) | {1e3 * one_s:.1f} |"
        f" {one_bytes / 2**20:.1f} |")
  print(f"compute ratio DARTS / one-stage: {darts_s / one_s:.1f}x"
        f" (target >= 5x); memory ratio {darts_bytes / one_bytes:.1f}x",
        flush=True)

  rounds = f.search_rounds + f.train_rounds
  print(f"\n| seed | (a) one-stage deployed, {rounds - _ONE_STAGE_TRAIN_ROUNDS.value}"
        f" search + {_ONE_STAGE_TRAIN_ROUNDS.value} fine-tune rounds | ε |"
        f" (b) DARTS {f.search_rounds} search + {f.train_rounds} retrain rounds"
        f" | ε | DARTS child before retraining | a − b |")
  print("|---|---|---|---|---|---|---|")
  for seed in map(int, _SEEDS.value):
    one = config.copy_and_resolve_references()
    one.seed = seed
    one.nas.strategy = "one_stage"
    one.federated.train_rounds = _ONE_STAGE_TRAIN_ROUNDS.value
    one.federated.search_rounds = rounds - _ONE_STAGE_TRAIN_ROUNDS.value
    darts = config.copy_and_resolve_references()
    darts.seed = seed
    darts.nas.strategy = "darts"
    a = reporting.run_in_scratch(one)
    b = reporting.run_in_scratch(darts)
    print(f"| {seed} | {100 * a['test_accuracy']:.1f} % | {a['epsilon']:.3f} |"
          f" {100 * b['test_accuracy']:.1f} % | {b['epsilon']:.3f} |"
          f" {100 * b['deployed_test_accuracy']:.1f} % |"
          f" {100 * (a['test_accuracy'] - b['test_accuracy']):+.1f} |",
          flush=True)


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
