r"""Empirical privacy audit of finished runs: a one-run lower bound on ε.

For each finished main-job workdir it rebuilds the run's privacy plan and
mechanism from its config.json, audits the run's weight releases (steps,
Poisson rate, σ, clip norm and trust model of that run) with Dirac
canaries (`fedsearch/privacy/audit.py`, Steinke, Nasr & Jagielski 2023),
writes the bound beside the claimed ε into the run's summary.json (key
"audit") and the row into `experiments/results/audit.{md,json}`.

  python -m experiments.search --workdir=workdir/audit/default
  python -m experiments.audit --workdirs=workdir/audit/default

The bound is for the weight releases alone; the claimed ε of those releases
(the accountant on them alone) and the run's total ε are both reported. A
bound above the claimed ε of the audited releases means a broken mechanism.
"""

import json
import pathlib
import sys
import time

import jax
import ml_collections
from absl import app, flags

from experiments import records
from fedsearch.errors import USER_ERRORS, ConfigError
from fedsearch.privacy import audit
from fedsearch.runner import job as job_lib
from fedsearch.runner import summary as summary_lib
from fedsearch.runner.workdir import write_atomic
from fedsearch.search_space import cost

_WORKDIRS = flags.DEFINE_list("workdirs", [], "finished runs to audit")
_CANARIES = flags.DEFINE_integer("canaries", 1000, "Dirac canaries (>= 1000)")
_SIGNIFICANCE = flags.DEFINE_float("significance", 0.05,
                                   "1 − confidence of the bound")
_SEED = flags.DEFINE_integer("seed", 0, "the audit's own draws")

NAME = "audit"
METHOD = "white-box one-run audit, Dirac canaries"


def run_schedule(config, mechanism) -> audit.AuditSchedule:
  """The most exposed client's weight releases in the run `config` plans."""
  plan = job_lib.privacy_plan(config)
  sigmas = plan.noise_multipliers(config.privacy.noise_multiplier)
  counts = plan.counts(len(plan.schedule))
  return audit.AuditSchedule(
      steps=counts["weight_steps_search"] + counts["weight_steps_train"],
      sampling_rate=plan.sampling_rate, noise_multiplier=sigmas.gradient,
      clip_norm=config.privacy.clip_norm,
      clients=config.federated.clients_per_round)


def audit_run(workdir: pathlib.Path) -> dict:
  summary_file = workdir / "summary.json"
  if not summary_file.exists():
    raise ConfigError(f"--workdirs: {workdir} holds no finished run"
                      " (summary.json); finish or name another run")
  config = ml_collections.ConfigDict(
      json.loads((workdir / "config.json").read_text()))
  summary = json.loads(summary_file.read_text())
  mechanism = job_lib.build_mechanism(config)
  schedule = run_schedule(config, mechanism)
  if abs(schedule.noise_multiplier - summary["noise_multiplier"]) > 1e-3 * (
      summary["noise_multiplier"]):
    raise ConfigError(f"{workdir}: the plan's σ {schedule.noise_multiplier}"
                      f" is not the run's {summary['noise_multiplier']}")
  start = time.time()
  result = audit.white_box(
      mechanism, schedule, num_canaries=_CANARIES.value,
      significance=_SIGNIFICANCE.value, delta=config.privacy.delta,
      accountant=config.privacy.accountant,
      key=jax.random.key(_SEED.value))
  found = {**result._asdict(), **schedule._asdict(),
           "epsilon_total_of_run": summary["epsilon"]}
  summary["audit"] = found
  write_atomic(summary_file, json.dumps(summary, indent=1, allow_nan=False))
  return {
      "dataset": summary["dataset"],
      "setting": "centralised" if summary["clients"] == 1 else "federated",
      "method": f"{METHOD}, {result.trust} trust",
      "model": records.model_name(summary),
      "epsilon_total": summary["epsilon"],
      "delta": summary["delta"], "test_accuracy": summary["test_accuracy"],
      "epsilon_lower_bound": result.epsilon_lower_bound,
      "epsilon_claimed_audited": result.epsilon_claimed,
      "canaries": result.canaries, "included": result.included,
      "significance": result.significance, "trust": result.trust,
      "observation": result.observation, "steps": schedule.steps,
      "sampling_rate": schedule.sampling_rate,
      "noise_multiplier": schedule.noise_multiplier,
      "clients": schedule.clients, "workdir": str(workdir),
      "run_commit": summary.get("commit", "unrecorded"),
      "wall_time_s": time.time() - start, "hardware": cost.hardware_name(),
      "commit": summary_lib.CODE_COMMIT, "command": records.command(),
  }


def render(rows: list[dict]) -> str:
  lines = [
      "# Empirical privacy audit: one-run lower bounds on ε",
      "",
      "Written by `experiments/audit.py` from `audit.json`. White box: Dirac"
      " canaries in gradient space, each included with probability ½, in"
      " the audited run's weight releases (its steps, Poisson rate, σ, clip"
      " norm), made by the run's own mechanism and scored from what its"
      " trust model exposes (`local`: each client's release; `aggregate`:"
      " only the round's sum). The bound (Steinke, Nasr & Jagielski 2023,"
      " `jax_privacy.auditing`) holds with the stated confidence; it must"
      " not exceed the claimed ε of the audited releases. One-run audits"
      " are loose by design: a bound well below the claim is expected of a"
      " sound mechanism, a bound above it would prove a bug.",
      "",
      "| dataset | setting | model | trust (observed) | canaries (in) |"
      " steps × q, σ | ε lower bound (95 %) | claimed ε, audited releases |"
      " claimed ε, whole run | run's test accuracy | commit | command |",
      "|---|---|---|---|---|---|---|---|---|---|---|---|",
  ]
  for r in rows:
    lines.append(
        f"| {r['dataset']} | {r['setting']} | {r['model']} |"
        f" {r['trust']} ({r['observation']}) | {r['canaries']}"
        f" ({r['included']}) | {r['steps']} × {r['sampling_rate']:.4f},"
        f" {r['noise_multiplier']:.3f} | **{r['epsilon_lower_bound']:.3f}** |"
        f" {r['epsilon_claimed_audited']:.3f} | {r['epsilon_total']:.3f} |"
        f" {100 * r['test_accuracy']:.2f} % | {r['commit']} |"
        f" `{r['command']}` |")
  return "\n".join(lines) + "\n"


def main(argv):
  del argv
  try:
    if _CANARIES.value < 1000:
      raise ConfigError(f"--canaries must be >= 1000, got {_CANARIES.value}")
    if not 0 < _SIGNIFICANCE.value < 1:
      raise ConfigError("--significance must be in (0, 1), got"
                        f" {_SIGNIFICANCE.value}")
    if not _WORKDIRS.value:
      raise ConfigError("--workdirs must name at least one finished run")
    rows = [audit_run(pathlib.Path(w)) for w in _WORKDIRS.value]
    records.write(NAME, rows, render)
    print(render(rows), flush=True)
  except USER_ERRORS as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  app.run(main)
