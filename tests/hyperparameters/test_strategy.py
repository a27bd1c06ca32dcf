"""Hyperparameter strategies by name, from the `hpo` config, behind one protocol."""

import re

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.configs import default
from fedsearch import hyperparameters as hp
from fedsearch.errors import ConfigError
from fedsearch.hyperparameters import base


def _hpo(strategy, **fields):
  hpo = default.get_config().hpo
  hpo.strategy = strategy
  hpo.update(fields)
  return hpo


def _gains(ids):
  # Configuration 3 always gains most; every other one loses (by its id).
  return jnp.where(ids == 3, 1.0, -0.1 * (ids + 1).astype(jnp.float32))


@pytest.mark.parametrize("name", ["feathers", "fedex", "random"])
def test_strategies_share_one_interface_and_find_the_best(name):
  strategy = hp.make_strategy(_hpo(name, period=4, gamma=1.0))
  assert isinstance(strategy, hp.Strategy)
  state = strategy.init(5)
  flags = []
  for r in range(8):
    state, ids, aggregate = strategy.choose(state, jax.random.key(r), 4)
    assert ids.shape == (4,) and aggregate.dtype == jnp.bool_
    assert np.all((np.asarray(ids) >= 0) & (np.asarray(ids) < 5))
    # FEATHERS exploits (aggregates the best's updates) when not exploring.
    exploits = bool(aggregate) and not bool(getattr(state, "exploring",
                                                    False))
    if name == "feathers":
      assert bool(aggregate) == exploits  # The paper's: exploring measures.
    flags.append(exploits)
    if name == "feathers" and exploits:
      assert list(ids) == [3] * 4  # Exploitation runs the best.
    state = strategy.update(state, ids, _gains(ids), jnp.ones(4), aggregate)
    # With these keys configuration 3 is drawn in round 0 by every
    # strategy, so from then on it is the best one (checked for the seed).
    assert int(strategy.best(state)) == 3, (r, ids)
  if name == "feathers":
    # Phases start every `period` rounds and last round(γ·H) rounds: 2 at
    # the uniform start (round(ln 5) = 2), then 1 as p concentrates on 3.
    assert flags == [False, False, True, True, False, True, True, True]
  else:
    assert all(flags)


def test_hpo_fields_reach_the_strategy():
  # FEATHERS: γ = 0 leaves no exploration round; α = 1 sets the rewards to
  # the round's gains; by default (the paper's) exploration rounds keep
  # their updates off the model, explore_aggregates=True keeps them.
  never = hp.make_strategy(_hpo("feathers", gamma=0.0))
  state, _, aggregate = never.choose(never.init(3), jax.random.key(0), 2)
  assert bool(aggregate) and not bool(state.exploring)
  greedy = hp.make_strategy(_hpo("feathers", alpha=1.0))
  state, _, aggregate = greedy.choose(greedy.init(3), jax.random.key(0), 2)
  assert bool(state.exploring) and not bool(aggregate)
  state = greedy.update(state, jnp.array([1, 1]), jnp.array([0.4, 0.2]),
                        jnp.ones(2), aggregate)
  chex.assert_trees_all_close(state.rewards, jnp.array([0.0, 0.3, 0.0]))
  kept = hp.make_strategy(_hpo("feathers", explore_aggregates=True))
  state, _, aggregate = kept.choose(kept.init(3), jax.random.key(0), 2)
  assert bool(state.exploring) and bool(aggregate)
  # FedEx: a zero step keeps θ uniform; its default step moves it.
  frozen = hp.make_strategy(_hpo("fedex", fedex_step=0.0))
  moved = hp.make_strategy(_hpo("fedex"))
  args = (jnp.array([0, 1]), jnp.array([1.0, 0.0]), jnp.ones(2),
          jnp.bool_(True))
  chex.assert_trees_all_close(frozen.update(frozen.init(2), *args).probs,
                              jnp.full(2, 0.5))
  assert float(moved.update(moved.init(2), *args).probs[0]) > 0.6
  # Random search: the blocked estimate holds normal equations over the
  # federation's clients and the pool.
  blocked = hp.make_strategy(_hpo("random", random_estimate="blocked"),
                             num_clients=4)
  assert blocked.init(3).normal.shape == (7, 7)
  # Successive halving keeps which configurations survive.
  halving = hp.make_strategy(_hpo("random", random_halving_rounds=5))
  assert halving.init(3).alive.shape == (3,)


def test_none_searches_nothing():
  assert hp.make_strategy(_hpo("none")) is None
  assert set(hp.STRATEGIES) == {"none", "feathers", "fedex", "random"}


def test_unknown_strategy_is_refused():
  with pytest.raises(ConfigError, match=r"hpo\.strategy='grid'.*'feathers'"):
    hp.make_strategy(_hpo("grid"))


