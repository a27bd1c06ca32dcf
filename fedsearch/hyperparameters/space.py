"""Hyperparameter spaces as data, and reproducible pools of configurations.

A space is a tuple of `Hyperparameter`s, each with a range and a scale:
`log` draws 10^U(log10 low, log10 high), `uniform` draws U(low, high),
`categorical` draws uniformly from `choices`. FEATHERS searches over a fixed
pool of configurations drawn once from the space; `draw_pool` makes that pool
from a seed alone, so it is public (it depends on no data). `make_pool` with
size 0 takes instead every combination of categorical choices (`grid_pool`):
a small pool that is sure to hold a given recipe's values.
"""

import dataclasses
import itertools
import math
from collections.abc import Mapping, Sequence

import numpy as np

from fedsearch.errors import ConfigError

SCALES = ("log", "uniform", "categorical")


@dataclasses.dataclass(frozen=True)
class Hyperparameter:
  name: str
  scale: str
  low: float = 0.0
  high: float = 0.0
  choices: tuple = ()

  def __post_init__(self):
    field = f"hyperparameters.{self.name}"
    if self.scale not in SCALES:
      raise ConfigError(f"{field}.scale={self.scale!r} is not allowed; choose"
                        f" one of {list(SCALES)}")
    if self.scale == "categorical":
      if not self.choices:
        raise ConfigError(f"{field}.choices must list at least one value")
      return
    if not (math.isfinite(self.low) and math.isfinite(self.high)
            and self.low <= self.high):
      raise ConfigError(f"{field} needs finite low <= high, got"
                        f" [{self.low}, {self.high}]")
    if self.scale == "log" and self.low <= 0:
      raise ConfigError(f"{field}: a log scale needs low > 0, got {self.low}")

  def draw(self, rng: np.random.Generator, size: int) -> np.ndarray:
    if self.scale == "categorical":
      return np.asarray(self.choices)[rng.integers(len(self.choices), size=size)]
    if self.scale == "log":
      return 10.0 ** rng.uniform(math.log10(self.low), math.log10(self.high), size)
    return rng.uniform(self.low, self.high, size)


def space_from_dict(spec: Mapping[str, Mapping]) -> tuple[Hyperparameter, ...]:
  """{name: {scale, low, high | choices}} -> space, with field-named errors."""
  space = []
  for name, entry in spec.items():
    unknown = set(entry) - {"scale", "low", "high", "choices"}
    if unknown:
      raise ConfigError(f"hyperparameters.{name}: unknown keys {sorted(unknown)};"
                        " allowed: scale, low, high, choices")
    space.append(Hyperparameter(name, entry.get("scale", ""),
                                float(entry.get("low", 0.0)),
                                float(entry.get("high", 0.0)),
                                tuple(entry.get("choices", ()))))
  return tuple(space)


def draw_pool(space: Sequence[Hyperparameter], size: int,
              seed: int) -> dict[str, np.ndarray]:
  """`size` configurations, column-wise: {name: (size,) values}."""
  if size < 1:
    raise ConfigError(f"hyperparameters pool size must be >= 1, got {size}")
  rng = np.random.default_rng([seed, 0x4850])  # A stream of its own.
  return {h.name: h.draw(rng, size) for h in space}


def grid_pool(space: Sequence[Hyperparameter]) -> dict[str, np.ndarray]:
  """Every combination of the (all categorical) choices, the first name
  varying slowest: {name: (∏ choices,) values}."""
  drawn = [h.name for h in space if h.scale != "categorical"]
  if drawn or not space:
    raise ConfigError("hpo.pool_size=0 (the grid) needs a non-empty hpo.space"
                      " whose every entry is categorical; not categorical:"
                      f" {drawn}")
  rows = list(itertools.product(*(h.choices for h in space)))
  return {h.name: np.asarray([row[i] for row in rows], np.float64)
          for i, h in enumerate(space)}


def make_pool(space: Sequence[Hyperparameter], size: int,
              seed: int) -> dict[str, np.ndarray]:
  """`draw_pool(space, size, seed)`, or for size 0 the grid of choices."""
  return grid_pool(space) if size == 0 else draw_pool(space, size, seed)


def pool_size(pool: Mapping[str, np.ndarray]) -> int:
  return len(next(iter(pool.values())))


def configured_pool(hpo: Mapping, seed: int) -> dict[str, np.ndarray]:
  """The pool a run's `hpo` config section (a dict) and seed make."""
  return make_pool(space_from_dict(hpo["space"]), hpo["pool_size"], seed)


def pool_labels(pool: Mapping[str, np.ndarray]) -> list[str]:
  """'name value, ...' for each configuration of `pool`."""
  return [", ".join(f"{name} {values[j]:.3g}" for name, values in pool.items())
          for j in range(pool_size(pool))]
