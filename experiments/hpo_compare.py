r"""Joint architecture + hyperparameter search vs a published fixed recipe.

Every row is a whole run of the main job (one per seed) with the preset
`experiments/configs/hpo.py:DATASET,ROW` (its docstring gives the
schedule, the recipe and the grid, all frozen before any evaluation run), at
the same total (ε, δ) and the same rounds of the same local steps; the
searching rows' feedback is privatised and composed in the same accountant.
Rows go to `experiments/results/hpo.json` and `.md`, beside plots of the
monitor accuracy and of each strategy's probabilities over the pool per
round.

  python -m experiments.hpo_compare --datasets=digits --seeds=0,1

`--strategies` runs some rows (they replace those on record). `--extend`
adds the seeds' runs to the rows on record instead, when the preset is
unchanged (the same σ, schedule, recipe and grid; checked before any run):

  python -m experiments.hpo_compare --datasets=fashion_mnist \
      --strategies=feathers --seeds=1 --extend
"""

import pathlib
import statistics
import sys

from absl import app, flags

from experiments import cli, plots, records
from experiments.configs import hpo
from fedsearch import hyperparameters as hp_lib
from fedsearch.errors import USER_ERRORS
from fedsearch.runner import job as job_lib
from fedsearch.runner import tensorboard
from fedsearch.runner.workdir import Workdir

_DATASETS = flags.DEFINE_list("datasets", ["digits"],
                              f"any of {list(hpo.DATASETS)}")
_STRATEGIES = flags.DEFINE_list("strategies", list(hpo.STRATEGIES),
                                f"rows to run: any of {list(hpo.ROWS)}")
_SEEDS = flags.DEFINE_list("seeds", ["0"], "one run per seed")
_DATA_DIR = flags.DEFINE_string("data_dir", "../shared/data", "data folder")
_WORKDIR = flags.DEFINE_string("workdir", "workdir/hpo", "run folders")
_EXTEND = flags.DEFINE_bool(
    "extend", False, "add the seeds to each row on record (its preset"
    " unchanged) instead of replacing it")

NAME = "hpo"
METHOD = {"none": "fixed recipe (DPNAS retraining, no hyperparameter search)",
          "feathers": "joint search, FEATHERS",
          "fedex": "joint search, FedEx",
          "random": "joint search, random"}
METHOD |= {s + hpo.ROUND_REWARD: f"{METHOD[s]}, round reward"
           for s in hpo.STRATEGIES[1:]}

# Beyond records.PER_SEED and records.SAME: a row's fields per seed, and
# what its seeds must share (the preset's schedule, recipe and grid).
PER_SEED = ("chosen", "epsilon_feedback_only", "hp_probabilities_per_round")
SAME = ("trust", "unit", "reward", "feedback_measure", "partition",
        "search_rounds", "train_rounds", "local_steps", "sampling_rate",
        "recipe", "pool")


def seed_config(dataset: str, row: str, seed: int):
  config = hpo.get_config(f"{dataset},{row}")
  config.data_dir = _DATA_DIR.value
  config.seed = seed
  return config


def _workdir(dataset: str, row: str, seed: int) -> str:
  return f"{_WORKDIR.value}/{dataset}_{row}_s{seed}"


def preset_fields(dataset: str, row: str, seed: int) -> dict:
  """The fields of a row that its preset fixes before any run: what it
  measures, its schedule, recipe, grid and σ."""
  config = seed_config(dataset, row, seed)
  f, c = config.federated, config.client
  searching = config.hpo.strategy != "none"
  measure = config.hpo.feedback_measure
  plan = job_lib.privacy_plan(config)
  return {
      "dataset": dataset, "setting": "federated",
      "method": METHOD[row] + _gain_label(measure),
      "reward": config.hpo.reward if searching else None,
      "feedback_measure": measure if searching else None,
      "partition": f"{f.partition}({f.dirichlet_alpha})",
      "search_rounds": f.search_rounds, "train_rounds": f.train_rounds,
      "local_steps": f.local_steps, "sampling_rate": f.sampling_rate,
      "gradient_steps": (f.search_rounds + f.train_rounds) * f.local_steps,
      "recipe": {"learning_rate": c.learning_rate, "momentum": c.momentum,
                 "clip_norm": config.privacy.clip_norm},
      "pool": (hp_lib.pool_labels(hp_lib.configured_pool(
          config.hpo.to_dict(), config.seed)) if searching else []),
      "noise_multiplier": plan.noise_multipliers(
          config.privacy.noise_multiplier).gradient,
  }


