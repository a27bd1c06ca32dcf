"""The run's final report: test accuracy (the only read of the test split), ε, costs."""

import dataclasses
import json
import pathlib
import subprocess
import time

import jax

from fedsearch import data as data_lib
from fedsearch import hyperparameters as hp_lib
from fedsearch import nas as nas_lib
from fedsearch.privacy import audit
from fedsearch.runner.evaluation import accuracy_and_loss
from fedsearch.runner.job import Job
from fedsearch.runner.loop import Progress
from fedsearch.runner.workdir import Workdir, load_weights
from fedsearch.search_space import cost as cost_lib


def _hyperparameters(job: Job, progress: Progress) -> dict:
  if job.hpo is None:
    return {}
  chosen = int(job.hpo.strategy.best(progress.hpo_state))
  return {"hyperparameters": {
      "strategy": job.config.hpo.strategy,
      "pool_size": hp_lib.pool_size(job.hpo.pool),
      "chosen_index": chosen,
      "chosen": {name: float(values[chosen])
                 for name, values in job.hpo.pool.items()},
      "feedback_noise_multiplier": job.sigmas.feedback,
      "feedback_clip": job.config.hpo.feedback_clip}}


def _costs(job: Job, genotype) -> dict:
  out = {"deployed_cost": {
      **cost_lib.measure_network(job.network(genotype),
                                 job.federation.input_shape),
      "hardware": cost_lib.hardware_name()}}
  if job.config.features != "pixels":
    # The fixed transform is part of the deployed model's inference cost.
    out["deployed_cost"]["feature_flops"] = data_lib.transform_flops(
        job.config.features, data_lib.IMAGE_SHAPES[job.config.dataset])
  if job.costs and job.retrained is None:
    n = job.config.nas
    out["cost_table"] = {
        "metric": n.cost_metric, "penalty": n.cost_penalty,
        "budget": n.cost_budget, "hardware": job.costs.table.hardware,
        "deployed": job.costs.table.child_cost(
            nas_lib.genotype_choices(genotype, job.space), n.cost_metric)}
  return out


def _privacy(job: Job, progress: Progress, total_rounds: int) -> dict:
  plan, sigmas = job.plan, job.sigmas
  out = {
      "epsilon": plan.spent(sigmas, total_rounds),
      "epsilon_breakdown": plan.breakdown(sigmas),
      "epsilon_target": plan.epsilon,
      "stage_share": plan.stage_share,
      "delta": plan.delta,
      "delta_truncation": plan.truncation_delta,
      "noise_multiplier": sigmas.gradient,
  }
  if plan.prior:
    # ε and its target are the total of every stage.
    out["earlier_stage_events"] = plan.prior.source
    out["releases_of_earlier_stages"] = {
        s.name: s.count for s in plan.prior.streams}
  if plan.tuning:
    # ε is the tuning's: of whichever of its runs is selected.
    out["tuning"] = dataclasses.asdict(plan.tuning)
  if plan.probe_every:
    out["loss_noise_multiplier"] = sigmas.loss
    out["final_learning_rate"] = job.client_optimizer.metrics(
        progress.server.client_optimizer)["learning_rate"]
  out.update({
      "optimizer": job.client_optimizer.name,
      # After the round-noise cap (`client.max_round_noise`).
      "client_learning_rate": job.client_config.learning_rate,
      "trust": job.mechanism.name,
      "accountant": plan.accountant,
      # secret: noise and Poisson draws unknown to whoever holds the config;
      # seeded: reproducible simulation only.
      "randomness": job.randomness.mode,
      "unit": plan.unit,
  })
  if plan.unit == "client":
    # Sizes stay with their clients and who took part stays secret.
    out.update({"client_sampling_rate": plan.client_sampling_rate,
                "client_slots": int(plan.schedule.shape[1]),
                "clip_norms": {"weights": job.config.privacy.clip_norm,
                               "architecture":
                                   job.config.privacy.arch_clip_norm}})
  else:
    out.update({
        "size_noise_multiplier": plan.size_noise_multiplier,
        "client_sizes_released": [
            round(float(n), 2) for n in job.federation.sizes.released]})
  out.update({
      # A count that dominates every client's (`plan.most_exposed`): with
      # partial participation, not necessarily one client's own.
      "releases_accounted": {
          s.name: s.count for s in plan.own_streams(sigmas, total_rounds)},
  })
  return out


