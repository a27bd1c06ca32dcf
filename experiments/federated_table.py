r"""Client-level DP-FedAvg over 1,000 clients: the federated results table.

Runs `experiments/configs/federated.py` (a population of 1,000 two-class
clients, 100 Poisson-sampled per round, a whole client as the unit of
privacy, noise added once to the sum, (ε, δ) = (3, 1e-5)) for every
dataset and clipping rule, once per seed, in resumable workdirs, and writes
`experiments/results/federated.md` and `.json` and a plot per dataset of
the monitor split's accuracy and of the weights' clip bound per round.

  python -m experiments.federated_table --datasets=mnist,fashion_mnist \
      --clippings=fixed,adaptive
"""

import sys

from absl import app, flags

from experiments import cli, plots, records
from experiments.configs import federated
from fedsearch.errors import USER_ERRORS, ConfigError
from fedsearch.runner import job as job_lib

_DATASETS = flags.DEFINE_list("datasets", ["mnist", "fashion_mnist"],
                              f"any of {list(federated.DATASETS)}")
_CLIPPINGS = flags.DEFINE_list("clippings", ["fixed"],
                               f"any of {list(federated.CLIPPINGS)}")
_SEEDS = flags.DEFINE_list("seeds", ["0"], "one run per seed")
_DATA_DIR = flags.DEFINE_string("data_dir", "../shared/data", "data folder")
_WORKDIR = flags.DEFINE_string("workdir", "workdir/federated", "run folders")

NAME = "federated"
METHOD = {"adaptive": "DP-FedAvg, client-level, adaptive clipping (median)",
          "fixed": "DP-FedAvg, client-level, fixed clipping (noise rule)"}


def seed_config(dataset: str, clipping: str, seed: int):
  config = federated.get_config(f"{dataset},{clipping}")
  config.data_dir = _DATA_DIR.value
  config.seed = seed
  return config


def _workdir(dataset, clipping, seed) -> str:
  return f"{_WORKDIR.value}/{dataset}_{clipping}_s{seed}"


def run_row(dataset: str, clipping: str) -> dict:
  seeds = [int(s) for s in _SEEDS.value]
  summaries = []
  for seed in seeds:
    workdir = _workdir(dataset, clipping, seed)
    summaries.append(cli.run_labelled(seed_config(dataset, clipping, seed),
                                      workdir,
                                      f"{dataset}, {clipping}, seed {seed}"))
  first = summaries[0]
  workdirs = [_workdir(dataset, clipping, s) for s in seeds]
  return {
      "dataset": dataset, "setting": "federated", "method": METHOD[clipping],
      **records.seeds_row(summaries, seeds,
                          [records.monitor_curve(w) for w in workdirs]),
      "unit": first["unit"], "trust": first["trust"],
      "population": first["clients"],
      "clients_per_round_expected": first["clients_per_round"],
      "client_sampling_rate": first["client_sampling_rate"],
      "client_slots": first["client_slots"],
      "local_steps": seed_config(dataset, clipping, seeds[0]).federated.local_steps,
      "rounds": first["rounds"],
      "clip_norm_per_round": [records.per_round(w, "clip_norm")
                              for w in workdirs]
                             if clipping == "adaptive" else [],
  }


def plot(dataset: str, rows: list[dict]) -> list[str]:
  mine = [r for r in rows if r["dataset"] == dataset]
  label = records.DATASET_LABEL[dataset]
  accuracy = records.RESULTS / f"{NAME}_{dataset}_accuracy.svg"
  plots.line_plot({r["method"]: r["monitor_accuracy_per_epoch"] for r in mine},
                  f"{label}, 1,000 clients, client-level ε = 3: monitor"
                  " accuracy per round", "monitor accuracy", accuracy,
                  (0.0, 1.0))
  paths = [str(accuracy)]
  adaptive = {r["method"]: r["clip_norm_per_round"] for r in mine
              if r["clip_norm_per_round"]}
  if adaptive:
    bound = records.RESULTS / f"{NAME}_{dataset}_clip_norm.svg"
    plots.line_plot(adaptive, f"{label}: adaptive clip bound S_w per round",
                    "S_w", bound)
    paths.append(str(bound))
  return paths


