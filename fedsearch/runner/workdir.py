"""A run's working directory: atomic files, per-round checkpoints, metrics.

Layout:
  config.json        the configuration the run was started with
  secret_key         the run's secret randomness (owner-only; secret mode)
  privacy_events.json  every release of the run (and of earlier stages it
                     composes), for a later stage's accountant
  checkpoints/<r>/   server state after r finished rounds (orbax)
  genotype.json      the derived genotype, once the search phase is over
  metrics.jsonl      one line per finished round
  deployed_weights/  the derived model's weights as the search left them
                     (before any training rounds), with genotype.json
  final_weights/     the derived model's weights (orbax), at the end
  summary.json       written last: its presence marks a finished run
Every file is written under a temporary name and renamed, and orbax
finalises a checkpoint by renaming its directory, so an interrupted run
never leaves a half-written file that looks complete.
"""

import json
import math
import os
import pathlib

import jax
import orbax.checkpoint as ocp

from fedsearch.errors import ConfigError
from fedsearch.privacy import randomness


def write_atomic(path: pathlib.Path, text: str) -> None:
  tmp = path.with_name(path.name + ".tmp")
  tmp.write_text(text)
  os.replace(tmp, path)


GENOTYPE_FILE = "genotype.json"
# Every release the run makes (its plan, known before round one), which a
# later stage on the same data composes into its own accountant.
PRIVACY_EVENTS_FILE = "privacy_events.json"

class Workdir:
  """A run's folder. Opening it writes nothing; `start` writes the run's
  config and secret once the run is known to be valid."""

  def __init__(self, path):
    self.path = pathlib.Path(path).absolute()
    if self.path.exists() and not self.path.is_dir():
      raise ConfigError(f"--workdir={path} is a file, not a folder; name a"
                        " new or existing folder")
    self._checkpoints = None

  def check_config(self, config_json: str) -> None:
    """Refuses a workdir that holds a run of another configuration."""
    config_file = self.path / "config.json"
    if config_file.exists() and (
        json.loads(config_file.read_text()) != json.loads(config_json)):
      raise ConfigError(
          f"workdir {self.path} holds a run with a different configuration;"
          " use a new --workdir or the same flags as that run")

  def start(self, config_json: str, run_randomness: randomness.Randomness,
            checkpoint_every: int, privacy_events_json: str) -> None:
    """Writes the config, the secret (first start) and the privacy events,
    and opens the checkpoints."""
    self.check_config(config_json)
    self.path.mkdir(parents=True, exist_ok=True)
    if run_randomness.mode == "secret" and randomness.read_secret(
        self.path) is None:
      randomness.write_secret(self.path, run_randomness.entropy)
    config_file = self.path / "config.json"
    if not config_file.exists():
      write_atomic(config_file, config_json)
    write_atomic(self.path / PRIVACY_EVENTS_FILE, privacy_events_json)
    self._checkpoints = ocp.CheckpointManager(
        self.path / "checkpoints",
        options=ocp.CheckpointManagerOptions(
            max_to_keep=2, save_interval_steps=checkpoint_every,
            enable_async_checkpointing=False))

  @property
  def summary_file(self) -> pathlib.Path:
    return self.path / "summary.json"

  @property
  def genotype_file(self) -> pathlib.Path:
    return self.path / GENOTYPE_FILE

  def checkpointed_rounds(self) -> list[int]:
    """Rounds with a finished checkpoint, latest first."""
    return sorted(self._checkpoints.all_steps(), reverse=True)

  def discard_checkpoint(self, rounds_done: int) -> None:
    """Removes a damaged checkpoint, so that the round is saved anew."""
    self._checkpoints.delete(rounds_done)
    self._checkpoints.reload()

  def save_state(self, rounds_done: int, state, force: bool = False) -> None:
    self._checkpoints.save(rounds_done, args=ocp.args.StandardSave(state),
                           force=force)

  def restore_state(self, rounds_done: int, like):
    return self._checkpoints.restore(
        rounds_done, args=ocp.args.StandardRestore(
            jax.tree.map(ocp.utils.to_shape_dtype_struct, like)))

  def metrics(self) -> list[dict]:
    path = self.path / "metrics.jsonl"
    if not path.exists():
      return []
    return [json.loads(line) for line in path.read_text().splitlines() if line]

  def write_metrics(self, records: list[dict]) -> None:
    # Rewritten whole, atomically: a crash mid-write cannot leave a torn line.
    write_atomic(self.path / "metrics.jsonl", "".join(
        json.dumps(finite_json(m), allow_nan=False) + "\n" for m in records))

  def save_weights(self, which: str, weights) -> None:
    """Writes `{which}_weights/` (which: deployed | final)."""
    target = self.path / f"{which}_weights"
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(target, weights, force=True)
    checkpointer.wait_until_finished()

  def close(self) -> None:
    self._checkpoints.wait_until_finished()
    self._checkpoints.close()


def load_weights(path, like, which: str = "final"):
  """Restores weights written by `save_weights` into `like`'s structure."""
  return ocp.StandardCheckpointer().restore(
      pathlib.Path(path).absolute() / f"{which}_weights",
      jax.tree.map(ocp.utils.to_shape_dtype_struct, like))


def finite_json(value):
  """`value` with every non-finite float replaced by None: strict JSON
  parsers reject NaN and Infinity."""
  if isinstance(value, float):
    return value if math.isfinite(value) else None
  if isinstance(value, dict):
    return {k: finite_json(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [finite_json(v) for v in value]
  return value
