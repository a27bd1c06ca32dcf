"""Start states and the change of model after the search."""

import chex
import jax
import numpy as np
import pytest
from flax import traverse_util

from fedsearch import nas
from fedsearch.runner import build_job, build_phase, states
from tests.runner.test_job import small_config


def test_supernet_state_carries_each_plugins_initial_state():
  job = build_job(small_config(**{"nas.strategy": "reinforce",
                                  "client.optimizer": "hyfree"}))
  state = states.supernet_state(job, build_phase(job))
  assert isinstance(state.nas, nas.RewardBaseline)
  chex.assert_trees_all_equal(state.client_optimizer,
                              job.client_optimizer.init())
  assert set(state.params.arch) == {"normal"}


def test_after_search_keeps_the_childs_weights_and_the_learning_rate():
  job = build_job(small_config(**{"client.optimizer": "hyfree"}))
  supernet = states.supernet_state(job, build_phase(job))
  genotype = states.derive_genotype(job, supernet.params.arch)
  phase = build_phase(job, genotype)
  derived = states.after_search(job, phase, supernet, genotype)
  flat_super = traverse_util.flatten_dict(supernet.params.weights)
  flat_child = traverse_util.flatten_dict(derived.params.weights)
  assert flat_child and set(flat_child) < set(flat_super)
  for path, value in flat_child.items():
    np.testing.assert_array_equal(value, flat_super[path])
  assert derived.params.arch == {} and derived.nas is None
  chex.assert_trees_all_equal(derived.client_optimizer,
                              supernet.client_optimizer)


def test_cost_budget_makes_the_derived_genotype_fit():
  config = small_config(**{"nas.cost_metric": "params",
                           "nas.cost_penalty": 0.1})
  job = build_job(config)
  fixed = job.costs.table.fixed["params"]
  config.nas.cost_budget = fixed + 1  # Only parameter-free ops fit.
  job = build_job(config)
  arch = {"normal": jax.numpy.zeros((job.space.num_edges,
                                     len(job.space.op_names)))}
  genotype = states.derive_genotype(job, arch)
  choices = nas.genotype_choices(genotype, job.space)
  assert job.costs.table.child_cost(choices, "params") <= fixed + 1
  assert states.derive_genotype(build_job(small_config()), arch) == (
      build_job(small_config()).nas.derive(arch))
