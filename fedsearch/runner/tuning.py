"""Private hyperparameter tuning of the main job by random search.

Papernot & Steinke (ICLR 2022): train K runs, K drawn at random
(`accounting.Tuning`), each with a configuration drawn uniformly from a fixed
grid, and keep the run with the best score. Each run is calibrated for the
tuning (`privacy.tuning_mean_runs`), so the selected run's release spends
the configured ε in all: choosing among the grid is charged, not free, and
costs far less than composing every grid point's run.

The score is the final monitor-split accuracy: the monitor split is the
server's own public data (README, "Privacy statement"), so the selection
reads no client's data beyond what the runs release. Test accuracy is read
by each run's final report as always, and only the selected run's is
reported. K and the draws come from the tuning's own randomness (its
workdir's `secret_key`, or the seed in seeded mode) and are written, before
any run starts, to `tuning.json`: an interrupted tuning resumes with the
same runs, each from its own last checkpoint.
"""

import copy
import dataclasses
import itertools
import json
import pathlib
from collections.abc import Callable, Mapping, Sequence

import ml_collections

from fedsearch.errors import ConfigError
from fedsearch.privacy import randomness as randomness_lib
from fedsearch.runner import job as job_lib
from fedsearch.runner.workdir import Workdir, finite_json, write_atomic

PLAN_FILE = "tuning.json"
RESULT_FILE = "tuning_result.json"  # Written last: marks a finished tuning.
TUNING_STREAM = 0x7E5E
# What the grid may not change: the privacy guarantee and the tuning itself.
_FIXED_FIELDS = ("privacy.epsilon", "privacy.delta", "privacy.accountant",
                 "privacy.unit", "privacy.randomness", "privacy.trust",
                 "privacy.tuning_mean_runs", "privacy.tuning_shape",
                 "privacy.noise_multiplier", "dataset", "seed")


@dataclasses.dataclass(frozen=True)
class TuningResult:
  """What a finished tuning releases and what it measured.

  Attributes:
    choices: each run's configuration from the grid, in run order.
    monitor_accuracies: each run's final monitor-split accuracy.
    selected: the index of the kept run (None when K = 0).
    summary: the kept run's summary (its test accuracy and ε).
    wall_time_s: all runs' wall time (the tuning's cost).
  """

  choices: tuple[dict, ...]
  monitor_accuracies: tuple[float, ...]
  selected: int | None
  summary: dict | None
  wall_time_s: float


def grid_points(grid: Mapping[str, Sequence]) -> list[dict]:
  """Every combination of the grid's values, in a fixed order."""
  fields = sorted(grid)
  return [dict(zip(fields, values))
          for values in itertools.product(*(grid[f] for f in fields))]


def _typed(field: str, old, value):
  """`value` (a number, or a command line's string) as the field's type."""
  if isinstance(old, bool) and isinstance(value, str):
    if value.lower() not in ("true", "false"):
      raise ConfigError(f"--grid field {field} takes true or false, got"
                        f" {value!r}")
    return value.lower() == "true"
  try:
    return type(old)(value)
  except (TypeError, ValueError) as e:
    raise ConfigError(f"--grid field {field} takes {type(old).__name__}"
                      f" values, got {value!r}") from e


def _set(config: ml_collections.ConfigDict, field: str, value) -> None:
  *parents, leaf = field.split(".")
  node = config
  for part in parents:
    node = node[part]
  node[leaf] = _typed(field, node[leaf], value)


def run_config(config: ml_collections.ConfigDict, choice: Mapping,
               index: int) -> ml_collections.ConfigDict:
  """Run `index` of the tuning: `config` with the grid's `choice`, and its
  own seed (its initialisation; its noise is its own secret anyway)."""
  out = copy.deepcopy(config)
  with out.unlocked():
    for field, value in choice.items():
      _set(out, field, value)
    out.seed = config.seed + index
  return out


def check(config: ml_collections.ConfigDict,
          grid: Mapping[str, Sequence]) -> None:
  """Refuses, before any work, a tuning whose runs could not all start."""
  if not config.privacy.tuning_mean_runs:
    raise ConfigError(
        "a tuning needs privacy.tuning_mean_runs >= 1 (the mean number of"
        " runs its σ is calibrated for); got 0")
  if not grid or any(not values for values in grid.values()):
    raise ConfigError("--grid must give at least one field with at least one"
                      f" value, e.g. client.learning_rate=0.5,1,2; got {grid}")
  for field in grid:
    if field in _FIXED_FIELDS:
      raise ConfigError(f"--grid field {field} cannot be tuned: the grid may"
                        f" not change {list(_FIXED_FIELDS)}")
    node = config
    for part in field.split("."):
      if not isinstance(node, ml_collections.ConfigDict) or part not in node:
        raise ConfigError(f"--grid field {field} is not a config field")
      node = node[part]
  for index, choice in enumerate(grid_points(grid)):
    job_lib.privacy_plan(run_config(config, choice, index))


def draw_runs(config: ml_collections.ConfigDict,
              grid: Mapping[str, Sequence],
              randomness: randomness_lib.Randomness) -> list[dict]:
  """K, then each run's grid point, uniformly and independently."""
  rng = randomness.rng(TUNING_STREAM)
  runs = job_lib.tuning(config).draw_runs(rng)
  points = grid_points(grid)
  return [points[i] for i in rng.integers(len(points), size=runs)]


def _planned_runs(config, grid, path: pathlib.Path) -> list[dict]:
  """The runs drawn at the tuning's first start, read back on a resume."""
  plan_file = path / PLAN_FILE
  described = {"config": json.loads(config.to_json_best_effort()),
               "grid": {k: list(v) for k, v in grid.items()}}
  if plan_file.exists():
    plan = json.loads(plan_file.read_text())
    if {k: plan[k] for k in described} != json.loads(json.dumps(described)):
      raise ConfigError(
          f"{path} holds a tuning of another configuration or grid; give"
          " the tuning a new workdir")
    return plan["runs"]
  path.mkdir(parents=True, exist_ok=True)
  randomness = randomness_lib.for_run(config.privacy.randomness, config.seed,
                                      path)
  runs = draw_runs(config, grid, randomness)
  if randomness.mode == "secret":
    randomness_lib.write_secret(path, randomness.entropy)
  write_atomic(plan_file, json.dumps({**described, "runs": runs}, indent=1))
  return runs


def tune(config: ml_collections.ConfigDict, grid: Mapping[str, Sequence],
         workdir, run: Callable[..., dict]) -> TuningResult:
  """Runs the tuning in `workdir` (run i in `run_<i>`, by
  `run(config, workdir) -> summary`) and keeps the best monitor accuracy."""
  check(config, grid)
  path = Workdir(workdir).path
  choices = _planned_runs(config, grid, path)
  summaries, scores = [], []
  for index, choice in enumerate(choices):
    run_dir = path / f"run_{index}"
    summaries.append(run(run_config(config, choice, index), run_dir))
    scores.append(float(Workdir(run_dir).metrics()[-1]["monitor_accuracy"]))
  selected = max(range(len(scores)), key=scores.__getitem__, default=None)
  result = TuningResult(tuple(choices), tuple(scores), selected,
                        None if selected is None else summaries[selected],
                        sum(s["wall_time_s"] for s in summaries))
  write_atomic(path / RESULT_FILE, json.dumps(
      finite_json(dataclasses.asdict(result)), indent=1))
  return result
