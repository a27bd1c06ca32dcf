r"""The DPNAS results table: private search, DP-SGD retraining, at total ε = 3.

For every dataset and setting it runs the search stage once (the first
seed), then retrains the found genotype from fresh weights once per seed
(`experiments/configs/dpnas.py`), in resumable workdirs under --workdir (a
finished run is not re-run), and writes `experiments/results/dpnas.json`
and `.md`, the baseline's row beside each searched one (from
`baseline.json`), and a plot per dataset of the monitor split's accuracy
per epoch. Test data is read only in each run's final report; the search's
own test accuracy (of its supernet child) is not used for anything.

  python -m experiments.dpnas_table --design=cpu_plain --ablations \
      --datasets=mnist,fashion_mnist
  python -m experiments.dpnas_table --cpu --ablations --datasets=mnist

(`--cpu` is `--design=cpu`, the spelling of the rows recorded before
`cpu_plain`; the designs are described in `experiments/configs/dpnas.py`.)

ε of a searched row is the total of both stages, composed in one accountant
(the retraining reads the search's releases from its workdir and calibrates
its σ for the rest of the budget; `privacy.stage_share` is the search's
part). --ablations adds, for the first seed, the found genotype retrained at
the whole ε = 3 as if the search had been free (which separates the search's
privacy cost from its choice; not a private pipeline, labelled so), and a
fixed cell of the same space (`--fixed_op` on every edge) at ε = 3 (which
separates the space and layout from the search).
"""

import pathlib
import sys

from absl import app, flags

from experiments import cli, plots, records
from experiments.configs import dpnas
from fedsearch.errors import USER_ERRORS, ConfigError
from fedsearch.runner import job as job_lib
from fedsearch.search_space import ops
from fedsearch.search_space.genotype import Genotype

_DATASETS = flags.DEFINE_list("datasets", ["mnist", "fashion_mnist"],
                              f"any of {list(dpnas.DATASETS)}")
_SETTINGS = flags.DEFINE_list("settings", ["centralised"],
                              f"any of {list(dpnas.SETTINGS)}")
_DESIGN = flags.DEFINE_enum("design", "dpnas", dpnas.DESIGNS,
                            "DPNAS's own design (a GPU's) or a CPU-sized one"
                            " (labelled)")
_CPU = flags.DEFINE_bool("cpu", False, "the same as --design=cpu")
_SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"],
                           "retraining seeds; the search runs with the first")
_ABLATIONS = flags.DEFINE_bool("ablations", False,
                               "also the two ablation rows (first seed)")
_FIXED_CELL_SEEDS = flags.DEFINE_list(
    "fixed_cell_seeds", [], "seeds of the fixed-cell ablation (default: the"
    " first of --seeds); e.g. 0,1,2 makes the space's hand-set member a"
    " 3-seed row")
_FIXED_OP = flags.DEFINE_string("fixed_op", "sep_conv_3x3_tanh",
                                "the op of the fixed-cell ablation")
_EPOCHS = flags.DEFINE_integer(
    "epochs", 0, "a CPU budget: every retraining trains this many of the"
    " recipe's epochs (0: all; fewer labels the rows reduced)")
_DATA_DIR = flags.DEFINE_string("data_dir", "../shared/data", "data folder")
_WORKDIR = flags.DEFINE_string("workdir", "workdir/dpnas", "run folders")

NAME = "dpnas"
SEARCHED = "REINFORCE search (privatised reward) + DP-SGD retraining"
FREE_SEARCH = ("ablation: found cell retrained at the whole ε, search's ε"
               " not counted (not private)")
FIXED_CELL = "ablation: fixed cell of the same space, DP-SGD"


def design() -> str:
  return "cpu" if _CPU.value else _DESIGN.value


def stage_config(dataset, setting, stage, seed, genotype_from=""):
  config = dpnas.get_config(f"{dataset},{setting},{stage},{design()}")
  config.data_dir = _DATA_DIR.value
  config.seed = seed
  config.nas.genotype = genotype_from
  if stage == "retrain":
    dpnas.reduce_epochs(config, _EPOCHS.value)
  return config


def _root(dataset, setting) -> pathlib.Path:
  return pathlib.Path(_WORKDIR.value) / (
      f"{dataset}_{setting}" + ("" if design() == "dpnas" else f"_{design()}"))


def _retrain_name(dataset, name: str) -> str:
  """A retraining's folder: reduced ones apart from the recipe's."""
  return name + (f"_e{_EPOCHS.value}"
                 if dpnas.reduced_label(dataset, _EPOCHS.value) else "")


