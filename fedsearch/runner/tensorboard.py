"""TensorBoard event files beside `metrics.jsonl`.

Written with tensorboardX (protobuf only: no TensorFlow in the install);
`tensorboard --logdir WORKDIR/tensorboard` shows every numeric field of
each round's metrics line (monitor loss and accuracy, ε spent, learning
rates, clip bounds, rewards, hyperparameter gains) and, while searching,
the architecture distribution per edge (`architecture/edge{e}/{op}`) and
the hyperparameter search's distribution over its pool
(`hyperparameters/config{j}`). `metrics.jsonl` stays the record: when a run resumes, its event files are
rewritten from the metrics lines kept (cut back to the last checkpoint's
round), so they never hold a round twice. In a multi-process run only
process 0 writes.
"""

import pathlib
import shutil

import jax
from tensorboardX import SummaryWriter

FOLDER = "tensorboard"
ARCHITECTURE = "architecture_probabilities"
HYPERPARAMETERS = "hp_probabilities"


def scalars(record: dict, op_names: tuple[str, ...]) -> dict[str, float]:
  """The TensorBoard scalars of one metrics line."""
  out = {}
  for key, value in record.items():
    if key != "round" and isinstance(value, (int, float)) and not isinstance(
        value, bool):
      out[key] = float(value)
  for edge, row in enumerate(record.get(ARCHITECTURE) or []):
    for op, p in zip(op_names, row):
      out[f"architecture/edge{edge}/{op}"] = float(p)
  for config, p in enumerate(record.get(HYPERPARAMETERS) or []):
    out[f"hyperparameters/config{config}"] = float(p)
  return out


class EventLog:
  """The run's event files, rebuilt from `records` when it starts."""

  def __init__(self, workdir, op_names: tuple[str, ...],
               records: list[dict]):
    self.op_names = op_names
    self.writer = None
    if jax.process_index() != 0:
      return
    folder = pathlib.Path(workdir) / FOLDER
    shutil.rmtree(folder, ignore_errors=True)
    self.writer = SummaryWriter(str(folder))
    for record in records:
      self.add(record)

  def add(self, record: dict) -> None:
    if self.writer is None:
      return
    for tag, value in scalars(record, self.op_names).items():
      self.writer.add_scalar(tag, value, record["round"])
    self.writer.flush()

  def close(self) -> None:
    if self.writer is not None:
      self.writer.close()
