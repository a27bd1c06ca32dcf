r"""HyFreeDP against DP-SGD's published learning rate and a charged lr grid.

`--setting=centralised` (the default): DPNAS's retraining recipe on Tramer &
Boneh's CNN (Poisson batch 2048, momentum 0.9, 40 epochs; 30 on CIFAR-10).
`--setting=federated`: the same network and recipe in the example-level
federation of `experiments/configs/federated.py:DATASET,aggregate` (100
Dirichlet clients, 10 a round, one local step, the noise added once to the
round's sum); HyFreeDP's probes then follow the update the server released
last round, from the round-start weights (`fedsearch/optimizers/hyfree.py`).
Every row at the same total (ε, δ) = (3, 1e-5), each a whole run of the
main job in a resumable workdir, rows written to
`experiments/results/hyfree.json` and `.md`:

- DP-SGD at the published learning rate (2, clip 0.1): centralised, the
  baseline stage itself (its workdirs are `baseline_table`'s, so a finished
  baseline is not trained again); federated, the preset as it is;
- HyFreeDP: automatic per-example clipping and the learning rate fitted from
  privatised loss probes, inside the same ε, twice: with the paper's η rule
  (R = 1, η0 1e-4, η refitted on every probe, ×10 at most) and with
  fedsearch's defaults (`hyfree.*`: R the recipe's clip 0.1, η0 its rate 2,
  η moved only by significant probes, ×2 at most;
  `fedsearch/privacy/auto_lr.py` says why);
- DP-SGD with the learning rate chosen by a private random-search tuning
  (Papernot & Steinke; `fedsearch/runner/tuning.py`) over a grid that holds
  the published rate: K runs of a random count, the best monitor accuracy
  kept, the selected run spending the whole ε. Its compute is K runs'.

  python -m experiments.hyfree_compare --datasets=mnist --seeds=0
  python -m experiments.hyfree_compare --setting=federated --datasets=mnist

`--methods` runs some of them (their rows replace those on record).
"""

import math
import pathlib
import sys

from absl import app, flags

from experiments import cli, plots, records
from experiments.configs import dpnas, federated
from fedsearch.errors import USER_ERRORS, ConfigError
from fedsearch.runner import job as job_lib
from fedsearch.runner import tuning

_SETTING = flags.DEFINE_enum("setting", "centralised",
                             ["centralised", "federated"],
                             "centralised: DPNAS's recipe on one client;"
                             " federated: federated.py's example-level"
                             " aggregate preset")
_DATASETS = flags.DEFINE_list("datasets", ["mnist"],
                              f"centralised: any of {list(dpnas.DATASETS)};"
                              f" federated: any of {list(federated.DATASETS)}")
_SEEDS = flags.DEFINE_list("seeds", ["0"], "one run (or tuning) per seed")
_GRID = flags.DEFINE_list("grid", ["0.5", "1", "2", "4", "8"],
                          "the tuning's DP-SGD learning rates")
_TUNING_MEAN = flags.DEFINE_float("tuning_mean_runs", 3.0,
                                  "mean number of the tuning's runs")
_TUNING_SHAPE = flags.DEFINE_float(
    "tuning_shape", 0.0, "the tuning's K distribution (0 logarithmic: never"
    " K = 0; 1 geometric; inf Poisson)")
_METHODS = flags.DEFINE_list(
    "methods", ["published", "hyfree_paper", "hyfree", "tuned"],
    "which rows to run: any of published, hyfree_paper, hyfree, tuned")
_DATA_DIR = flags.DEFINE_string("data_dir", "../shared/data", "data folder")
_WORKDIR = flags.DEFINE_string("workdir", "workdir/hyfree", "run folders")
_BASELINE_WORKDIR = flags.DEFINE_string(
    "baseline_workdir", "workdir/baseline",
    "baseline_table's run folders (the published-lr row reuses them)")

NAME = "hyfree"
PUBLISHED = "DP-SGD, published lr (DPNAS recipe)"
HYFREE_PAPER = "HyFreeDP, the paper's η rule (R 1, η0 1e-4, a move on every fit)"
HYFREE = "HyFreeDP (automatic clipping and learning rate)"
TUNED = "DP-SGD, lr by private random search (Papernot & Steinke)"
METHODS = {"published": PUBLISHED, "hyfree_paper": HYFREE_PAPER,
           "hyfree": HYFREE, "tuned": TUNED}


