"""Pictures of a run, drawn from its workdir (matplotlib, no display needed).

  curves.png        monitor accuracy and loss, and ε spent, per round
  architecture.png  while searching: each edge's distribution over ops per
                    round (a heatmap per edge)
  cell.png          the found cell as a graph: node 0 is the cell's input,
                    the output concatenates the computed nodes
  hyperparameters.png  with a hyperparameter search: its distribution over
                    the pool's configurations per round (a heatmap)

`draw(workdir)` writes whichever apply and returns their paths; the main job
calls it when a run finishes, `python -m experiments.report WORKDIR` on any
finished or partial workdir. They read only `metrics.jsonl`,
`genotype.json` and `summary.json`, outputs of the run.
"""

import json
import math
import pathlib

import matplotlib

matplotlib.use("Agg")  # Files only: no display, whatever the machine has.
from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
import numpy as np

from fedsearch import hyperparameters as hp_lib
from fedsearch.runner import tensorboard
from fedsearch.runner.workdir import Workdir
from fedsearch.search_space import ops
from fedsearch.search_space.genotype import Genotype


def draw_curves(metrics: list[dict], path: pathlib.Path) -> None:
  rounds = [m["round"] for m in metrics]
  fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
  left.plot(rounds, [m["monitor_accuracy"] for m in metrics], color="C0",
            label="accuracy")
  left.set_xlabel("round")
  left.set_ylabel("monitor accuracy", color="C0")
  left.set_ylim(0, 1)
  loss_axis = left.twinx()
  loss_axis.plot(rounds, [m["monitor_loss"] for m in metrics], color="C1",
                 label="loss")
  loss_axis.set_ylabel("monitor loss", color="C1")
  left.set_title("server's monitor split")
  spent = [m["epsilon"] for m in metrics]
  if all(e is not None and math.isfinite(e) for e in spent):
    right.plot(rounds, spent, color="C2")
    right.set_title("privacy budget spent")
  else:  # privacy.epsilon=inf: nothing is accounted.
    right.set_title("no privacy (privacy.epsilon=inf)")
  right.set_xlabel("round")
  right.set_ylabel("ε spent")
  right.set_ylim(bottom=0)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def _per_round(metrics: list[dict], key: str):
  """(values stacked over the rounds that logged `key`, those rounds), or
  None when no round did."""
  logged = [m for m in metrics if m.get(key)]
  if not logged:
    return None
  return np.array([m[key] for m in logged]), [m["round"] for m in logged]


def draw_architecture(metrics: list[dict], op_names: tuple[str, ...],
                      path: pathlib.Path) -> bool:
  """Heatmaps of p(op | edge) over the search rounds; False if none."""
  series = _per_round(metrics, tensorboard.ARCHITECTURE)
  if series is None:
    return False
  probs, rounds = series
  edges = probs.shape[1]
  fig, axes = plt.subplots(1, edges, figsize=(3.2 * edges + 1.5, 3.6),
                           squeeze=False)
  for e, axis in enumerate(axes[0]):
    image = axis.imshow(probs[:, e, :].T, aspect="auto", cmap="viridis",
                        vmin=0, vmax=probs.max(), interpolation="nearest",
                        extent=(rounds[0] - 0.5, rounds[-1] + 0.5,
                                len(op_names) - 0.5, -0.5))
    axis.set_yticks(range(len(op_names)))
    axis.set_yticklabels(op_names if e == 0 else [], fontsize=7)
    axis.set_xlabel("round")
    axis.set_title(f"edge {e}")
  fig.colorbar(image, ax=axes[0].tolist(), label="p(op) (scale up to the"
               " largest)")
  fig.savefig(path, dpi=110, bbox_inches="tight")
  plt.close(fig)
  return True


def draw_hyperparameters(metrics: list[dict], labels: list[str],
                         path: pathlib.Path) -> bool:
  """Heatmap of p(configuration) over the rounds; False if none."""
  series = _per_round(metrics, tensorboard.HYPERPARAMETERS)
  if series is None:
    return False
  probs, rounds = series
  fig, axis = plt.subplots(figsize=(7.5, 1.2 + 0.28 * probs.shape[1]))
  image = axis.imshow(probs.T, aspect="auto", cmap="viridis", vmin=0,
                      interpolation="nearest",
                      extent=(rounds[0] - 0.5, rounds[-1] + 0.5,
                              probs.shape[1] - 0.5, -0.5))
  axis.set_yticks(range(probs.shape[1]))
  axis.set_yticklabels(labels[:probs.shape[1]], fontsize=7)
  axis.set_xlabel("round")
  axis.set_title("hyperparameter search: p(configuration)")
  fig.colorbar(image, ax=axis, label="probability")
  fig.savefig(path, dpi=110, bbox_inches="tight")
  plt.close(fig)
  return True