def render(rows: list[dict]) -> str:
  lines = [
      "# Federated privacy at population scale: client-level DP-FedAvg",
      "",
      "Written by `experiments/federated_table.py` (each row's command is"
      " its own). A population of 1,000 clients (two label-sorted shards"
      " each, ~59 examples of two classes), 100 Poisson-sampled per round in"
      " expectation; the unit of privacy is a **whole client** (unit"
      " `client`), the noise is added once to the sum (trust `aggregate`:"
      " secure aggregation, simulated as one draw of the sum's noise), and"
      " ε is the whole run's, one subsampled Gaussian per round in the PLD"
      " accountant (with adaptive clipping, the privatised count is released"
      " with the update and accounted jointly). Tramer & Boneh's tanh CNN;"
      " settings in `experiments/configs/federated.py`. Client-level and"
      " example-level guarantees differ: these rows are not comparable with"
      " the example-level rows of `dpnas.md` / `baseline.md`. The"
      " preset's docstring states how S_w was chosen (a data-independent"
      " noise rule) and a discarded first MNIST run (server momentum 0.9,"
      " adaptive clipping) that diverged. Plots:"
      " `federated_<dataset>_accuracy.svg`, `federated_<dataset>_clip_norm"
      ".svg`.",
      "",
      "| dataset | method | model | unit / trust | clients (per round) |"
      " test accuracy | ε (δ) | σ (joint) | rounds × local steps |"
      " final S_w | wall time | hardware | commit |",
      "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
  ]
  for r in rows:
    sd = (f" ± {100 * r['test_accuracy_sd']:.2f}" if len(r["seeds"]) > 1
          else "")
    final = (f"{r['clip_norm_per_round'][0][-1]:.3f}"
             if r["clip_norm_per_round"] else "fixed")
    lines.append(
        f"| {records.DATASET_LABEL[r['dataset']]} | {r['method']} |"
        f" {r['model']} | {r['unit']} / {r['trust']} |"
        f" {r['population']:,} ({r['clients_per_round_expected']},"
        f" q = {r['client_sampling_rate']:g}) |"
        f" **{100 * r['test_accuracy']:.2f}{sd} %** (seeds"
        f" {', '.join(map(str, r['seeds']))}) |"
        f" {r['epsilon_total']:.3f} ({r['delta']:.0e}) |"
        f" {r['noise_multiplier']:.3f} | {r['rounds']} × {r['local_steps']} |"
        f" {final} | {r['wall_time_s'] / 60:.1f} min | {r['hardware']} |"
        f" {r['commit']} |")
  lines += ["", "Commands:", ""]
  for r in rows:
    lines.append(f"- {records.DATASET_LABEL[r['dataset']]}, {r['method']}:"
                 f" `{r['command']}`")
  return "\n".join(lines) + "\n"


def main(argv):
  del argv
  try:
    pairs = [(d, c) for d in _DATASETS.value for c in _CLIPPINGS.value]
    for dataset, clipping in pairs:  # All checked before any work.
      if dataset not in federated.DATASETS or clipping not in (
          federated.CLIPPINGS):
        raise ConfigError(
            f"--datasets must name {list(federated.DATASETS)} and"
            f" --clippings {list(federated.CLIPPINGS)}; got {dataset!r},"
            f" {clipping!r}")
      for seed in map(int, _SEEDS.value):
        job_lib.privacy_plan(seed_config(dataset, clipping, seed))
    for dataset, clipping in pairs:
      row = run_row(dataset, clipping)
      on_record = records.write(NAME, [row], render)
      print(render([row]), flush=True)
      print("plots:", ", ".join(plot(dataset, on_record)), flush=True)
  except USER_ERRORS as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
