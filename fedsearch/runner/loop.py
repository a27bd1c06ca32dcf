"""The round loop: host-side inputs, the hyperparameter controller, records.

Each round: the phase for this round (search, warm-up, or the derived
model's training once the search is over), the clients' configurations
(when a hyperparameter search runs), the host-built batches, one jitted
round of the phase's federated algorithm, the monitor-split progress, the
checkpoint. The next round's batches are drawn on the host while the
current round runs, when they do not depend on its results.
"""

import dataclasses
import math
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from fedsearch import federated as fed
from fedsearch import hyperparameters as hp_lib
from fedsearch import search_space as ss
from fedsearch.errors import DivergedError
from fedsearch.privacy import client_sizes
from fedsearch.runner import states, tensorboard
from fedsearch.runner.evaluation import accuracy_and_loss
from fedsearch.runner.job import Job
from fedsearch.runner.phases import Phase, build_phase
from fedsearch.runner.workdir import Workdir, write_atomic


@dataclasses.dataclass
class Progress:
  """Where a run stands (host side, mutable between rounds)."""

  server: fed.ServerState | None
  hpo_state: Any
  genotype: ss.Genotype | None
  phase: Phase
  metrics: list[dict]


def checkpoint_tree(progress: Progress) -> dict:
  return {"server": progress.server, "hpo": progress.hpo_state}


def _fresh_progress(job: Job, work: Workdir, rounds_done: int) -> Progress:
  """The state a run has after `rounds_done` rounds, before its restore.

  Up to and including the last search round the checkpoint holds the
  supernet: a run stopped just after the genotype was derived (before the
  first derived-model checkpoint) resumes from it and derives again, with
  the same result.
  """
  hpo_state = (job.hpo.strategy.init(hp_lib.pool_size(job.hpo.pool))
               if job.hpo else None)
  if job.retrained is not None:
    phase = build_phase(job, job.retrained)
    return Progress(states.retrain_state(job, phase, job.retrained),
                    hpo_state, job.retrained, phase, [])
  if rounds_done > job.config.federated.search_rounds:
    genotype = ss.Genotype.from_json(work.genotype_file.read_text())
    phase = build_phase(job, genotype)
    supernet = states.supernet_state(job, build_phase(job))
    return Progress(states.after_search(job, phase, supernet, genotype),
                    hpo_state, genotype, phase, [])
  phase = build_phase(job)
  return Progress(states.supernet_state(job, phase), hpo_state, None, phase,
                  [])


def start(job: Job, work: Workdir, report: Callable) -> tuple[Progress, int]:
  """The run's state after its last intact checkpoint (or a fresh one).

  A checkpoint that cannot be restored (damaged, partial) is discarded with
  one warning line and the one before it is used.
  """
  for rounds_done in work.checkpointed_rounds():
    progress = _fresh_progress(job, work, rounds_done)
    try:
      restored = work.restore_state(rounds_done, checkpoint_tree(progress))
    except Exception as e:  # Orbax raises many kinds for a damaged tree.
      report(f"warning: the checkpoint after round {rounds_done} cannot be"
             f" restored ({type(e).__name__}); discarding it and falling"
             " back to the one before")
      work.discard_checkpoint(rounds_done)
      continue
    progress.server, progress.hpo_state = restored["server"], restored["hpo"]
    report(f"resuming after round {rounds_done}")
    break
  else:
    rounds_done = 0
    progress = _fresh_progress(job, work, 0)
  progress.server = states.place(job, progress.server)
  progress.metrics = [m for m in work.metrics() if m["round"] <= rounds_done]
  return progress, rounds_done


def finish_search(job: Job, work: Workdir, progress: Progress,
                  report: Callable) -> None:
  """Derives the genotype and deploys it with the supernet's weights."""
  genotype = states.derive_genotype(job, progress.server.params.arch)
  phase = build_phase(job, genotype)
  server = states.after_search(job, phase, progress.server, genotype)
  # Weights first: a genotype file on disk means the deployment is complete.
  work.save_weights("deployed", server.params.weights)
  write_atomic(work.genotype_file, genotype.to_json())
  report(f"derived genotype: {genotype.edges}")
  progress.server, progress.genotype, progress.phase = server, genotype, phase


