r"""The DPNAS results table: private search, DP-SGD retraining, test accuracy.

For every dataset and setting it runs the search stage and then retrains the
found genotype from fresh weights (`experiments/configs/dpnas.py`), in
resumable workdirs under --workdir (a finished stage is not re-run), and
writes one markdown table. Test data is read only in each stage's final
report; the search's own test accuracy (of its supernet child) is not used.

  python -m experiments.dpnas_table --reduced            # 2-core CPU sizes
  python -m experiments.dpnas_table --datasets=mnist --settings=centralised

ε of a row: the total of both stages, composed in one accountant (the
retraining reads the search's releases from its workdir and calibrates its
σ for the rest of the budget; `privacy.stage_share` is the search's part).
"""

import json
import pathlib
import sys

from absl import app, flags

from experiments import reporting
from experiments.configs import dpnas
from fedsearch import runner
from fedsearch.errors import USER_ERRORS, ConfigError

_DATASETS = flags.DEFINE_list("datasets", list(dpnas.DATASETS),
                              "datasets to run")
_SETTINGS = flags.DEFINE_list("settings", list(dpnas.SETTINGS),
                              "centralised and/or federated")
_REDUCED = flags.DEFINE_bool("reduced", False, "CPU-sized runs (labelled)")
_DATA_DIR = flags.DEFINE_string("data_dir", "../shared/data", "data folder")
_WORKDIR = flags.DEFINE_string("workdir", "workdir/dpnas", "run folders")
_OUT = flags.DEFINE_string("out", "", "markdown file to append the table to")
_SEED = flags.DEFINE_integer("seed", 0, "seed of every run")

_DATASET_LABEL = {"mnist": "MNIST", "fashion_mnist": "Fashion-MNIST",
                  "cifar10": "CIFAR-10 (JPEG q75)"}
_SETTING_LABEL = {"centralised": "centralised (1 client)",
                  "federated": "10 clients, Dirichlet(0.5)"}


def stage_config(dataset, setting, stage, genotype_from=""):
  arg = f"{dataset},{setting},{stage}" + (",reduced" if _REDUCED.value else "")
  config = dpnas.get_config(arg)
  config.data_dir = _DATA_DIR.value
  config.seed = _SEED.value
  config.nas.genotype = genotype_from
  return arg, config


def run_row(dataset, setting, report):
  root = pathlib.Path(_WORKDIR.value) / (
      f"{dataset}_{setting}" + ("_reduced" if _REDUCED.value else ""))
  search_dir = root / "search"
  _, config = stage_config(dataset, setting, "search")
  search = runner.run(config, str(search_dir), report=report)
  _, config = stage_config(dataset, setting, "retrain", str(search_dir))
  retrain = runner.run(config, str(root / "retrain"), report=report)
  return search, retrain


def row_line(dataset, setting, search, retrain) -> str:
  # The retraining's accountant composes the search's releases: its ε and δ
  # are the pipeline's.
  eps, delta = retrain["epsilon"], retrain["delta"]
  wall = search["wall_time_s"] + retrain["wall_time_s"]
  return (f"| {_DATASET_LABEL[dataset]} | REINFORCE (privatised reward) |"
          f" {_SETTING_LABEL[setting]} | {eps:.2f} ({delta:.0e}) |"
          f" **{100 * retrain['test_accuracy']:.2f} %** |"
          f" {search['epsilon']:.2f} / {eps:.2f} |"
          f" {_cell(retrain['genotype'])} | {retrain['model_parameters']} |"
          f" {wall / 60:.1f} min | {_devices(search, retrain)} |"
          f" {100 * dpnas.PUBLISHED[dataset]:.2f} % |")


def _cell(genotype: dict) -> str:
  return ", ".join(f"({to},{src}) {op}" for to, src, op in genotype["edges"])


def _devices(*summaries) -> str:
  """The machines the stages ran on, as their summaries recorded them."""
  names = [s["deployed_cost"]["hardware"] for s in summaries]
  return names[0] if len(set(names)) == 1 else "; ".join(names)


def main(argv):
  del argv
  lines = []
  try:
    for dataset in _DATASETS.value:
      for setting in _SETTINGS.value:
        if dataset not in dpnas.DATASETS or setting not in dpnas.SETTINGS:
          raise ConfigError(
              f"--datasets must name {list(dpnas.DATASETS)} and --settings"
              f" {list(dpnas.SETTINGS)}; got {dataset!r}, {setting!r}")
        search, retrain = run_row(
            dataset, setting, lambda line: print(line, flush=True))
        lines.append(row_line(dataset, setting, search, retrain))
        print(lines[-1], flush=True)
  except USER_ERRORS as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  size = "reduced (CPU-sized: " if _REDUCED.value else "full ("
  example = stage_config(_DATASETS.value[0], _SETTINGS.value[0], "retrain")[1]
  header = [
      f"### DPNAS table, {size}space {json.dumps(example.space.to_dict())},"
      f" seed {_SEED.value})",
      "",
      reporting.machine_line(),
      "",
      "Command: `python -m experiments.dpnas_table " + " ".join(sys.argv[1:])
      + "`",
      "",
      "| dataset | search strategy | setting | total ε (δ) | test accuracy |"
      " search's ε alone / total | found cell | parameters | wall time | hardware |"
      " DPNAS published (ε=3, non-private search) |",
      "|---|---|---|---|---|---|---|---|---|---|---|",
  ]
  reporting.emit("\n".join(header + lines + [""]), _OUT.value)


if __name__ == "__main__":
  app.run(main)