def run_row(dataset: str, row: str, seeds: list[int]) -> dict:
  summaries, workdirs = [], []
  for seed in seeds:
    workdir = _workdir(dataset, row, seed)
    summaries.append(cli.run_labelled(seed_config(dataset, row, seed),
                                      workdir,
                                      f"{dataset}, {row}, seed {seed}"))
    workdirs.append(workdir)
  fields = preset_fields(dataset, row, seeds[0])
  searching = bool(fields["pool"])
  recipe = {k: fields["recipe"][k] for k in ("learning_rate", "momentum")}
  return {
      **fields,
      **records.seeds_row(summaries, seeds,
                          [records.monitor_curve(w) for w in workdirs]),
      "trust": summaries[0]["trust"], "unit": summaries[0]["unit"],
      "chosen": [s["hyperparameters"]["chosen"] if searching else recipe
                 for s in summaries],
      "epsilon_feedback_only": [s["epsilon_breakdown"].get("hp_feedback_only")
                                for s in summaries],
      "hp_probabilities_per_round": [
          [r[tensorboard.HYPERPARAMETERS] for r in
           Workdir(w).metrics() if tensorboard.HYPERPARAMETERS in r]
          for w in workdirs] if searching else [],
  }


def plot(dataset: str, rows: list[dict]) -> list[pathlib.Path]:
  """Monitor accuracy per round of every current row of `dataset`, and per
  searching row the probability of each pool configuration per search
  round (first seed)."""
  mine = [r for r in rows if r["dataset"] == dataset
          and not r.get("superseded") and "monitor_accuracy_per_epoch" in r]
  label = records.DATASET_LABEL[dataset]
  accuracy = records.RESULTS / f"{NAME}_{dataset}_accuracy.svg"
  plots.line_plot({r["method"]: r["monitor_accuracy_per_epoch"] for r in mine},
                  f"{label}, federated, total ε = 3: monitor accuracy",
                  "monitor accuracy", accuracy, (0.0, 1.0))
  paths = [accuracy]
  for r in mine:
    if not r.get("hp_probabilities_per_round"):
      continue
    rounds = r["hp_probabilities_per_round"][0]
    path = records.RESULTS / f"{NAME}_{dataset}_{_row(r)}_probabilities.svg"
    plots.line_plot({name: [[p[j] for p in rounds]]
                     for j, name in enumerate(r["pool"])},
                    f"{label}, {r['method']}: probability of each"
                    " configuration per search round", "probability", path,
                    (0.0, 1.0))
    paths.append(path)
  return paths


def _gain_label(measure: str) -> str:
  """The method label's suffix for a gain that is not the published loss."""
  return "" if measure == "loss" else f", {measure.replace('_', '-')} gain"


def _row(r: dict) -> str:
  """The preset row (and measure, if not the loss) a results row ran."""
  measure = r.get("feedback_measure") or "loss"
  method = r["method"].removesuffix(_gain_label(measure))
  row = next(s for s, m in METHOD.items() if m == method)
  return row if measure == "loss" else f"{row}_{measure}"


def _chosen(r: dict) -> str:
  return "; ".join(", ".join(f"{k} {v:g}" for k, v in c.items())
                   for c in r["chosen"])


# Rounds averaged at the end of the search phase and of the run: one round's
# monitor accuracy under DP noise moves by points, five smooth it.
MONITOR_WINDOW = 5


def paired_with_recipe(search: dict, recipe: dict,
                       window: int = MONITOR_WINDOW) -> dict | None:
  """A search row minus the recipe row of its dataset, seed by seed.

  Seeded rows share their data split, partition and initialisation, so the
  per-seed difference removes what the seed alone decides; its standard
  error is the differences' sd/√n. The monitor windows (the mean of the
  last `window` search rounds, and of the last `window` rounds) separate
  what the search phase cost from what was left of it at the end. None when
  the rows share no seed.
  """
  def runs(row):
    return dict(zip(row["seeds"], zip(row["test_accuracies"],
                                      row["monitor_accuracy_per_epoch"])))

  mine, theirs = runs(search), runs(recipe)
  seeds = [s for s in search["seeds"] if s in theirs]
  if not seeds:
    return None
  end_of_search = slice(max(search["search_rounds"] - window, 0),
                        search["search_rounds"])

  def mean_difference(window_of):
    windows = [(window_of(mine[s][1]), window_of(theirs[s][1]))
               for s in seeds]
    if not all(a and b for a, b in windows):
      return None  # A run logged fewer rounds than the schedule.
    return statistics.fmean(100 * (statistics.fmean(a) - statistics.fmean(b))
                            for a, b in windows)

  test = [100 * (mine[s][0] - theirs[s][0]) for s in seeds]
  return {
      "seeds": seeds,
      "test": test,
      "mean": statistics.fmean(test),
      "standard_error": (statistics.stdev(test) / len(test) ** 0.5
                         if len(test) > 1 else None),
      "monitor_end_of_search": mean_difference(
          lambda monitor: monitor[end_of_search]),
      "monitor_end_of_run": mean_difference(lambda monitor: monitor[-window:]),
  }


