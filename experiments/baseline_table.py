r"""The hand-set baseline: Tramer & Boneh's tanh CNN, DP-SGD, ε = 3.

Trains the baseline stage of `experiments/configs/dpnas.py` (DPNAS's
retraining recipe: Poisson batch 2048, lr 2, momentum 0.9, clip 0.1, 40
epochs; 30 on CIFAR-10) through the main job, once per seed, in resumable
workdirs, and writes `experiments/results/baseline.md` and `.json` (mean ±
sd over seeds, each seed's accuracy, parameters and FLOPs).

  python -m experiments.baseline_table --datasets=mnist,fashion_mnist \
      --seeds=0,1,2
"""

import sys

from absl import app, flags

from experiments import cli, records
from experiments.configs import dpnas
from fedsearch.errors import USER_ERRORS, ConfigError
from fedsearch.runner import job as job_lib

_DATASETS = flags.DEFINE_list("datasets", ["mnist", "fashion_mnist"],
                              f"any of {list(dpnas.DATASETS)}")
_SETTINGS = flags.DEFINE_list("settings", ["centralised"],
                              f"any of {list(dpnas.SETTINGS)}")
_SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], "one run per seed")
_EPOCHS = flags.DEFINE_integer(
    "epochs", 0, "a CPU budget: train this many of the recipe's epochs (0:"
    " all; fewer labels the row reduced)")
_DATA_DIR = flags.DEFINE_string("data_dir", "../shared/data", "data folder")
_WORKDIR = flags.DEFINE_string("workdir", "workdir/baseline", "run folders")

NAME = "baseline"
METHOD = dpnas.BASELINE_METHOD
# Tramer & Boneh's CNN with this recipe at ε = 3, one seed, fixed-size
# shuffled batches, on an H100 (../shared/BENCHMARKS.md).
REFERENCE = {"mnist": 0.9787, "fashion_mnist": 0.8595, "cifar10": 0.6056}


def seed_config(dataset: str, setting: str, seed: int):
  config = dpnas.get_config(f"{dataset},{setting},baseline")
  config.data_dir = _DATA_DIR.value
  config.seed = seed
  dpnas.reduce_epochs(config, _EPOCHS.value)
  return config


def run_row(dataset: str, setting: str) -> dict:
  summaries, curves = [], []
  reduced = dpnas.reduced_label(dataset, _EPOCHS.value)
  for seed in map(int, _SEEDS.value):
    workdir = (f"{_WORKDIR.value}/{dataset}_{setting}"
               f"{'_e' + str(_EPOCHS.value) if reduced else ''}_s{seed}")
    summaries.append(cli.run_labelled(seed_config(dataset, setting, seed),
                                      workdir,
                                      f"{dataset}, {setting}, seed {seed}"))
    curves.append(records.monitor_curve(workdir))
  return {
      "dataset": dataset, "setting": setting, "method": METHOD + reduced,
      **records.seeds_row(summaries, [int(s) for s in _SEEDS.value], curves),
      "reference_test_accuracy": REFERENCE[dataset],
  }


def render(rows: list[dict]) -> str:
  lines = [
      "### Hand-set baseline: Tramer & Boneh's tanh CNN, DP-SGD at ε = 3",
      "",
      "DPNAS's retraining recipe (Poisson batch 2048 as q = 2048/N, lr 2,"
      " momentum 0.9, clip 0.1, 40 epochs; 30 on CIFAR-10), through the main"
      " job's code path (`--config.model`). Reference: the same network and"
      " recipe with fixed-size shuffled batches, one seed, on an H100"
      " (`../shared/BENCHMARKS.md`). Rows are written by"
      " `python -m experiments.baseline_table`; each row's command is its"
      " own.",
      "",
      "| dataset | setting | model | test accuracy (mean ± sd) | per seed |"
      " reference | ε (δ) | accountant | σ | parameters | FLOPs |"
      " wall time | hardware | commit |",
      "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
  ]
  for r in rows:
    seeds = " / ".join(f"{100 * a:.2f}" for a in r["test_accuracies"])
    lines.append(
        f"| {records.DATASET_LABEL[r['dataset']]} | {r['setting']} |"
        f" {r['model']}{r['method'].removeprefix(METHOD)} |"
        f" **{100 * r['test_accuracy']:.2f} ± {100 * r['test_accuracy_sd']:.2f}"
        f" %** | {seeds} (seeds {', '.join(map(str, r['seeds']))}) |"
        f" {100 * r['reference_test_accuracy']:.2f} % |"
        f" {r['epsilon_total']:.3f} ({r['delta']:.0e}) | {r['accountant']} |"
        f" {r['noise_multiplier']:.3f} | {r['parameters']:,} |"
        f" {int(r['flops']):,} | {r['wall_time_s'] / 60:.1f} min |"
        f" {r['hardware']} | {r['commit']} |")
  lines += ["", "Commands and notes:", ""]
  for r in rows:
    note = f" ({r['commit_note']})" if r.get("commit_note") else ""
    lines.append(f"- {records.DATASET_LABEL[r['dataset']]}, {r['setting']}:"
                 f" `{r['command']}`{note}")
  return "\n".join(lines) + "\n"


def main(argv):
  del argv
  try:
    rows = [(d, s) for d in _DATASETS.value for s in _SETTINGS.value]
    for dataset, setting in rows:  # All checked before any work.
      if dataset not in dpnas.DATASETS or setting not in dpnas.SETTINGS:
        raise ConfigError(
            f"--datasets must name {list(dpnas.DATASETS)} and --settings"
            f" {list(dpnas.SETTINGS)}; got {dataset!r}, {setting!r}")
      dpnas.check_epochs(dataset, _EPOCHS.value)
      for seed in map(int, _SEEDS.value):
        job_lib.privacy_plan(seed_config(dataset, setting, seed))
    for dataset, setting in rows:
      row = run_row(dataset, setting)
      records.write(NAME, [row], render)
      print(render([row]), flush=True)
  except USER_ERRORS as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