def _run(config, workdir: pathlib.Path) -> dict:
  """The run's summary, with its seed and its monitor accuracy per round."""
  summary = cli.run_labelled(
      config, workdir, f"{config.dataset}, {workdir.name}, seed {config.seed}")
  return {**summary, "seed": config.seed,
          "monitor_accuracy_per_round": records.monitor_curve(workdir)}


def _lone_genotype(genotype: Genotype, folder: pathlib.Path) -> str:
  """`genotype` in a folder of its own, without the search's privacy events:
  a retraining of it composes nothing before it."""
  folder.mkdir(parents=True, exist_ok=True)
  path = folder / job_lib.GENOTYPE_FILE
  path.write_text(genotype.to_json())
  return str(path)


def _row(dataset, setting, method, summaries, search=None) -> dict:
  row = {
      "dataset": dataset, "setting": setting,
      "method": method + dpnas.reduced_label(dataset, _EPOCHS.value),
      **records.seeds_row(summaries, [s["seed"] for s in summaries],
                          [s["monitor_accuracy_per_round"] for s in summaries]),
      "published_dpnas": dpnas.PUBLISHED[dataset],
      "design": design(),
      "trust": summaries[0]["trust"], "unit": "example",
  }
  if search is not None:
    row.update(epsilon_search_alone=search["epsilon"],
               search_share=search["stage_share"],
               search_wall_time_s=search["wall_time_s"],
               search_rounds=search["rounds"],
               commit=records.commit(summaries + [search]))
    row["wall_time_s"] += search["wall_time_s"]
  return row


def run_rows(dataset, setting, seeds) -> list[dict]:
  root = _root(dataset, setting)
  search = _run(stage_config(dataset, setting, "search", seeds[0]),
                root / "search")
  retrains = [
      _run(stage_config(dataset, setting, "retrain", seed,
                        str(root / "search")),
           root / _retrain_name(dataset, f"retrain_s{seed}"))
      for seed in seeds]
  rows = [_row(dataset, setting, SEARCHED, retrains, search)]
  if not _ABLATIONS.value:
    return rows
  found = Genotype.from_json(
      (root / "search" / job_lib.GENOTYPE_FILE).read_text())
  fixed = Genotype(found.op_set, found.nodes, tuple(
      (to, src, _FIXED_OP.value) for to, src, _ in found.edges))
  fixed_seeds = [int(s) for s in _FIXED_CELL_SEEDS.value] or seeds[:1]
  # When the search found the fixed cell, its search-free retraining is
  # the fixed-cell ablation: it takes that ablation's seeds.
  rows.append(_row(dataset, setting, FREE_SEARCH, _retrain_alone(
      dataset, setting, found, root, "found_alone",
      fixed_seeds if fixed == found else seeds[:1])))
  if fixed != found:
    rows.append(_row(dataset, setting, FIXED_CELL, _retrain_alone(
        dataset, setting, fixed, root, "fixed_cell", fixed_seeds)))
  return rows


def _retrain_alone(dataset, setting, genotype: Genotype, root: pathlib.Path,
                   name: str, seeds) -> list[dict]:
  """`genotype` retrained at the whole ε, composing no search, per seed."""
  genotype_file = _lone_genotype(genotype, root / name)
  return [_run(stage_config(dataset, setting, "retrain", seed, genotype_file),
               root / _retrain_name(dataset, f"{name}_s{seed}"))
          for seed in seeds]


_SHORT = {SEARCHED: "searched, retrained", FREE_SEARCH: "found, search free",
          FIXED_CELL: "fixed cell"}


def _short(method: str) -> str:
  for long, short in _SHORT.items():
    if method.startswith(long):
      return short + method.removeprefix(long)
  return "baseline (T&B CNN)" + method.removeprefix(dpnas.BASELINE_METHOD)


def plot(dataset: str, rows: list[dict]) -> pathlib.Path:
  """Monitor-split accuracy per epoch of every retraining of `dataset`
  (centralised rows) beside the baseline's; one line per seed."""
  series = {}
  for r in records.read("baseline") + rows:
    if (r["dataset"], r["setting"]) == (dataset, "centralised") and (
        "monitor_accuracy_per_epoch" in r):
      name = _short(r["method"])
      if "design" in r:
        name += f", {r['design']}"
      series[name] = r["monitor_accuracy_per_epoch"]
  path = records.RESULTS / f"{NAME}_{dataset}.svg"
  plots.line_plot(
      series, f"{records.DATASET_LABEL[dataset]}, centralised, total ε = 3:"
      " monitor-split accuracy", "monitor accuracy", path,
      None if dataset == "cifar10" else (0.8, 1.0))
  return path


def _percent(row) -> str:
  sd = (f" ± {100 * row['test_accuracy_sd']:.2f}"
        if len(row.get("seeds", [])) > 1 else "")
  return f"{100 * row['test_accuracy']:.2f}{sd} %"