class RoundInputsBuilder:
  """Host-side batches of a round, and the clients' configurations."""

  def __init__(self, job: Job):
    self.job = job
    self.feedback_size = int(max(job.federation.sizes.bound(client_sizes.VAL)))

  def client_slots(self, round_: int, phase: Phase) -> int:
    """The round's clients padded to a multiple of the devices and chunk."""
    return (-(-len(self.job.plan.schedule[round_]) // phase.client_multiple)
            * phase.client_multiple)

  def fixed_ids(self, round_: int, phase: Phase, hpo_state):
    """Every client's configuration index when none is being searched."""
    if self.job.hpo is None:
      return None
    best = int(self.job.hpo.strategy.best(hpo_state))
    return np.full(self.client_slots(round_, phase), best)

  def __call__(self, round_: int, phase: Phase, ids, searching: bool
               ) -> fed.RoundInputs:
    job = self.job
    values = {} if ids is None else {
        name: np.asarray(v[np.asarray(ids)], np.float32)
        for name, v in job.hpo.pool.items()}
    inputs = fed.round_inputs(
        job.federation.splits, job.plan.schedule[round_],
        seed=job.randomness.entropy, round_=round_,
        steps=job.plan.local_steps, sizes=job.federation.sizes,
        sampling_rate=job.plan.sampling_rate, batch_sizes=phase.batch_sizes,
        validation_batches=phase.validation_batches,
        train_on_all_local_data=phase.all_local_data,
        client_multiple=phase.client_multiple,
        feedback_size=self.feedback_size if searching else 0,
        client_steps=values.pop("local_steps", None),
        client_rates=values.pop("sampling_rate", None))
    return inputs if ids is None else inputs._replace(hparams=values)


def incumbent_scales(job: Job, progress: Progress, ids) -> np.ndarray:
  """`hpo.exploration_step='incumbent'`: each client's update rescaled to
  the step of the strategy's best (at most the configured default's), or
  of the configured default before any feedback
  (`hyperparameters/exploration.py`)."""
  had_feedback = any("hp_mean_gain" in r for r in progress.metrics)
  incumbent = (int(job.hpo.strategy.best(progress.hpo_state)) if had_feedback
               else None)
  c = job.client_config
  return hp_lib.update_scales(
      job.hpo.pool, ids, incumbent,
      {"learning_rate": c.learning_rate, "momentum": c.momentum})


def round_record(job: Job, progress: Progress, round_: int, start_time,
                 inputs=None, gains=None, aggregate=True, ids=None) -> dict:
  """The metrics line of a finished round (monitor split, ε, plug-ins)."""
  params = progress.server.params
  acc, loss = accuracy_and_loss(
      lambda x: progress.phase.predict(params.weights, params.arch, x),
      job.federation.monitor_x, job.federation.monitor_y)
  record = {"round": round_ + 1, "phase": progress.phase.name,
            "monitor_accuracy": acc, "monitor_loss": loss,
            "epsilon": job.plan.spent(job.sigmas, round_ + 1),
            "elapsed_s": time.time() - start_time}
  if gains is not None:
    weights = np.asarray(inputs.client_weights)
    record["hp_measure_only"] = not aggregate
    record["hp_mean_gain"] = float(
        np.sum(weights * np.asarray(gains)) / np.sum(weights))
    record["hp_best_index"] = int(job.hpo.strategy.best(progress.hpo_state))
    # Each client's released gain, its configuration, who it is and its
    # weight: what a variance decomposition of the feedback (round, client,
    # configuration) or a replay of a strategy needs. Released or public,
    # so logging them costs no ε.
    present = weights > 0
    record["hp_client_gains"] = np.asarray(gains)[present].tolist()
    record["hp_client_weights"] = weights[present].tolist()
    record["hp_client_configurations"] = np.asarray(ids)[present].tolist()
    record["hp_clients"] = np.asarray(inputs.client_ids)[present].tolist()
    if inputs.update_scale is not None:
      record["hp_mean_update_scale"] = float(
          np.sum(weights * inputs.update_scale) / np.sum(weights))
    if job.config.hpo.reward == "round":  # The round's one configuration.
      record["hp_round_configuration"] = {
          name: float(values[0]) for name, values in inputs.hparams.items()}
    record.update(job.hpo.strategy.metrics(progress.hpo_state))
    record[tensorboard.HYPERPARAMETERS] = np.asarray(
        job.hpo.strategy.probabilities(progress.hpo_state)).round(5).tolist()
  if params.arch:  # While searching: the distribution over ops per edge.
    record[tensorboard.ARCHITECTURE] = np.asarray(
        ss.mixing_weights(params.arch)).round(5).tolist()
  if progress.server.nas is not None:
    record.update(job.nas.metrics(progress.server.nas))
  record.update(job.client_optimizer.metrics(progress.server.client_optimizer))
  if progress.server.aggregator is not None:  # Adaptive clipping's bounds.
    scale = float(progress.server.aggregator)
    record["clip_norm"] = scale * job.config.privacy.clip_norm
    record["arch_clip_norm"] = scale * job.config.privacy.arch_clip_norm
  return record


def _check_finite(job: Job, server: fed.ServerState, round_: int,
                  monitor_loss: float) -> None:
  """Stops a run whose parameters, or whose loss on the server's public
  monitor split, are no longer finite, before that round is checkpointed."""
  finite = jax.tree.reduce(
      lambda ok, leaf: ok & jnp.all(jnp.isfinite(leaf)), server.params,
      jnp.bool_(True))
  if not (bool(finite) and math.isfinite(monitor_loss)):
    c, f = job.config.client, job.config.federated
    raise DivergedError(
        f"round {round_ + 1}: the model's parameters or loss are no longer"
        " finite"
        f" (ε spent so far {job.plan.spent(job.sigmas, round_ + 1):.3f}); the"
        f" steps are too large: lower client.learning_rate={c.learning_rate}"
        f" (or federated.server_learning_rate={f.server_learning_rate},"
        f" client.arch_learning_rate={c.arch_learning_rate})")


def run_rounds(job: Job, work: Workdir, progress: Progress, rounds_done: int,
               report: Callable, start_time: float,
               stop_after_round: int | None = None,
               on_round: Callable[[dict], None] | None = None) -> bool:
  """Runs the remaining rounds; False if stopped early (`stop_after_round`).
  `on_round` receives each finished round's metrics line once it is on
  disk."""
  f = job.config.federated
  total = f.search_rounds + f.train_rounds
  build_inputs = RoundInputsBuilder(job)
  phases = {"search": progress.phase} if progress.genotype is None else {}
  hpo_key = jax.random.key(job.config.seed + 2)
  base_key = job.randomness.noise_key()
  prefetched = None
  for round_ in range(rounds_done, total):
    if round_ == f.search_rounds and progress.genotype is None:
      finish_search(job, work, progress, report)
      prefetched = None
    elif progress.genotype is None and job.plan.arch_warmup_rounds:
      warm = round_ < job.plan.arch_warmup_rounds
      if warm and "warmup" not in phases:
        phases["warmup"] = build_phase(job, searching=False)
      progress.phase = phases["warmup" if warm else "search"]
    phase = progress.phase
    searching = job.hpo is not None and phase.searching
    aggregate, ids = True, None
    if searching:
      progress.hpo_state, ids, aggregate = job.hpo.strategy.choose(
          progress.hpo_state, jax.random.fold_in(hpo_key, round_),
          build_inputs.client_slots(round_, phase))
      inputs = build_inputs(round_, phase, ids, True)
      if job.config.hpo.exploration_step == "incumbent":
        inputs = inputs._replace(update_scale=incumbent_scales(
            job, progress, ids))
      aggregated_weights = inputs.client_weights * np.asarray(aggregate)
      aggregate = bool(np.sum(aggregated_weights) > 0)
    elif prefetched is not None and prefetched[0] == round_:
      inputs = prefetched[1]
    else:
      inputs = build_inputs(round_, phase, build_inputs.fixed_ids(
          round_, phase, progress.hpo_state), False)
    # A strategy may leave some clients out of the mean (FEATHERS's
    # per-client exploration); all of them are measured.
    progress.server, gains = phase.algorithm.apply(
        progress.server, job.federation.x, job.federation.y,
        inputs._replace(client_weights=aggregated_weights) if searching
        else inputs, base_key, round_, aggregate)
    next_round = round_ + 1
    if (not searching and next_round < total
        and next_round not in (f.search_rounds, job.plan.arch_warmup_rounds)):
      prefetched = (next_round, build_inputs(next_round, phase,
                                             build_inputs.fixed_ids(
                                                 next_round, phase,
                                                 progress.hpo_state), False))
    if searching:
      # The gains come back sharded over the client mesh; the controller
      # is small host-side work on the default device.
      gains = np.asarray(gains)
      progress.hpo_state = job.hpo.strategy.update(
          progress.hpo_state, np.asarray(ids), gains, inputs.client_weights,
          aggregate, np.asarray(inputs.client_ids))
    record = round_record(job, progress, round_, start_time, inputs,
                          gains if searching else None, aggregate,
                          ids if searching else None)
    if searching:
      record["hp_aggregated_share"] = float(
          np.sum(aggregated_weights) / np.sum(inputs.client_weights))
    _check_finite(job, progress.server, round_, record["monitor_loss"])
    progress.metrics.append(record)
    report(f"round {round_ + 1:3d}/{total} [{phase.name}] loss"
           f" {record['monitor_loss']:.4f} acc {record['monitor_accuracy']:.4f}"
           f" ε {record['epsilon']:.3f}")
    # Metrics first: a run stopped between the two re-runs the round, and
    # its metrics line is cut back with it.
    work.write_metrics(progress.metrics)
    work.save_state(round_ + 1, checkpoint_tree(progress),
                    force=round_ + 1 in (f.search_rounds, total))
    if on_round is not None:
      on_round(record)
    if stop_after_round is not None and round_ + 1 >= stop_after_round:
      return False
  if progress.genotype is None:  # No training rounds: deploy the supernet's.
    finish_search(job, work, progress, report)
  return True
