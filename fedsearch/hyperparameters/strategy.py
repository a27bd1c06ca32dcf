"""Hyperparameter-search strategies by name (`hpo.strategy`).

Adding one: a module with a `strategy(...) -> Strategy` and one entry here.
"""

from fedsearch.errors import ConfigError
from fedsearch.hyperparameters import feathers, fedex, random_search
from fedsearch.hyperparameters.base import Strategy

# name -> builder(hpo config) ; "none" searches nothing.
STRATEGIES = {
    "none": lambda h: None,
    "feathers": lambda h: feathers.strategy(h.period, h.gamma, h.alpha,
                                            h.explore_aggregates),
    "fedex": lambda h: fedex.strategy(h.fedex_step),
    "random": lambda h: random_search.strategy(),
}


def make_strategy(hpo) -> Strategy | None:
  """The strategy `hpo.strategy` names, from the `hpo` config fields."""
  if hpo.strategy not in STRATEGIES:
    raise ConfigError(f"hpo.strategy={hpo.strategy!r} is not allowed; choose"
                      f" one of {list(STRATEGIES)}")
  return STRATEGIES[hpo.strategy](hpo)
