"""Hyperparameter-search strategies by name (`hpo.strategy`).

Adding one: a module with a `strategy(...) -> Strategy` and one entry here.
"""

import jax.numpy as jnp

from fedsearch.errors import ConfigError
from fedsearch.hyperparameters import feathers, feedback, fedex, random_search
from fedsearch.hyperparameters.base import Strategy
from fedsearch.hyperparameters.exploration import EXPLORATION_STEPS

# hpo.reward: what a client's gain measures. "client": its own update (the
# methods as published); "round": the round's released model, every client
# of a round on one configuration (`federated.algorithm`'s docstring).
REWARDS = ("client", "round")

# name -> builder(hpo config, the federation's client count); "none"
# searches nothing.
STRATEGIES = {
    "none": lambda h, num_clients: None,
    "feathers": lambda h, num_clients: feathers.strategy(
        h.period, h.gamma, h.alpha, h.explore_aggregates, h.feathers_memory,
        h.feathers_exploration, h.explore_share),
    "fedex": lambda h, num_clients: fedex.strategy(h.fedex_step),
    "random": lambda h, num_clients: random_search.strategy(
        h.random_estimate, num_clients, h.random_halving_rounds),
}


def one_configuration_per_round(strategy: Strategy) -> Strategy:
  """`strategy` with the configuration it draws for the round's first client
  given to all of them: a round's released model then measures one
  configuration, which a gain of that model can credit."""
  def choose(state, key, num_clients):
    state, ids, aggregate = strategy.choose(state, key, num_clients)
    return state, jnp.full_like(ids, ids[0]), aggregate
  return strategy._replace(choose=choose)


def make_strategy(hpo, num_clients: int = 0) -> Strategy | None:
  """The strategy `hpo.strategy` names, from the `hpo` config fields
  (`num_clients`: the federation's, which a blocked estimate needs)."""
  if hpo.strategy not in STRATEGIES:
    raise ConfigError(f"hpo.strategy={hpo.strategy!r} is not allowed; choose"
                      f" one of {list(STRATEGIES)}")
  if hpo.reward not in REWARDS:
    raise ConfigError(f"hpo.reward={hpo.reward!r} is not allowed; choose one"
                      f" of {list(REWARDS)}")
  if hpo.feedback_measure not in feedback.MEASURES:
    raise ConfigError(f"hpo.feedback_measure={hpo.feedback_measure!r} is not"
                      f" allowed; choose one of {list(feedback.MEASURES)}")
  if (hpo.reward == "round" and hpo.strategy == "feathers"
      and not hpo.explore_aggregates):
    raise ConfigError("hpo.reward='round' measures the released model, which"
                      " FEATHERS's exploration rounds keep unchanged unless"
                      " hpo.explore_aggregates=True")
  if hpo.feathers_memory not in feathers.MEMORIES:
    raise ConfigError(f"hpo.feathers_memory={hpo.feathers_memory!r} is not"
                      f" allowed; choose one of {list(feathers.MEMORIES)}")
  if hpo.feathers_exploration not in feathers.EXPLORATIONS:
    raise ConfigError(
        f"hpo.feathers_exploration={hpo.feathers_exploration!r} is not"
        f" allowed; choose one of {list(feathers.EXPLORATIONS)}")
  if not 0.0 < hpo.explore_share <= 1.0:
    raise ConfigError(f"hpo.explore_share={hpo.explore_share} must lie in"
                      " (0, 1]")
  if hpo.feathers_exploration == "client" and hpo.reward == "round":
    raise ConfigError("hpo.feathers_exploration='client' leaves explorers out"
                      " of the released model, whose one configuration a"
                      " round reward measures; use hpo.reward='client'")
  if hpo.exploration_step not in EXPLORATION_STEPS:
    raise ConfigError(f"hpo.exploration_step={hpo.exploration_step!r} is not"
                      f" allowed; choose one of {list(EXPLORATION_STEPS)}")
  if hpo.exploration_step == "incumbent" and hpo.reward == "round":
    raise ConfigError("hpo.exploration_step='incumbent' rescales the released"
                      " update, whose gain a round reward measures; use"
                      " hpo.reward='client' or hpo.exploration_step='own'")
  if hpo.random_estimate not in random_search.ESTIMATES:
    raise ConfigError(f"hpo.random_estimate={hpo.random_estimate!r} is not"
                      f" allowed; choose one of {list(random_search.ESTIMATES)}")
  if hpo.random_estimate == "blocked" and (hpo.strategy != "random"
                                          or hpo.reward != "client"):
    raise ConfigError("hpo.random_estimate='blocked' is read by random search"
                      " with client gains only (a round reward gives every"
                      " client of a round one configuration, which the round"
                      " block would absorb); set hpo.strategy='random' and"
                      " hpo.reward='client', or hpo.random_estimate='mean'")
  if hpo.random_halving_rounds < 0:
    raise ConfigError(f"hpo.random_halving_rounds={hpo.random_halving_rounds}"
                      " is not allowed; choose 0 (no halving) or a positive"
                      " number of search rounds per rung")
  if hpo.random_halving_rounds and (hpo.strategy != "random"
                                    or hpo.random_estimate != "mean"):
    raise ConfigError("hpo.random_halving_rounds is read by random search"
                      " with the mean estimate only; set hpo.strategy="
                      "'random' and hpo.random_estimate='mean', or"
                      " hpo.random_halving_rounds=0")
  strategy = STRATEGIES[hpo.strategy](hpo, num_clients)
  if strategy is not None and hpo.reward == "round":
    strategy = one_configuration_per_round(strategy)
  return strategy
