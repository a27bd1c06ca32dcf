"""Architecture search strategies behind one protocol (`NasStrategy`), by name.

Adding a strategy: one new module with a `make(space) -> NasStrategy` and its
`TRAITS`, and one line in `STRATEGIES`.
"""

from fedsearch.errors import ConfigError
from fedsearch.nas import darts as _darts
from fedsearch.nas import one_stage as _one_stage
from fedsearch.nas import reinforce as _reinforce
from fedsearch.nas.base import ArchContext
from fedsearch.nas.base import ArchStep
from fedsearch.nas.base import NasStrategy
from fedsearch.nas.base import Traits
from fedsearch.nas.base import choices_genotype
from fedsearch.nas.base import genotype_choices
from fedsearch.nas.base import weights_only
from fedsearch.nas.reinforce import RewardBaseline

# name -> (builder(space), traits), keyed by `nas.strategy`.
STRATEGIES = {
    "darts": (_darts.darts, _darts.TRAITS),
    "one_stage": (_one_stage.one_stage, _one_stage.TRAITS),
    "reinforce": (_reinforce.reinforce, _reinforce.TRAITS),
}


def _entry(name: str):
  if name not in STRATEGIES:
    raise ConfigError(f"nas.strategy={name!r} is not allowed; choose one of"
                      f" {sorted(STRATEGIES)}")
  return STRATEGIES[name]


def traits(name: str) -> Traits:
  """A strategy's static traits, without building it."""
  return _entry(name)[1]


def make_strategy(name: str, space, unit: str = "example") -> NasStrategy:
  """`unit`: the unit of privacy (`privacy.unit`); under "client" a
  controller keeps its rewards on the client (see `nas.reinforce`)."""
  builder = _entry(name)[0]
  if unit == "client" and traits(name).controller:
    return builder(space, client_level=True)
  return builder(space)


__all__ = ["ArchContext", "ArchStep", "NasStrategy", "RewardBaseline",
           "STRATEGIES", "Traits", "choices_genotype", "genotype_choices",
           "make_strategy", "traits", "weights_only"]