def draw_cell(genotype: Genotype, path: pathlib.Path) -> None:
  """Nodes on a line left to right, each kept edge an arc with its op."""
  nodes = genotype.nodes
  fig, axis = plt.subplots(figsize=(2.2 * (nodes + 2), 3.6))
  xs = list(range(nodes + 2))  # input, computed nodes, output
  names = ["input"] + [f"node {n}" for n in range(1, nodes + 1)] + ["output"]
  for x, name in zip(xs, names):
    axis.annotate(name, (x, 0), ha="center", va="center", fontsize=9,
                  bbox={"boxstyle": "round", "fc": "#dde8f5", "ec": "C0"})
  top = 0.5
  for to, src, op in genotype.edges:
    # An arc of curvature `bend` over a span d peaks bend·d/2 above the line.
    bend = 0.25 + 0.2 * (to - src - 1)
    peak = bend * (to - src) / 2
    axis.annotate("", (to, 0), (src, 0),
                  arrowprops={"arrowstyle": "->", "color": "C1",
                              "connectionstyle": f"arc3,rad=-{bend}",
                              "shrinkA": 18, "shrinkB": 18})
    axis.text((to + src) / 2, peak + 0.04, op, ha="center", fontsize=8,
              color="C1")
    top = max(top, peak + 0.3)
  for n in range(1, nodes + 1):  # Every computed node feeds the output.
    axis.annotate("", (nodes + 1, 0), (n, 0),
                  arrowprops={"arrowstyle": "->", "color": "0.6",
                              "connectionstyle": "arc3,rad=0.3",
                              "shrinkA": 18, "shrinkB": 18})
  axis.set_xlim(-0.6, nodes + 1.6)
  axis.set_ylim(-0.15 * nodes - 0.35, top)
  axis.axis("off")
  axis.set_title(f"found cell ({genotype.op_set} ops; concat → output)")
  fig.savefig(path, dpi=110, bbox_inches="tight")
  plt.close(fig)


def draw(workdir) -> list[pathlib.Path]:
  """Every picture that `workdir`'s files allow; their paths."""
  workdir = pathlib.Path(workdir)
  metrics = Workdir(workdir).metrics()
  written = []
  if metrics:
    draw_curves(metrics, workdir / "curves.png")
    written.append(workdir / "curves.png")
  genotype = _genotype(workdir)
  op_set = genotype.op_set if genotype else _op_set(workdir)
  if op_set and draw_architecture(metrics, ops.op_names(op_set),
                                  workdir / "architecture.png"):
    written.append(workdir / "architecture.png")
  if genotype is not None:
    draw_cell(genotype, workdir / "cell.png")
    written.append(workdir / "cell.png")
  if draw_hyperparameters(metrics, _pool_labels(workdir),
                          workdir / "hyperparameters.png"):
    written.append(workdir / "hyperparameters.png")
  return written


def _genotype(workdir: pathlib.Path) -> Genotype | None:
  """The found genotype, or the one a finished retraining trained (its
  summary holds it; the file stays with the search)."""
  genotype_file, summary_file = (workdir / "genotype.json",
                                 workdir / "summary.json")
  if genotype_file.exists():
    return Genotype.from_json(genotype_file.read_text())
  if summary_file.exists():
    summary = json.loads(summary_file.read_text())
    if not summary.get("model"):
      return Genotype.from_json(json.dumps(summary["genotype"]))
  return None


def _pool_labels(workdir: pathlib.Path) -> list[str]:
  """'j: name value, ...' per configuration of the run's pool (redrawn
  from its config: the pool is a function of the space, size and seed)."""
  config_file = workdir / "config.json"
  if not config_file.exists():
    return []
  config = json.loads(config_file.read_text())
  hpo = config.get("hpo", {})
  if hpo.get("strategy", "none") == "none":
    return []
  return [f"{j}: {label}" for j, label in enumerate(
      hp_lib.pool_labels(hp_lib.configured_pool(hpo, config["seed"])))]


def _op_set(workdir: pathlib.Path) -> str | None:
  config = workdir / "config.json"
  if not config.exists():
    return None
  return json.loads(config.read_text())["space"]["op_set"]
