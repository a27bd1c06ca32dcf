r"""A private random-search tuning of the main job (Papernot & Steinke 2022).

  python -m experiments.tune \
      --config=experiments/configs/dpnas.py:mnist,centralised,baseline \
      --config.privacy.accountant=rdp --config.privacy.tuning_mean_runs=5 \
      --grid=client.learning_rate=0.5,1,2,4 --workdir=workdir/tune_mnist

Trains K runs (K drawn with mean `privacy.tuning_mean_runs`), each at a grid
point drawn uniformly, each calibrated so that the kept run spends the
config's ε in all, and keeps the best final monitor accuracy
(`fedsearch/runner/tuning.py`). Re-running the command resumes.
"""

import sys

from absl import app, flags

from experiments import cli
from fedsearch.errors import USER_ERRORS, ConfigError
from fedsearch.runner import tuning

_CONFIG = cli.define_config_file(cli.DEFAULT_CONFIG, "The runs' configuration.")
_GRID = flags.DEFINE_multi_string(
    "grid", [], "FIELD=V1,V2,...: a config field and the values a run may"
    " draw; repeat for several fields (the grid is their product)")
_WORKDIR = flags.DEFINE_string("workdir", "workdir/tune",
                               "the tuning's folder (run i in run_<i>)")


def parse_grid(specs: list[str]) -> dict[str, list[str]]:
  grid = {}
  for spec in specs:
    field, sep, values = spec.partition("=")
    if not sep or not field or not values:
      raise ConfigError(f"--grid={spec!r}: write FIELD=V1,V2,..., e.g."
                        " client.learning_rate=0.5,1,2")
    grid[field.strip()] = [v.strip() for v in values.split(",") if v.strip()]
  return grid


def main(argv):
  del argv
  try:
    result = tuning.tune(
        _CONFIG.value, parse_grid(_GRID.value), _WORKDIR.value,
        lambda config, workdir: cli.run_labelled(config, workdir,
                                                 workdir.name))
  except USER_ERRORS as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  for i, (choice, score) in enumerate(zip(result.choices,
                                          result.monitor_accuracies)):
    mark = "  <- kept" if i == result.selected else ""
    print(f"run {i}: {choice}  monitor accuracy {score:.4f}{mark}")
  if result.selected is None:
    print("K = 0 runs drawn: the tuning trained and released nothing")
    return
  summary = result.summary
  print(f"kept run {result.selected} of {len(result.choices)}: test accuracy"
        f" {summary['test_accuracy']:.4f}, ε {summary['epsilon']:.3f} for"
        " the whole tuning")


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
