"""Results records: `experiments/results/NAME.json` rows and their table.

Every results table `experiments/results/NAME.md` is written by one command
from the rows of its twin `NAME.json`: a list of rows, each with at least
`dataset`, `setting` (centralised | federated), `method`, `model`,
`epsilon_total`, `delta`, `test_accuracy` (0–1), `wall_time_s`, `hardware`,
`commit`, `command`, plus what a table adds. A row is written only by a
finished run; a new row replaces the old one with the same key (dataset,
setting, method, model), so re-running one row leaves the others, or adds
its seeds to the row on record (`extend`) when the configuration is the
same.
"""

import json
import math
import os
import pathlib
import statistics
import sys

from fedsearch import data as data_lib
from fedsearch.errors import ConfigError
from fedsearch.runner.workdir import Workdir

# FEDSEARCH_RESULTS_DIR redirects the records (tests write elsewhere).
RESULTS = pathlib.Path(os.environ.get("FEDSEARCH_RESULTS_DIR") or (
    pathlib.Path(__file__).resolve().parent / "results"))
REQUIRED = ("dataset", "setting", "method", "model", "epsilon_total", "delta",
            "test_accuracy", "wall_time_s", "hardware", "commit", "command")
# What one row measures; `design` (a table's variant of a method's space or
# schedule) only where a table has several.
_KEY = ("dataset", "setting", "method", "model", "design")
# A row's fields with one entry per seed, in the order of `seeds`.
PER_SEED = ("seeds", "test_accuracies", "monitor_accuracy_per_epoch")
# What two runs must share to be seeds of one row (numbers to 1e-6).
SAME = ("dataset", "setting", "method", "design", "epsilon_total", "delta",
        "noise_multiplier", "accountant", "randomness", "clients")
DATASET_LABEL = {"digits": "digits", "mnist": "MNIST",
                 "fashion_mnist": "Fashion-MNIST",
                 "cifar10": "CIFAR-10 (JPEG q75)"}
# Between the hosts of a row run on several (see `hosts`).
HOST_SEPARATOR = "; "


def commit(summaries: list[dict]) -> str:
  """The commit(s) the runs' code was at, as their summaries recorded it."""
  return " ".join(sorted({s.get("commit", "unrecorded") for s in summaries}))


def command() -> str:
  """How this script was started, as a user would type it."""
  module = pathlib.Path(sys.argv[0]).resolve()
  root = pathlib.Path(__file__).resolve().parents[1]
  name = ".".join(module.relative_to(root).with_suffix("").parts) if (
      root in module.parents) else sys.argv[0]
  return " ".join(["python -m", name, *sys.argv[1:]])


def seeds_summary(accuracies: list[float]) -> dict:
  """Mean and sample standard deviation over seeds."""
  return {"test_accuracy": statistics.fmean(accuracies),
          "test_accuracy_sd": (statistics.stdev(accuracies)
                               if len(accuracies) > 1 else 0.0),
          "test_accuracies": accuracies}


def total_epsilon(summaries: list[dict]) -> float | None:
  """The largest ε of the runs; None (JSON null) when one ran without
  privacy (`privacy.epsilon=inf`: its summary's ε is inf, or null once
  written)."""
  values = [s["epsilon"] for s in summaries]
  if any(v is None or math.isinf(v) for v in values):
    return None
  return max(values)


def seeds_row(summaries: list[dict], seeds: list[int],
              curves: list[list[float]]) -> dict:
  """The fields of a row that one configuration's runs, one per seed,
  share: what was trained, its ε, accuracy over seeds, costs and where it
  ran (`curves`: each run's monitor accuracy per round)."""
  first = summaries[0]
  cost = first["deployed_cost"]
  return {
      "model": model_name(first),
      "epsilon_total": total_epsilon(summaries),
      "delta": first["delta"],
      **seeds_summary([s["test_accuracy"] for s in summaries]),
      "seeds": list(seeds),
      "parameters": first["model_parameters"], "flops": cost["flops"],
      "features": first.get("features", "pixels"),
      "feature_flops": _feature_flops(first),
      "epochs": first["rounds"], "noise_multiplier": first["noise_multiplier"],
      "accountant": first["accountant"], "randomness": first["randomness"],
      "clients": first["clients"], "monitor_accuracy_per_epoch": curves,
      "wall_time_s": sum(s["wall_time_s"] for s in summaries),
      "hardware": cost["hardware"], "commit": commit(summaries),
      "command": command(),
  }


def _feature_flops(summary: dict) -> float:
  """The input transform's FLOPs per image; measured here (a compile) only
  for summaries written before they recorded it."""
  cost = summary["deployed_cost"]
  if "feature_flops" in cost:
    return cost["feature_flops"]
  return data_lib.transform_flops(summary.get("features", "pixels"),
                                  data_lib.IMAGE_SHAPES[summary["dataset"]])


def model_name(summary: dict) -> str:
  """The fixed network a run trained, or the cell of its genotype."""
  if summary.get("model"):
    return summary["model"]
  genotype = summary.get("genotype")
  if not genotype:
    return ""
  return "cell: " + ", ".join(f"({to},{src}) {op}"
                              for to, src, op in genotype["edges"])


def per_round(workdir, field: str) -> list[float]:
  """`field` of each round's metrics line in a run's workdir."""
  return [record[field] for record in Workdir(workdir).metrics()]


def monitor_curve(workdir) -> list[float]:
  """The monitor split's accuracy after each round of a run's workdir."""
  return per_round(workdir, "monitor_accuracy")


