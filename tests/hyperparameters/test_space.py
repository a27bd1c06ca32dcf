"""Hyperparameter spaces as data: reproducible pools, field-named errors."""

import chex
import numpy as np
import pytest

from experiments.configs import default
from fedsearch import hyperparameters as hp
from fedsearch.errors import ConfigError


def test_pool_is_reproducible_and_within_ranges():
  # The main job's default space: FEATHERS's ranges.
  space = hp.space_from_dict(default.get_config().hpo.space.to_dict())
  a = hp.draw_pool(space, 200, seed=3)
  b = hp.draw_pool(space, 200, seed=3)
  chex.assert_trees_all_equal(a, b)
  assert not np.array_equal(a["learning_rate"],
                            hp.draw_pool(space, 200, seed=4)["learning_rate"])
  assert np.all((a["learning_rate"] >= 1e-3) & (a["learning_rate"] <= 1e-1))
  assert np.all((a["momentum"] >= 0.6) & (a["momentum"] <= 1.0))
  # Log scale: about half the draws below the geometric midpoint 1e-2.
  assert 0.35 < np.mean(a["learning_rate"] < 1e-2) < 0.65
  # Uniform scale: about half below the arithmetic midpoint 0.8.
  assert 0.35 < np.mean(a["momentum"] < 0.8) < 0.65
  assert set(a) == set(default.get_config().hpo.space)
  assert all(v.shape == (200,) for v in a.values())
  space = hp.space_from_dict({"local_steps": {"scale": "categorical",
                                              "choices": [1, 2, 5]}})
  drawn = hp.draw_pool(space, 50, 0)["local_steps"]
  assert set(drawn) <= {1, 2, 5}
  assert len(set(drawn)) == 3  # 50 draws from 3 choices reach all three.


@pytest.mark.parametrize("spec,field", [
    ({"lr": {"scale": "cubic", "low": 1, "high": 2}}, "hyperparameters.lr.scale"),
    ({"lr": {"scale": "log", "low": 0.0, "high": 1.0}}, "hyperparameters.lr"),
    ({"lr": {"scale": "uniform", "low": 2.0, "high": 1.0}}, "hyperparameters.lr"),
    ({"bs": {"scale": "categorical"}}, "hyperparameters.bs.choices"),
    ({"lr": {"scale": "log", "lo": 1e-3}}, "unknown keys"),
])
def test_bad_spaces_name_the_field(spec, field):
  with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
    hp.space_from_dict(spec)


def test_an_empty_pool_is_refused():
  with pytest.raises(ConfigError, match="pool size"):
    hp.draw_pool(hp.space_from_dict({"lr": {"scale": "uniform", "low": 0.0,
                                            "high": 1.0}}), 0, seed=0)


def test_grid_pool_holds_every_combination_once():
  space = hp.space_from_dict({
      "learning_rate": {"scale": "categorical", "choices": [0.5, 2.0, 8.0]},
      "local_steps": {"scale": "categorical", "choices": [1, 2]}})
  pool = hp.make_pool(space, 0, seed=123)
  assert hp.pool_size(pool) == 6
  pairs = list(zip(pool["learning_rate"], pool["local_steps"]))
  assert pairs == [(0.5, 1), (0.5, 2), (2.0, 1), (2.0, 2), (8.0, 1), (8.0, 2)]
  # A positive size still draws from the seed.
  chex.assert_trees_all_equal(hp.make_pool(space, 4, 7),
                              hp.draw_pool(space, 4, 7))


def test_configured_pool_labels_each_configuration():
  hpo = {"pool_size": 0, "space": {
      "learning_rate": {"scale": "categorical", "choices": [0.5, 2.0]},
      "momentum": {"scale": "categorical", "choices": [0.9]}}}
  assert hp.pool_labels(hp.configured_pool(hpo, seed=0)) == [
      "learning_rate 0.5, momentum 0.9", "learning_rate 2, momentum 0.9"]


def test_grid_pool_needs_categorical_choices():
  space = hp.space_from_dict({
      "learning_rate": {"scale": "log", "low": 0.1, "high": 1.0},
      "momentum": {"scale": "categorical", "choices": [0.0, 0.9]}})
  with pytest.raises(ConfigError, match=r"hpo\.pool_size=0.*learning_rate"):
    hp.make_pool(space, 0, seed=0)
