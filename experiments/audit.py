r"""Empirical privacy audit: a one-run lower bound on ε (95 % confidence).

--mode=white_box: for each finished main-job workdir (--workdirs) it
rebuilds the run's privacy plan and mechanism from its config.json, audits
the run's weight releases (steps, Poisson rate, σ, clip norm and trust
model of that run) with Dirac canaries (`fedsearch/privacy/audit.py`,
Steinke, Nasr & Jagielski 2023) and writes the bound beside the claimed ε
into the run's summary.json (key "audit").
--mode=black_box: runs the main job of --config in --workdir with input
canaries in the clients' training data and scores them from the final
model (the summary's "black_box_audit").
Both write their rows into `experiments/results/audit.{md,json}`.

  python -m experiments.search --workdir=workdir/audit/default
  python -m experiments.audit --workdirs=workdir/audit/default
  python -m experiments.audit --mode=black_box --workdir=workdir/audit/bb

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

from experiments import cli, records
from experiments.configs import default
from fedsearch import data as data_lib
from fedsearch.errors import USER_ERRORS, ConfigError
from fedsearch.privacy import audit
from fedsearch.runner import job as job_lib
from fedsearch.runner import summary as summary_lib
from fedsearch.runner.workdir import write_atomic
from fedsearch.search_space import cost

_MODE = flags.DEFINE_enum("mode", "white_box", ["white_box", "black_box"],
                          "white_box: audit finished runs; black_box: run"
                          " the main job with input canaries")
_WORKDIRS = flags.DEFINE_list("workdirs", [],
                              "white_box: finished runs to audit")
_CONFIG = cli.define_config_file(cli.DEFAULT_CONFIG,
                                 "black_box: the main job to run")
_WORKDIR = flags.DEFINE_string("workdir", "workdir/audit/black_box",
                               "black_box: the run's folder (resumable)")
_CANARIES = flags.DEFINE_integer("canaries", 1000, "Dirac canaries (>= 1000)")
_SIGNIFICANCE = flags.DEFINE_float("significance", 0.05,
                                   "1 − confidence of the bound")
_SEED = flags.DEFINE_integer("seed", 0, "the audit's own draws")

NAME = "audit"
METHOD = {"white_box": "white-box one-run audit, Dirac canaries",
          "black_box": "black-box one-run audit, input canaries"}


def run_schedule(config) -> audit.AuditSchedule:
  """The most exposed client's weight releases in the run `config` plans
  (client-level DP: the rounds' updates, at the client sampling rate)."""
  plan = job_lib.privacy_plan(config)
  sigmas = plan.noise_multipliers(config.privacy.noise_multiplier)
  steps = plan.weight_releases(len(plan.schedule))
  if plan.unit == "client":
    return audit.AuditSchedule(
        steps=steps, sampling_rate=plan.client_sampling_rate,
        noise_multiplier=sigmas.gradient, clip_norm=config.privacy.clip_norm)
  return audit.AuditSchedule(
      steps=steps,
      sampling_rate=plan.sampling_rate, noise_multiplier=sigmas.gradient,
      clip_norm=config.privacy.clip_norm,
      clients=config.federated.clients_per_round)


def run_config(recorded: dict) -> ml_collections.ConfigDict:
  """A run's recorded config over today's defaults: fields added since the
  run keep the default, which is what the code of its day did."""
  def merge(into, values):
    for key, value in values.items():
      if isinstance(value, dict) and key in into and isinstance(
          into[key], ml_collections.ConfigDict):
        merge(into[key], value)
      else:
        into[key] = value
  config = default.get_config()
  with config.unlocked():
    merge(config, recorded)
  return config


def audit_run(workdir: pathlib.Path) -> dict:
  summary_file = workdir / "summary.json"
  if not summary_file.exists():
    raise ConfigError(f"--workdirs: {workdir} holds no finished run"
                      " (summary.json); finish or name another run")
  config = run_config(json.loads((workdir / "config.json").read_text()))
  summary = json.loads(summary_file.read_text())
  mechanism = job_lib.build_mechanism(config)
  schedule = run_schedule(config)
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
  return _row(summary, workdir, "white_box", {
      "empirical_epsilon_lower_bound": result.epsilon_lower_bound,
      "epsilon_claimed_audited": result.epsilon_claimed,
      "canaries": result.canaries, "included": result.included,
      "confidence": 1 - result.significance,
      "observation": result.observation, "steps": schedule.steps,
      "sampling_rate": schedule.sampling_rate,
      "noise_multiplier": schedule.noise_multiplier,
      "clients": schedule.clients, "wall_time_s": time.time() - start})


def black_box_run(config, workdir: pathlib.Path) -> dict:
  """The main job with input canaries; its summary holds their bound."""
  ds = data_lib.load_dataset(config.dataset, config.data_dir,
                             config.cache_dir or None)
  shape = data_lib.normalize(ds.name, ds.train_x[:1], ds.pixel_max).shape[1:]
  canaries = audit.InputCanaries.draw(_SEED.value, _CANARIES.value, shape,
                                      ds.num_classes,
                                      config.federated.num_clients)
  summary = cli.run_labelled(config, workdir, "audit run", canaries=canaries)
  found = summary["black_box_audit"]
  return _row(summary, workdir, "black_box", {
      "empirical_epsilon_lower_bound": found["empirical_epsilon_lower_bound"],
      "epsilon_claimed_audited": summary["epsilon"],
      "canaries": found["canaries"], "included": found["included"],
      "confidence": found["confidence"], "observation": "final model",
      "steps": None, "sampling_rate": config.federated.sampling_rate,
      "noise_multiplier": summary["noise_multiplier"],
      "clients": config.federated.clients_per_round,
      "wall_time_s": summary["wall_time_s"]})


def _row(summary: dict, workdir: pathlib.Path, mode: str, found: dict) -> dict:
  return {
      "dataset": summary["dataset"],
      "setting": "centralised" if summary["clients"] == 1 else "federated",
      "method": f"{METHOD[mode]}, {summary['trust']} trust",
      "model": records.model_name(summary),
      "epsilon_total": summary["epsilon"], "delta": summary["delta"],
      "test_accuracy": summary["test_accuracy"], "mode": mode,
      "trust": summary["trust"], **found, "workdir": str(workdir),
      "run_commit": summary.get("commit", "unrecorded"),
      "hardware": cost.hardware_name(), "commit": summary_lib.CODE_COMMIT,
      "command": records.command(),
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
      "Black box: input canaries (random pixels, random labels) in the"
      " clients' training data of a real run, scored by the final model's"
      " log-probability of their label; the claim is the run's whole ε.",
      "",
      "| dataset | setting | model | mode | trust (observed) | canaries (in) |"
      " steps × q, σ | ε lower bound (95 %) | claimed ε, audited releases |"
      " claimed ε, whole run | run's test accuracy | commit | command |",
      "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
  ]
  for r in rows:
    steps = f"{r['steps']} × " if r["steps"] else ""
    lines.append(
        f"| {r['dataset']} | {r['setting']} | {r['model']} | {r['mode']} |"
        f" {r['trust']} ({r['observation']}) | {r['canaries']}"
        f" ({r['included']}) | {steps}{r['sampling_rate']:.4f},"
        f" {r['noise_multiplier']:.3f} |"
        f" **{r['empirical_epsilon_lower_bound']:.3f}** |"
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
    if _MODE.value == "black_box":
      rows = [black_box_run(_CONFIG.value, pathlib.Path(_WORKDIR.value))]
    elif not _WORKDIRS.value:
      raise ConfigError("--workdirs must name at least one finished run")
    else:
      rows = [audit_run(pathlib.Path(w)) for w in _WORKDIRS.value]
    records.write(NAME, rows, render)
    print(render(rows), flush=True)
  except USER_ERRORS as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
