"""The main job: a federated DP architecture search ending in a trained model.

Phase 1 (search rounds): clients train the supernet's weights and the
architecture parameters, both DP, with the strategy `nas.strategy` names
(`fedsearch/nas/`). At its end the derived genotype is deployed with the
weights it already has (`deployed_weights/`). Phase 2 (train rounds,
optional for one-stage): the genotype is fixed and its model, starting from
those weights, is trained by DP FedAvg (retraining for DARTS, a fine-tune
for one-stage). Both phases draw on one privacy budget calibrated before
round one. Test data is read once, at the end, for the report of both the
deployed and the final model.

With a controller warm-up (`nas.controller_warmup_rounds`) the first search
rounds train sampled children only (phase "warmup"). With `nas.genotype`
set there is no search: the named genotype is trained from fresh weights
(DPNAS's retraining stage, a separate budget).
"""

import json
import math
import time
from collections.abc import Callable

import jax
import ml_collections

from fedsearch.privacy import randomness
from fedsearch.privacy.audit import InputCanaries
from fedsearch.runner import loop, pictures, tensorboard
from fedsearch.runner.job import build_job
from fedsearch.runner.summary import summarize
from fedsearch.runner.workdir import Workdir, finite_json, write_atomic


def run(config: ml_collections.ConfigDict, workdir: str,
        report: Callable[[str], None] = print,
        stop_after_round: int | None = None,
        canaries: InputCanaries | None = None,
        on_round: Callable[[dict, int], None] | None = None) -> dict:
  """Runs (or resumes) a search; returns the summary written to the workdir,
  with the per-round history (`"history"`: the metrics lines, as in
  `metrics.jsonl`) added.

  Args:
    config: see experiments/configs/default.py.
    workdir: output folder; a run started there before is resumed from its
      last finished round.
    report: receives one progress line per round.
    stop_after_round: stop (as if interrupted) once this many rounds are
      checkpointed; for testing resumption.
    canaries: a black-box audit's input canaries (`privacy.audit`): the
      included ones are trained on, and the summary reports the one-run
      ε lower bound from the final model's scores of all of them. The same
      canaries must be given when such a run resumes.
    on_round: receives each finished round's metrics line and the run's
      total rounds (a progress bar's hook; the first call may come after
      rounds done before a resume).
  """
  start_time = time.time()
  work = Workdir(workdir)
  if work.summary_file.exists():
    report(f"{work.summary_file} exists: the run is already complete")
    return {**json.loads(work.summary_file.read_text()),
            "history": work.metrics()}
  work.check_config(config.to_json())
  # Nothing is written to the workdir before the whole job is valid.
  job = build_job(config, randomness.for_run(
      config.privacy.randomness, config.seed, work.path), canaries)
  work.start(config.to_json(), job.randomness, config.checkpoint_every,
             job.plan.as_prior(job.sigmas).to_json())
  report(_plan_line(job))
  report("compiling the round (the first takes longest; a minute or more on"
         " a CPU)")
  progress, rounds_done = loop.start(job, work, report)
  events = tensorboard.EventLog(work.path, job.space.op_names,
                                progress.metrics)
  total = job.config.federated.search_rounds + job.config.federated.train_rounds

  def finished_round(record):
    events.add(record)
    if on_round is not None:
      on_round(record, total)

  for record in progress.metrics:  # Rounds done before a resume.
    if on_round is not None:
      on_round(record, total)
  try:
    finished = loop.run_rounds(job, work, progress, rounds_done, report,
                               start_time, stop_after_round, finished_round)
  finally:
    events.close()
  if not finished:
    work.close()
    return {}
  summary = summarize(job, work, progress, start_time)
  work.close()
  write_atomic(work.summary_file, json.dumps(finite_json(summary), indent=1,
                                            allow_nan=False))
  for line in final_block(summary, job.plan.delta, work.path):
    report(line)
  if jax.process_index() == 0:  # One process writes the files.
    drawn = pictures.draw(work.path)
    report(f"pictures: {', '.join(p.name for p in drawn)}; TensorBoard:"
           f" tensorboard --logdir {work.path / tensorboard.FOLDER}")
  return {**summary, "history": list(progress.metrics)}


def final_block(summary: dict, delta: float, workdir) -> list[str]:
  """The run's closing lines: accuracy, ε and what it is made of, where the
  outputs are; the deployed child's accuracy with what it means."""
  parts = ", ".join(f"{name.removesuffix('_only').replace('_', ' ')} {value:.3f}"
                    for name, value in summary["epsilon_breakdown"].items()
                    if name != "total")
  if summary["epsilon"] is None or math.isinf(summary["epsilon"]):
    lines = [f"test accuracy {summary['test_accuracy']:.4f} WITHOUT privacy"
             " (privacy.epsilon=inf: no noise, a ceiling); wall time"
             f" {summary['wall_time_s']:.0f} s; workdir {workdir}"]
  else:
    lines = [f"test accuracy {summary['test_accuracy']:.4f} at"
             f" ε={summary['epsilon']:.3f} (δ={delta}); wall time"
             f" {summary['wall_time_s']:.0f} s; workdir {workdir}",
             f"ε of each kind of release alone: {parts} (composed in one"
             " accountant: the total above)"]
  if "deployed_test_accuracy" in summary:
    why = ("weights trained inside the supernet's mixture, often near chance"
           " alone: the training rounds retrain it"
           if summary["nas_strategy"] == "darts" else
           "sampled children were trained directly: deployable as is")
    lines.append(
        f"deployed child (found architecture, the search's weights,"
        f" ε={_finite_or_inf(summary['deployed_epsilon']):.3f}): test"
        " accuracy"
        f" {summary['deployed_test_accuracy']:.4f} ({why})")
  lines.append(f"outputs: {workdir}/summary.json, final_weights/,"
               " metrics.jsonl; fedsearch.load(workdir).predict(images)")
  return lines


def _finite_or_inf(value) -> float:
  """ε as a number: a summary read back holds null for a run without
  privacy."""
  return math.inf if value is None else value


def _plan_line(job) -> str:
  f, plan, sigmas = job.config.federated, job.plan, job.sigmas
  loss_sigma = (f", loss probes σ_l={sigmas.loss:.4f}"
                if plan.probe_every else "")
  rate = job.client_config.learning_rate
  capped = (f"; client learning rate {rate:.3g} (capped from"
            f" {job.config.client.learning_rate:g} by client.max_round_noise)"
            if rate < job.config.client.learning_rate else "")
  tuned = (f" of the tuning's selected run (one of K runs, K of mean"
           f" {plan.tuning.mean_runs:g}, shape {plan.tuning.shape:g})"
           if plan.tuning else "")
  budget = (f"noise multiplier σ={sigmas.gradient:.4f}{loss_sigma} for"
            f" (ε, δ)=({plan.epsilon}, {plan.delta}){tuned}" if plan.private
            else
            "NO PRIVACY (privacy.epsilon=inf): no noise, nothing accounted")
  return (f"{budget} over"
          f" {f.search_rounds + f.train_rounds} rounds; clients"
          f" {f.clients_per_round}/{f.num_clients} per round,"
          f" {job.devices} device(s){capped}")