def render(rows: list[dict]) -> str:
  baseline = {(r["dataset"], r["setting"]): r for r in records.read("baseline")}
  lines = [
      "# DPNAS: private REINFORCE search + DP-SGD retraining, against the"
      " hand-set CNN",
      "",
      "Written by `experiments/dpnas_table.py` from `dpnas.json` (each row's"
      " command is its own). A searched row spends its **total** ε over"
      " both stages in one accountant (PLD): the search calibrates to"
      " `search_share` of ε = 3 and persists its releases, the retraining"
      " composes them and spends the rest. Each searched genotype is"
      " retrained from fresh weights once per seed (mean ± sd); the"
      " baseline (Tramer & Boneh's tanh CNN, `baseline.json`) trains with"
      " the same retraining recipe at ε = 3. Test accuracy is read once, at"
      " the end of each run; no decision reads it. Plots:"
      " `dpnas_<dataset>.svg` (monitor-split accuracy per epoch).",
      "",
      "Designs (`experiments/configs/dpnas.py`): `cpu` puts a searched cell"
      " (1x1 conv + GroupNorm, then one searched op) after each of Tramer &"
      " Boneh's convolutions; `cpu_plain` drops the norms and the 1x1"
      " layers, so its skip-connection child is the baseline itself;"
      " `cpu_scatter` puts the same cells inside Tramer & Boneh's"
      " ScatterNet CNN (ScatterNet features, J = 2, L = 8; its skip child is"
      " that network; FLOPs add the scattering's per image).",
      "",
      "| dataset | setting | method | design | model | test accuracy |"
      " ε total (δ) | search ε alone / share | σ (retraining) | parameters |"
      " FLOPs | wall time | hardware | commit | DPNAS published |",
      "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
  ]
  shown = set()
  for r in rows:
    if r.get("superseded"):
      continue
    key = (r["dataset"], r["setting"])
    if key in baseline and key not in shown:
      shown.add(key)
      lines.append(_line(baseline[key], "—"))
    search = (f"{r['epsilon_search_alone']:.2f} / {r['search_share']:.2f}"
              if "epsilon_search_alone" in r else "—")
    lines.append(_line(r, search))
  lines += records.commands_section(
      NAME, rows, lambda r: f"{records.DATASET_LABEL[r['dataset']]},"
      f" {r['setting']}, {r['method']} ({r['design']})")
  return "\n".join(lines) + "\n"


def _flops(row) -> str:
  """The network's FLOPs per example, plus its fixed input transform's."""
  if not row.get("feature_flops"):
    return f"{int(row['flops']):,}"
  return (f"{int(row['flops']):,} + {row['feature_flops'] / 1e6:.1f} M"
          f" ({row['features']})")


def _line(r, search) -> str:
  return (f"| {records.DATASET_LABEL[r['dataset']]} | {r['setting']} |"
          f" {r['method']} | {r.get('design', '—')}"
          f" | {r['model']} | **{_percent(r)}** (seeds"
          f" {', '.join(map(str, r['seeds']))}) |"
          f" {r['epsilon_total']:.3f} ({r['delta']:.0e}) | {search} |"
          f" {r['noise_multiplier']:.3f} | {r['parameters']:,} |"
          f" {_flops(r)} | {r['wall_time_s'] / 60:.1f} min |"
          f" {r['hardware']} | {r['commit']} |"
          f" {100 * dpnas.PUBLISHED[r['dataset']]:.2f} % |")


def main(argv):
  del argv
  try:
    seeds = [int(s) for s in _SEEDS.value]
    pairs = [(d, s) for d in _DATASETS.value for s in _SETTINGS.value]
    if _FIXED_OP.value not in ops.op_names("dpnas"):
      raise ConfigError(f"--fixed_op={_FIXED_OP.value!r} is not allowed;"
                        f" choose one of {list(ops.op_names('dpnas'))}")
    for dataset, setting in pairs:  # All checked before any work.
      if dataset not in dpnas.DATASETS or setting not in dpnas.SETTINGS:
        raise ConfigError(
            f"--datasets must name {list(dpnas.DATASETS)} and --settings"
            f" {list(dpnas.SETTINGS)}; got {dataset!r}, {setting!r}")
      dpnas.check_epochs(dataset, _EPOCHS.value)
      job_lib.privacy_plan(stage_config(dataset, setting, "search", seeds[0]))
    for dataset, setting in pairs:
      rows = run_rows(dataset, setting, seeds)
      on_record = records.write(NAME, rows, render)
      print(render(rows), flush=True)
      if setting == "centralised":
        print(f"plot: {plot(dataset, on_record)}", flush=True)
  except USER_ERRORS as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
