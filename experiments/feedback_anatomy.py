r"""What a random-search run's released client gains are made of.

Reads the per-client feedback a search run logs in its search rounds
(`hp_client_gains`, `hp_client_configurations`, `hp_clients`,
`hp_client_weights` in metrics.jsonl; all released or public, so reading
them costs no ε) and prints, per run:

  - the share of the gains' variance (R² of least-squares fits with an
    intercept) that round, client and configuration indicators explain,
    alone and nested: what the rest leaves is the clients' own training
    noise plus the feedback's privacy noise;
  - the configuration each of random search's estimates
    (`hpo.random_estimate`) chooses from the same gains, replayed through
    the library's own strategies: the choice a run with that estimate would
    have made, had its search phase been the same.

  python -m experiments.feedback_anatomy --runs=WORKDIR[,WORKDIR...]

Used for experiments/README.md, "Why random search's choice varies".
"""

import json
import pathlib
from collections.abc import Sequence
from typing import NamedTuple

from absl import app
from absl import flags
import numpy as np

from fedsearch.hyperparameters import random_search
from fedsearch.hyperparameters import space

FACTOR_SETS = (("round",), ("client",), ("configuration",),
               ("round", "client"), ("round", "client", "configuration"))

_RUNS = flags.DEFINE_list("runs", None, "Search run workdirs to read.")


class Feedback(NamedTuple):
  """One row per client slot of every search round that released gains."""
  round: np.ndarray
  client: np.ndarray
  configuration: np.ndarray
  gain: np.ndarray
  weight: np.ndarray


def read_feedback(records: Sequence[dict]) -> Feedback:
  """The real (weight > 0) client slots of the rounds that logged gains."""
  rows = [r for r in records if "hp_client_gains" in r]
  if not rows:
    raise ValueError("no round logs hp_client_gains: the run predates the"
                     " per-client feedback records, or did not search")
  columns = [np.concatenate([np.full(len(r["hp_client_gains"]), r["round"])
                             for r in rows])]
  columns += [np.concatenate([np.asarray(r[key]) for r in rows])
              for key in ("hp_clients", "hp_client_configurations",
                          "hp_client_gains", "hp_client_weights")]
  feedback = Feedback(*columns)
  real = feedback.weight > 0
  return Feedback(*(column[real] for column in feedback))


def explained_share(feedback: Feedback, factors: Sequence[str]) -> float:
  """R² of the gains on an intercept and the factors' indicators."""
  design = [np.ones((len(feedback.gain), 1))]
  for factor in factors:
    levels = getattr(feedback, factor)
    design.append((levels[:, None] == np.unique(levels)[None]).astype(float))
  design = np.concatenate(design, axis=1)
  fit, *_ = np.linalg.lstsq(design, feedback.gain, rcond=None)
  residual = feedback.gain - design @ fit
  return float(1.0 - residual.var() / feedback.gain.var())


def replay_choices(records: Sequence[dict], pool_size: int,
                   num_clients: int) -> dict[str, int]:
  """The configuration each estimate chooses from the logged rounds."""
  choices = {}
  for estimate in random_search.ESTIMATES:
    strategy = random_search.strategy(estimate, num_clients=num_clients)
    state = strategy.init(pool_size)
    for r in records:
      if "hp_client_gains" in r:
        state = strategy.update(
            state, np.asarray(r["hp_client_configurations"]),
            np.asarray(r["hp_client_gains"], np.float32),
            np.asarray(r["hp_client_weights"], np.float32), True,
            np.asarray(r["hp_clients"]))
    choices[estimate] = int(strategy.best(state))
  return choices


def describe(workdir: pathlib.Path) -> str:
  config = json.loads((workdir / "config.json").read_text())
  records = [json.loads(line) for line in
             (workdir / "metrics.jsonl").read_text().splitlines() if line]
  feedback = read_feedback(records)
  labels = space.pool_labels(space.configured_pool(config["hpo"],
                                                   config["seed"]))
  lines = [f"{workdir}: {len(feedback.gain)} gains, sd"
           f" {feedback.gain.std():.4f}"]
  lines += [f"  R² {' + '.join(factors):34s}"
            f" {explained_share(feedback, factors):.3f}"
            for factors in FACTOR_SETS]
  choices = replay_choices(records, len(labels),
                           config["federated"]["num_clients"])
  lines += [f"  {estimate:8s} estimate chooses ({labels[j]})"
            for estimate, j in choices.items()]
  return "\n".join(lines)


def main(argv):
  del argv
  if not _RUNS.value:
    raise app.UsageError("--runs: name at least one search run workdir")
  for run in _RUNS.value:
    print(describe(pathlib.Path(run)))


if __name__ == "__main__":
  app.run(main)
