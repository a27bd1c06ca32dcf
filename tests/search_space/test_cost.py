"""Op cost table, expected cost, the budget's hard constraint, the penalty."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fedsearch import search_space as ss
from fedsearch.errors import ConfigError
from fedsearch.nas import base as nas_base
from fedsearch.search_space import cost

_SHAPE = (8, 8, 1)


@functools.lru_cache(maxsize=None)
def _table():
  space = ss.SearchSpace(channels=4, nodes=2, cells=2, head="flatten")
  return space, cost.build_cost_table(space, _SHAPE, latency_batch=4,
                                      repeats=3)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_child_parameters_are_the_table_sum_exactly(seed):
  space, table = _table()
  choices = np.asarray(jax.random.randint(
      jax.random.key(seed), (space.num_edges,), 0, len(space.op_names)))
  genotype = nas_base.choices_genotype(choices, space)
  measured = cost.measure_model(space, genotype, _SHAPE, latency_batch=4,
                                repeats=1)
  assert table.child_cost(choices, "params") == measured["params"]
  # FLOPs add up too, up to the node sums the table does not count.
  assert table.child_cost(choices, "flops") == pytest.approx(
      measured["flops"], rel=0.15)


def test_expected_cost_of_one_hot_logits_is_the_child_cost():
  space, table = _table()
  choices = np.array([4, 0, 1])
  logits = jnp.where(jax.nn.one_hot(choices, len(space.op_names)) > 0, 0.0,
                     -1e9)
  for metric in cost.METRICS:
    assert float(table.expected_cost({"normal": logits}, metric)) == (
        pytest.approx(table.child_cost(choices, metric), rel=1e-5))


def test_penalty_gradient_moves_probability_to_cheaper_ops():
  space, table = _table()
  penalty = cost.cost_penalty(table, "params", space.num_edges, weight=1.0)
  arch = {"normal": jnp.zeros((space.num_edges, len(space.op_names)))}
  grad = np.asarray(jax.grad(penalty)(arch)["normal"])
  params = np.asarray(table.per_op["params"])
  # Descending the gradient raises the logits of parameter-free ops.
  assert np.all(grad[:, params == 0] < 0) and np.all(grad[:, params > 0] > 0)
  assert 0 < float(penalty(arch)) <= 1.0


def test_budget_is_a_hard_constraint_on_the_deployed_child():
  space, table = _table()
  names = space.op_names
  arch = {"normal": jax.random.normal(jax.random.key(0),
                                      (space.num_edges, len(names)))}
  most_likely = nas_base.genotype_choices(
      nas_base.most_likely_child(arch, space), space)
  budget = table.fixed["params"] + 60.0  # Room for one small conv at most.
  fitted = cost.fit_budget(most_likely, arch, table, "params", budget, space)
  assert table.child_cost(fitted, "params") <= budget
  # A child within budget is left as it is.
  np.testing.assert_array_equal(
      cost.fit_budget(fitted, arch, table, "params", budget, space), fitted)
  with pytest.raises(ConfigError, match="nas.cost_budget"):
    cost.fit_budget(most_likely, arch, table, "params",
                    table.fixed["params"] - 1, space)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_the_tightest_budget_keeps_the_child_connected_to_its_input(seed):
  space, table = _table()
  names = space.op_names
  # Logits favouring `none` everywhere but where it is cheapest to keep an
  # op: the greedy swaps would otherwise end at an all-`none` (constant)
  # child, which has the fewest parameters.
  logits = jax.random.normal(jax.random.key(seed),
                             (space.num_edges, len(names)))
  logits = logits.at[:, names.index("none")].add(3.0)
  arch = {"normal": logits}
  start = np.full(space.num_edges, names.index("conv_3x3")
                  if "conv_3x3" in names else len(names) - 1)
  fitted = cost.fit_budget(start, arch, table, "params",
                           table.fixed["params"], space)
  assert table.child_cost(fitted, "params") <= table.fixed["params"]
  assert space.reaches_a_node(fitted)


def test_table_round_trips_through_json_and_metric_is_checked():
  _, table = _table()
  assert cost.CostTable.from_json(table.to_json()) == table
  with pytest.raises(ConfigError, match="nas.cost_metric='energy'"):
    cost.check_metric("energy")


def test_table_measures_each_cell_at_its_own_resolution():
  """With the strided layout the cells see 12x12 and 4x4 maps (not 28x28
  and 14x14): the table's per-op sum matches the measured child."""
  space = ss.SearchSpace(channels=4, nodes=1, cells=2, head="flatten",
                         stem="strided", reduction="strided_conv", hidden=8)
  shape = (28, 28, 1)
  table = cost.build_cost_table(space, shape, latency_batch=2, repeats=1)
  choices = np.array([space.op_names.index("sep_conv_3x3_tanh")])
  measured = cost.measure_model(
      space, nas_base.choices_genotype(choices, space), shape,
      latency_batch=2, repeats=1)
  assert table.child_cost(choices, "params") == measured["params"]
  assert table.child_cost(choices, "flops") == pytest.approx(
      measured["flops"], rel=0.05)