def test_per_config_sums_on_hand_numbers():
  # Weighted sums per configuration; a client of weight 0 counts nothing.
  gains, weights = base.per_config_sums(
      jnp.array([0, 2, 0, 1]), jnp.array([1.0, 2.0, 3.0, 100.0]),
      jnp.array([0.5, 1.0, 2.0, 0.0]), 4)
  chex.assert_trees_all_close(gains, jnp.array([6.5, 0.0, 2.0, 0.0]))
  chex.assert_trees_all_close(weights, jnp.array([2.5, 0.0, 1.0, 0.0]))


@pytest.mark.parametrize("name", ["feathers", "fedex", "random"])
def test_choose_and_update_jit_equal_eager(name):
  strategy = hp.make_strategy(_hpo(name, period=4, gamma=1.0))

  def round_(state, key):
    state, ids, aggregate = strategy.choose(state, key, 4)
    state = strategy.update(state, ids, _gains(ids), jnp.ones(4), aggregate)
    return state, ids, aggregate, strategy.best(state)

  state = strategy.init(5)
  with jax.disable_jit():
    eager = round_(state, jax.random.key(2))
  chex.assert_trees_all_close(jax.jit(round_)(state, jax.random.key(2)),
                              eager, rtol=1e-6)


@pytest.mark.parametrize("name", ["feathers", "fedex", "random"])
def test_round_reward_gives_every_client_of_a_round_one_configuration(name):
  strategy = hp.make_strategy(_hpo(name, reward="round", gamma=6.0,
                                   explore_aggregates=True))
  state = strategy.init(10)
  drawn = set()
  for round_ in range(8):
    state, ids, _ = strategy.choose(state, jax.random.key(round_), 7)
    assert ids.shape == (7,) and len(set(np.asarray(ids).tolist())) == 1
    drawn.add(int(ids[0]))
  # Still drawn by the strategy, not fixed: exploration visits several.
  assert len(drawn) > 1
  published = hp.make_strategy(_hpo(name, gamma=6.0))
  _, ids, _ = published.choose(published.init(10), jax.random.key(0), 7)
  assert len(set(np.asarray(ids).tolist())) > 1


@pytest.mark.parametrize("fields,named", [
    ({"reward": "model"}, "hpo.reward='model' is not allowed"),
    ({"exploration_step": "best"}, "hpo.exploration_step='best' is not"
     " allowed; choose one of ['own', 'incumbent']"),
    ({"exploration_step": "incumbent", "reward": "round"},
     "use hpo.reward='client' or hpo.exploration_step='own'"),
    ({"strategy": "feathers", "reward": "round", "explore_aggregates": False},
     "hpo.explore_aggregates=True"),
    ({"feedback_measure": "accuracy"}, "hpo.feedback_measure='accuracy' is"
     " not allowed; choose one of ['loss', 'error', 'soft_error', 'brier']"),
    ({"strategy": "feathers", "feathers_exploration": "half"},
     "hpo.feathers_exploration='half' is not allowed; choose one of"
     " ['round', 'client']"),
    ({"strategy": "feathers", "explore_share": 0.0},
     "hpo.explore_share=0.0 must lie in (0, 1]"),
    ({"strategy": "feathers", "feathers_exploration": "client",
      "reward": "round", "explore_aggregates": True},
     "use hpo.reward='client'"),
    ({"strategy": "feathers", "feathers_memory": "ema"},
     "hpo.feathers_memory='ema' is not allowed; choose one of ['decay',"
     " 'mean']"),
    ({"strategy": "random", "random_estimate": "median"},
     "hpo.random_estimate='median' is not allowed; choose one of ['mean',"
     " 'blocked']"),
    ({"strategy": "fedex", "random_estimate": "blocked"},
     "set hpo.strategy='random' and hpo.reward='client'"),
    ({"strategy": "random", "random_estimate": "blocked", "reward": "round"},
     "set hpo.strategy='random' and hpo.reward='client'"),
    ({"strategy": "random", "random_halving_rounds": -1},
     "hpo.random_halving_rounds=-1 is not allowed; choose 0"),
    ({"strategy": "fedex", "random_halving_rounds": 5},
     "hpo.strategy='random' and hpo.random_estimate='mean'"),
    ({"strategy": "random", "random_estimate": "blocked",
      "random_halving_rounds": 5},
     "hpo.strategy='random' and hpo.random_estimate='mean'")])
def test_bad_reward_settings_are_named(fields, named):
  with pytest.raises(ConfigError, match=re.escape(named)):
    hp.make_strategy(_hpo(fields.pop("strategy", "fedex"), **fields))