def datasets() -> tuple[str, ...]:
  return (dpnas.DATASETS if _SETTING.value == "centralised"
          else federated.DATASETS)


def base_config(dataset: str, seed: int):
  config = (dpnas.get_config(f"{dataset},centralised,baseline")
            if _SETTING.value == "centralised"
            else federated.get_config(f"{dataset},aggregate"))
  config.data_dir = _DATA_DIR.value
  config.seed = seed
  return config


def hyfree_config(dataset: str, seed: int):
  config = base_config(dataset, seed)
  config.client.optimizer = "hyfree"
  return config


def hyfree_paper_config(dataset: str, seed: int):
  """HyFreeDP as Liu, Bu et al. set it: R = 1, η0 1e-4, η refitted on every
  probe alone (no significance test, no pooled evidence), at most ×10 a
  fit, R_l following the loss both ways."""
  config = hyfree_config(dataset, seed)
  h = config.hyfree
  h.initial_learning_rate, h.max_change, h.significance = 1e-4, 10.0, 0.0
  h.evidence_decay, h.loss_clip_shrinks = 0.0, True
  config.privacy.clip_norm = 1.0
  return config


def tuned_config(dataset: str, seed: int):
  config = base_config(dataset, seed)
  p = config.privacy
  p.accountant = "rdp"  # The tuning's bound is a Rényi-DP one.
  p.tuning_mean_runs, p.tuning_shape = _TUNING_MEAN.value, _TUNING_SHAPE.value
  return config


def run_dir(dataset: str, name: str, seed: int) -> str:
  """A run's (or a tuning's) folder; federated ones apart from the
  centralised ones of the same dataset."""
  setting = "" if _SETTING.value == "centralised" else "federated_"
  return f"{_WORKDIR.value}/{dataset}_{setting}{name}_s{seed}"


def grid() -> dict[str, list[str]]:
  return {"client.learning_rate": list(_GRID.value)}


def _one(config, workdir, label) -> dict:
  summary = cli.run_labelled(config, workdir, label)
  if config.client.optimizer == "hyfree":
    summary["learning_rate_per_epoch"] = records.per_round(workdir,
                                                           "learning_rate")
    # Automatic clipping bounds each example by R: η·R is the step.
    summary["clip_norm"] = config.privacy.clip_norm
  # A reused baseline finished before summaries recorded the rate (and
  # before the round-noise cap existed) ran the config's.
  summary.setdefault("client_learning_rate", config.client.learning_rate)
  return {**summary, "monitor_curve": records.monitor_curve(workdir),
          "steps": summary["rounds"] * config.federated.local_steps}


def _tuned(dataset: str, seed: int) -> dict:
  config = tuned_config(dataset, seed)
  result = tuning.tune(
      config, grid(), run_dir(dataset, "tuned", seed),
      lambda run_config, workdir: cli.run_labelled(
          run_config, workdir, f"{dataset}, tuning seed {seed}, {workdir.name}"))
  if result.selected is None:
    raise ConfigError(
        f"the tuning of {dataset} (seed {seed}) drew K = 0 runs (Poisson):"
        " it trained and released nothing (a Poisson tuning may); use"
        " --tuning_shape=0, which always draws a run")
  kept = result.summary
  runs = len(result.choices)
  return {**kept,
          "wall_time_s": result.wall_time_s,
          "monitor_curve": records.monitor_curve(
              f"{run_dir(dataset, 'tuned', seed)}/run_{result.selected}"),
          "steps": runs * kept["rounds"] * config.federated.local_steps,
          "tuning_runs": runs,
          "tuning_choices": [c["client.learning_rate"]
                             for c in result.choices],
          "tuning_monitor_accuracies": list(result.monitor_accuracies)}