def _paired_section(current: list[dict]) -> list[str]:
  lines = []
  with_monitor = [r for r in current if "monitor_accuracy_per_epoch" in r]
  for recipe in (r for r in with_monitor if r["method"] == METHOD["none"]):
    for search in (r for r in with_monitor if r["dataset"] == recipe["dataset"]
                   and r is not recipe):
      paired = paired_with_recipe(search, recipe)
      if paired is None:
        continue
      se = paired["standard_error"]
      search_cost, end_cost = (
          "—" if d is None else f"{d:+.1f}"
          for d in (paired["monitor_end_of_search"],
                    paired["monitor_end_of_run"]))
      lines.append(
          f"| {records.DATASET_LABEL[search['dataset']]} | {search['method']}"
          f" | {', '.join(map(str, paired['seeds']))} |"
          f" {', '.join(f'{d:+.2f}' for d in paired['test'])} |"
          f" **{paired['mean']:+.2f}**"
          + (f" ({se:.2f})" if se is not None else "") +
          f" | {search_cost} | {end_cost} |")
  if not lines:
    return []
  return ["", "Paired with the fixed recipe at the seeds both ran (search −"
          " recipe, points; s.e. = sd/√n of the differences; monitor"
          f" accuracy: the mean of the last {MONITOR_WINDOW} search rounds, and"
          f" of the last {MONITOR_WINDOW} rounds):", "",
          "| dataset | method | seeds | test accuracy, per seed | mean"
          " (s.e.) | monitor, end of search | monitor, end of run |",
          "|---|---|---|---|---|---|---|"] + lines


def render(rows: list[dict]) -> str:
  lines = [
      "# Joint architecture + hyperparameter search vs a published fixed"
      " recipe",
      "",
      "Written by `experiments/hpo_compare.py` from `hpo.json` (each row's"
      " command is its own); presets and their reasons in"
      " `experiments/configs/hpo.py`. The fixed row trains with DPNAS's"
      " published retraining recipe (lr 2, momentum 0.9, clip 0.1, batch"
      " 2,048), which nobody tuned on these data; the searching rows search a"
      " grid that holds it (lr {0.5, 1, 2, 4, 8} × momentum {0.5, 0.9}) from"
      " privatised client feedback while the architecture is searched, then"
      " train the derived child with their choice. Every row: the same"
      " rounds of the same local steps (equal compute), the same **total**"
      " (ε, δ), the feedback's share inside it (its ε alone in the last"
      " columns). Test accuracy is read once per run, at its end."
      + (" Rows marked \"round reward\" run `hpo.reward = round` (one"
         " configuration a round; every client measures its gain on the"
         " released model, not on its own update), a design added after the"
         " first Fashion-MNIST rows (experiments/README.md)."
         if any(r.get("reward") == "round" for r in rows) else ""),
      "",
      "| dataset | method | test accuracy | ε total (δ) | σ | chosen | ε of"
      " the feedback alone | rounds (search + train) × local steps | wall"
      " time | hardware | commit |",
      "|---|---|---|---|---|---|---|---|---|---|---|",
  ]
  current = [r for r in rows if not r.get("superseded")]
  for r in current:
    sd = (f" ± {100 * r['test_accuracy_sd']:.2f}"
          if len(r["seeds"]) > 1 else "")
    feedback = ", ".join("—" if e is None else f"{e:.2f}"
                         for e in r["epsilon_feedback_only"])
    lines.append(
        f"| {records.DATASET_LABEL[r['dataset']]} | {r['method']} |"
        f" **{100 * r['test_accuracy']:.2f}{sd} %** (seeds"
        f" {', '.join(map(str, r['seeds']))}) |"
        f" {r['epsilon_total']:.3f} ({r['delta']:.0e}) |"
        f" {r['noise_multiplier']:.3f} | {_chosen(r)} | {feedback} |"
        f" ({r['search_rounds']} + {r['train_rounds']}) × {r['local_steps']}"
        f" | {r['wall_time_s'] / 60:.1f} min | {r['hardware']} |"
        f" {r['commit']} |")
  lines += _paired_section(current)
  plotted = sorted({r["dataset"] for r in current})
  if plotted:
    lines += ["", "Plots: " + ", ".join(
        f"`{NAME}_{d}_accuracy.svg`" for d in plotted) + " (monitor accuracy"
        " per round); `hpo_<dataset>_<row>_probabilities.svg` (each"
        " configuration's probability per search round)."]
  lines += records.commands_section(
      NAME, rows,
      lambda r: f"{records.DATASET_LABEL[r['dataset']]}, {r['method']}")
  return "\n".join(lines) + "\n"


def main(argv):
  del argv
  try:
    seeds = [int(s) for s in _SEEDS.value]
    cli.check_listed(("--datasets", _DATASETS.value, hpo.DATASETS),
                     ("--strategies", _STRATEGIES.value, hpo.ROWS))
    for dataset in _DATASETS.value:
      for row in _STRATEGIES.value:
        for seed in seeds:
          fields = preset_fields(dataset, row, seed)
        if _EXTEND.value:
          records.check_extension(
              records.current_row(records.read(NAME), fields), fields, seeds,
              SAME)
    for dataset in _DATASETS.value:
      for row in _STRATEGIES.value:
        new = run_row(dataset, row, seeds)
        rows = (records.extend(NAME, new, render, PER_SEED, SAME)
                if _EXTEND.value else records.write(NAME, [new], render))
        print("plots:", ", ".join(map(str, plot(dataset, rows))), flush=True)
      print(render(rows), flush=True)
  except USER_ERRORS as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