def superseded_section(name: str, rows: list[dict]) -> list[str]:
  """A table's closing lines listing its superseded rows (kept in NAME.json,
  not comparable), or none."""
  old = [r for r in rows if r.get("superseded")]
  if not old:
    return []
  return ["", f"## Superseded rows (not comparable; kept in {name}.json)", "",
          *[f"- {DATASET_LABEL[r['dataset']]}, {r['setting']}, {r['method']}:"
            f" {100 * r['test_accuracy']:.2f} % at ε {r['epsilon_total']} —"
            f" {r['superseded_why']}" for r in old]]


def commands_section(name: str, rows: list[dict], label) -> list[str]:
  """A table's closing lines: the command of each current row, introduced
  by `label(row)`, then its superseded rows."""
  return ["", "Commands:", "",
          *[f"- {label(r)}: `{r['command']}`" for r in rows
            if not r.get("superseded")],
          *superseded_section(name, rows)]


def _agree(a, b) -> bool:
  if isinstance(a, float) and isinstance(b, float):
    return math.isclose(a, b, rel_tol=1e-6)
  return a == b


def current_row(rows: list[dict], like: dict) -> dict | None:
  """The row on record (not superseded) that measures what `like` does,
  whatever model its first seed found."""
  fields = [k for k in _KEY if k != "model"]
  return next((r for r in rows if not r.get("superseded") and all(
      r.get(k) == like.get(k) for k in fields)), None)


def check_extension(old: dict | None, like: dict, seeds: list[int],
                    same: tuple[str, ...] = ()) -> None:
  """Raises ConfigError unless `seeds` can join `old`: a row on record,
  none of its seeds, and every field of SAME + `same` that both give
  agreeing (a table checks what it knows before any run, and again with the
  finished row; a field the old row lacks predates its record)."""
  label = f"{like.get('dataset')}, {like.get('method')}"
  if old is None:
    raise ConfigError(f"--extend: no row on record for {label}; run its"
                      " first seeds without --extend")
  again = sorted(set(seeds) & set(old["seeds"]))
  if again:
    raise ConfigError(f"--extend: {label} already holds seeds {again}")
  for field in SAME + same:
    if field in like and field in old and not _agree(old[field],
                                                     like[field]):
      raise ConfigError(
          f"--extend: {label} on record has {field}={old[field]!r},"
          f" these runs {like[field]!r}: not the same configuration, so not"
          " seeds of one row")


def extend_row(old: dict, new: dict, per_seed: tuple[str, ...] = (),
               same: tuple[str, ...] = ()) -> dict:
  """`old` with `new`'s seeds added: per-seed fields (PER_SEED +
  `per_seed`) joined, accuracy over all seeds, wall times summed, every
  commit and host kept once, and the commands that rebuild it in order.
  The model stays the first seed's, as for seeds run together."""
  check_extension(old, new, new["seeds"], same)
  row = dict(old)
  for field in PER_SEED + per_seed:
    row[field] = old.get(field, []) + new.get(field, [])
  row.update(seeds_summary(row["test_accuracies"]))
  row["wall_time_s"] = old["wall_time_s"] + new["wall_time_s"]
  row["commit"] = " ".join(sorted(set(old["commit"].split())
                                  | set(new["commit"].split())))
  row["command"] = f"{old['command']} && {new['command']}"
  row["hardware"] = HOST_SEPARATOR.join(dict.fromkeys(
      hosts(old["hardware"]) + hosts(new["hardware"])))
  return row


def hosts(hardware: str) -> list[str]:
  """The hosts a row's `hardware` names, first seen first.

  A host's own name holds "; " inside its parentheses ("cpu x1 (cpu; host
  ..., 2 cores)"), so only a separator outside them divides two hosts."""
  names, depth, start = [], 0, 0
  for i, char in enumerate(hardware):
    depth += {"(": 1, ")": -1}.get(char, 0)
    if depth == 0 and hardware.startswith(HOST_SEPARATOR, i):
      names.append(hardware[start:i])
      start = i + len(HOST_SEPARATOR)
  return names + [hardware[start:]]


def read(name: str) -> list[dict]:
  path = RESULTS / f"{name}.json"
  return json.loads(path.read_text()) if path.exists() else []


def write(name: str, new_rows: list[dict], render) -> list[dict]:
  """Merges `new_rows` into NAME.json and rewrites NAME.md with `render`.

  `render(rows) -> str` draws the whole table from every row on record.
  """
  for row in new_rows:
    missing = [field for field in REQUIRED if field not in row]
    if missing:
      raise ValueError(f"results row lacks {missing}: {row}")
  key = lambda row: tuple(row.get(k) for k in _KEY)
  fresh = {key(r) for r in new_rows}
  return _save(name, [r for r in read(name) if key(r) not in fresh]
               + new_rows, render)


def _save(name: str, rows: list[dict], render) -> list[dict]:
  RESULTS.mkdir(parents=True, exist_ok=True)
  (RESULTS / f"{name}.json").write_text(json.dumps(rows, indent=1) + "\n")
  (RESULTS / f"{name}.md").write_text(render(rows))
  return rows


def extend(name: str, new_row: dict, render, per_seed: tuple[str, ...] = (),
           same: tuple[str, ...] = ()) -> list[dict]:
  """Adds `new_row`'s seeds to the row on record that measures the same
  configuration (`extend_row`), in place, and rewrites NAME.md."""
  rows = read(name)
  old = current_row(rows, new_row)
  merged = extend_row(old, new_row, per_seed, same)
  rows[rows.index(old)] = merged
  return _save(name, rows, render)