def _row(dataset: str, method: str, seeds: list[int],
         summaries: list[dict]) -> dict:
  row = {"dataset": dataset, "setting": _SETTING.value, "method": method,
         **records.seeds_row(summaries, seeds,
                             [s["monitor_curve"] for s in summaries]),
         "gradient_steps": [s["steps"] for s in summaries],
         "client_learning_rate": [s["client_learning_rate"]
                                  for s in summaries]}
  if method in (HYFREE, HYFREE_PAPER):
    row["final_learning_rate"] = [s["final_learning_rate"]
                                  for s in summaries]
    row["learning_rate_per_epoch"] = [s["learning_rate_per_epoch"]
                                      for s in summaries]
    row["clip_norm"] = summaries[0]["clip_norm"]
  if method == TUNED:
    row.update(
        tuning={"mean_runs": _TUNING_MEAN.value,
                "shape": _TUNING_SHAPE.value, "grid": list(_GRID.value)},
        **{k: [s[k] for s in summaries] for k in (
            "tuning_runs", "tuning_choices", "tuning_monitor_accuracies")})
  return row


def method_runs(dataset: str, seed: int):
  """Each method's run of one seed, as a thunk, in the order they run: the
  cheap reused baseline first, the K-run tuning last."""
  return {
      PUBLISHED: lambda: _one(
          base_config(dataset, seed),
          (f"{_BASELINE_WORKDIR.value}/{dataset}_centralised_s{seed}"
           if _SETTING.value == "centralised"
           else run_dir(dataset, "published", seed)),
          f"{dataset}, published lr, seed {seed}"),
      HYFREE_PAPER: lambda: _one(
          hyfree_paper_config(dataset, seed),
          run_dir(dataset, "hyfree_paper", seed),
          f"{dataset}, HyFreeDP (paper's η rule), seed {seed}"),
      HYFREE: lambda: _one(hyfree_config(dataset, seed),
                           run_dir(dataset, "hyfree", seed),
                           f"{dataset}, HyFreeDP, seed {seed}"),
      TUNED: lambda: _tuned(dataset, seed),
  }


def run_rows(dataset: str, seeds: list[int]):
  """Yields each method's row once all its seeds have finished, so that a
  long comparison records the rows it has (a tuning takes K runs)."""
  for method in (METHODS[name] for name in _METHODS.value):
    summaries = [method_runs(dataset, seed)[method]() for seed in seeds]
    yield _row(dataset, method, seeds, summaries)


def plot_stem(dataset: str, setting: str) -> str:
  return f"{NAME}_{dataset}" + ("" if setting == "centralised"
                                else f"_{setting}")


def step_bound(row: dict) -> float:
  """R of a HyFreeDP row: as recorded, or for a row from before rows
  recorded it, its method's config's."""
  if "clip_norm" in row:
    return row["clip_norm"]
  config_of = {HYFREE: hyfree_config, HYFREE_PAPER: hyfree_paper_config}
  return config_of[row["method"]](row["dataset"], 0).privacy.clip_norm


def _log_steps(rates_per_run: list[list[float]], bound: float):
  return [[math.log10(rate * bound) for rate in run] for run in rates_per_run]


def plot(dataset: str, rows: list[dict]) -> list[pathlib.Path]:
  """Monitor accuracy per epoch (round) of every current row of `dataset`
  in this setting, and HyFreeDP's per-example step η·R (log10)."""
  setting = _SETTING.value
  mine = [r for r in rows if r["dataset"] == dataset
          and r["setting"] == setting
          and not r.get("superseded") and "monitor_accuracy_per_epoch" in r]
  label = records.DATASET_LABEL[dataset]
  stem = plot_stem(dataset, setting)
  accuracy = records.RESULTS / f"{stem}_accuracy.svg"
  plots.line_plot({r["method"]: r["monitor_accuracy_per_epoch"] for r in mine},
                  f"{label}, {setting}, total ε = 3: monitor accuracy",
                  "monitor accuracy", accuracy, (0.0, 1.0))
  paths = [accuracy]
  etas = {r["method"]: _log_steps(r["learning_rate_per_epoch"], step_bound(r))
          for r in mine if r.get("learning_rate_per_epoch")}
  if etas:
    eta = records.RESULTS / f"{stem}_eta.svg"
    plots.line_plot(etas, f"{label}: HyFreeDP's step η·R per epoch (DP-SGD's"
                    " published lr·clip: 0.2)", "log10 η·R", eta)
    paths.append(eta)
  return paths