def code_commit() -> str:
  """The git commit of the fedsearch code on disk (`-dirty` if changed), or
  "unknown" outside a git checkout."""
  root = pathlib.Path(__file__).resolve().parents[2]
  git = lambda *args: subprocess.run(
      ["git", *args], cwd=root, capture_output=True, text=True).stdout.strip()
  try:
    sha = git("rev-parse", "--short=12", "HEAD")
    dirty = git("status", "--porcelain", "--untracked-files=no", "--",
                "fedsearch", "experiments/configs")
  except OSError:
    return "unknown"
  return (sha + ("-dirty" if dirty else "")) if sha else "unknown"


# A black-box audit's bound holds with confidence 1 − this.
AUDIT_SIGNIFICANCE = 0.05

# Read when the code is imported: the tree may change while a long run goes.
CODE_COMMIT = code_commit()


def summarize(job: Job, work: Workdir, progress: Progress,
              start_time: float) -> dict:
  """Tests the final (and the deployed) model once and writes summary.json."""
  config, f = job.config, job.config.federated
  total_rounds = f.search_rounds + f.train_rounds
  weights = progress.server.params.weights
  predict_with = lambda w: lambda x: progress.phase.predict(w, {}, x)
  test_on = lambda w: accuracy_and_loss(
      predict_with(w), job.federation.test_x, job.federation.test_y)
  test_acc, test_loss = test_on(weights)
  black_box = {}
  if job.canaries is not None:
    scores = audit.input_canary_scores(predict_with(weights), job.canaries)
    black_box = {"black_box_audit": {
        "empirical_epsilon_lower_bound": audit.one_run_epsilon(
            scores, job.canaries.included, AUDIT_SIGNIFICANCE,
            job.plan.delta),
        "confidence": 1 - AUDIT_SIGNIFICANCE,
        "canaries": len(job.canaries.y),
        "included": int(job.canaries.included.sum())}}
  work.save_weights("final", weights)
  if job.retrained is None:
    searched = {
        "nas_strategy": config.nas.strategy,
        # The derived model with the weights the search left it, before any
        # training round, and the ε spent up to then.
        "deployed_test_accuracy": test_on(load_weights(
            work.path, weights, "deployed"))[0],
        "deployed_epsilon": job.plan.spent(job.sigmas, f.search_rounds)}
  elif config.model:
    searched = {"model": config.model}
  else:
    searched = {"retrained_from": config.nas.genotype}
  summary = {
      "dataset": config.dataset,
      "partition": f"{f.partition}" + (f"(alpha={f.dirichlet_alpha})"
                                       if f.partition == "dirichlet" else ""),
      "clients": f.num_clients,
      "clients_per_round": f.clients_per_round,
      "genotype": json.loads(progress.genotype.to_json()),
      "space": job.space.to_dict(),
      "features": config.features,
      "input_shape": list(job.federation.input_shape),
      **searched,
      **_costs(job, progress.genotype),
      "model_parameters": int(sum(x.size for x in jax.tree.leaves(weights))),
      "test_accuracy": test_acc,
      "test_loss": test_loss,
      **_privacy(job, progress, total_rounds),
      "rounds": total_rounds,
      **black_box,
      "devices": job.devices,
      "client_chunk": config.federated.client_chunk,
      **_hyperparameters(job, progress),
      "wall_time_s": time.time() - start_time,
      "commit": CODE_COMMIT,
  }
  return summary