def render(rows: list[dict]) -> str:
  lines = [
      "# HyFreeDP vs DP-SGD at the published learning rate vs a charged lr"
      " grid",
      "",
      "Written by `experiments/hyfree_compare.py` from `hyfree.json` (each"
      " row's command is its own). Centralised: DPNAS's retraining recipe on"
      " Tramer & Boneh's CNN (Poisson batch 2048, momentum 0.9, 40 epochs)."
      " Federated: the same network and recipe over 100 Dirichlet(0.5)"
      " clients, 10 a round, one local step on each one's data, the noise"
      " added once to the round's sum (`federated.py:DATASET,aggregate`;"
      " HyFreeDP probes along the update released last round). Every row"
      " at the same **total** (ε, δ). The tuned row's learning"
      " rate was chosen by a private random search (Papernot & Steinke, ICLR"
      " 2022): K runs (K random), each at a grid point drawn uniformly, the"
      " best final monitor accuracy kept, each run's σ calibrated so that"
      " the kept run spends ε in all (RDP); its wall time and gradient steps"
      " are all K runs'. Test accuracy is read once per run, at its end;"
      " no decision reads it.",
      "",
      "| dataset | setting | method | test accuracy | ε total (δ) |"
      " accountant | σ | learning rate | gradient steps | wall time |"
      " hardware | commit |",
      "|---|---|---|---|---|---|---|---|---|---|---|---|",
  ]
  current = [r for r in rows if not r.get("superseded")]
  for r in current:
    sd = (f" ± {100 * r['test_accuracy_sd']:.2f}"
          if len(r["seeds"]) > 1 else "")
    lr = ", ".join(f"{v:g}" for v in r["client_learning_rate"])
    if "final_learning_rate" in r:
      lr = "η final " + ", ".join(f"{v:.3g}" for v in r["final_learning_rate"])
    if "tuning_choices" in r:
      lr += " (drawn: " + "; ".join(
          ", ".join(map(str, c)) for c in r["tuning_choices"]) + ")"
    lines.append(
        f"| {records.DATASET_LABEL[r['dataset']]} | {r['setting']} |"
        f" {r['method']} | **{100 * r['test_accuracy']:.2f}{sd} %** (seeds"
        f" {', '.join(map(str, r['seeds']))}) |"
        f" {r['epsilon_total']:.3f} ({r['delta']:.0e}) | {r['accountant']} |"
        f" {r['noise_multiplier']:.3f} | {lr} |"
        f" {', '.join(map(str, r['gradient_steps']))} |"
        f" {r['wall_time_s'] / 60:.1f} min | {r['hardware']} |"
        f" {r['commit']} |")
  plotted = sorted({(r["dataset"], r["setting"]) for r in current
                    if "monitor_accuracy_per_epoch" in r})
  if plotted:
    lines += ["", "Plots: " + ", ".join(
        f"`{plot_stem(d, s)}_accuracy.svg` (monitor accuracy per epoch)"
        + (f", `{plot_stem(d, s)}_eta.svg` (HyFreeDP's step η·R per epoch)"
           if any(r.get("learning_rate_per_epoch") for r in current
                  if (r["dataset"], r["setting"]) == (d, s)) else "")
        for d, s in plotted) + "."]
  lines += records.commands_section(
      NAME, rows, lambda r: f"{records.DATASET_LABEL[r['dataset']]},"
      f" {r['setting']}, {r['method']}")
  return "\n".join(lines) + "\n"


def main(argv):
  del argv
  try:
    seeds = [int(s) for s in _SEEDS.value]
    cli.check_listed(("--methods", _METHODS.value, tuple(METHODS)),
                     (f"--datasets (with --setting={_SETTING.value})",
                      _DATASETS.value, datasets()))
    for dataset in _DATASETS.value:  # All checked before any work.
      for seed in seeds:
        job_lib.privacy_plan(base_config(dataset, seed))
        job_lib.privacy_plan(hyfree_config(dataset, seed))
        job_lib.privacy_plan(hyfree_paper_config(dataset, seed))
        tuning.check(tuned_config(dataset, seed), grid())
    for dataset in _DATASETS.value:
      for row in run_rows(dataset, seeds):
        rows = records.write(NAME, [row], render)
        plot(dataset, rows)
      print(render(rows), flush=True)
  except USER_ERRORS as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
