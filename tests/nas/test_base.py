"""The NAS strategy protocol and registry, and what the sampled-children
strategies share: the sampled child is a derived model, the deployed child
is the most likely one, only the child's parameters are marked active."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fedsearch import nas
from fedsearch import search_space as ss
from fedsearch.errors import ConfigError
from fedsearch.nas import base

_SHAPE = (8, 8, 1)
_SAMPLED = ["one_stage", "reinforce"]  # Strategies whose steps run a child.


def _space(op_set="dpnas"):
  return ss.SearchSpace(op_set=op_set, channels=4, nodes=2, cells=2,
                        head="flatten",
                        max_in_edges=2 if op_set == "darts" else 0)


@pytest.mark.parametrize("name", sorted(nas.STRATEGIES))
def test_each_registered_strategy_builds_with_its_traits_and_runs(name):
  space = _space()
  builder, traits = nas.STRATEGIES[name]
  strategy = nas.make_strategy(name, space)
  assert strategy.name == name
  assert strategy.traits == traits == nas.traits(name)
  assert builder(space).traits == traits
  arch = strategy.init(jax.random.key(0))
  assert arch["normal"].shape == (space.num_edges, len(space.op_names))
  # What is deployed is a genotype of this space.
  genotype = strategy.derive(arch)
  assert isinstance(genotype, ss.Genotype)
  ss.check_genotype(genotype, space)
  weights = ss.init_supernet(space, jax.random.key(1), _SHAPE)
  x = jax.random.normal(jax.random.key(2), (3, *_SHAPE))
  # Shapes only: traced, not run.
  assert jax.eval_shape(strategy.predict, weights, arch, x).shape == (
      3, space.num_classes)
  assert jax.eval_shape(strategy.model.apply, weights, arch, x,
                        jax.random.key(3)).shape == (3, space.num_classes)
  # The server-carried state is something the metrics line can report.
  assert set(strategy.metrics(strategy.init_state())) <= {"reward_baseline"}


def test_traits_tell_the_round_how_to_run_each_strategy():
  # These decide the round's program; a wrong one silently changes results.
  assert nas.traits("darts")[:4] == (False, True, True, False)
  assert nas.traits("one_stage")[:4] == (True, False, False, False)
  assert nas.traits("reinforce")[:4] == (False, False, True, True)


@pytest.mark.parametrize("lookup", [
    lambda name: nas.make_strategy(name, _space()), nas.traits],
    ids=["make_strategy", "traits"])
def test_an_unknown_strategy_is_refused_with_the_allowed_names(lookup):
  with pytest.raises(ConfigError,
                     match=r"nas.strategy='enas'.*\['darts', 'one_stage', "
                           r"'reinforce'\]"):
    lookup("enas")


@pytest.mark.parametrize("name,op_set,seed", [
    *[("one_stage", op_set, seed) for op_set in ("dpnas", "darts")
      for seed in range(4)],
    # The same children (`sampled_children`), with a plain one-hot gate.
    ("reinforce", "dpnas", 0), ("reinforce", "darts", 1)])
def test_sampled_child_equals_the_derived_model_of_its_genotype(name, op_set,
                                                                seed):
  space = _space(op_set)
  keys = jax.random.split(jax.random.key(seed), 4)
  weights = ss.init_supernet(space, keys[0], _SHAPE)
  arch = ss.init_arch_params(space, scale=2.0, key=keys[1])
  x = jax.random.normal(keys[2], (5, *_SHAPE))
  strategy = nas.make_strategy(name, space)
  sampled = strategy.model.apply(weights, arch, x, keys[3])
  genotype = nas.choices_genotype(base.sample_choices(arch, keys[3]), space)
  derived = ss.derived_network(space, genotype).apply(
      {"params": ss.extract_weights(weights, space, genotype, _SHAPE)}, x)
  chex.assert_trees_all_close(sampled, derived, atol=1e-5)


def test_choices_and_genotypes_convert_both_ways():
  space = _space()
  names = space.op_names
  choices = np.array([names.index("sep_conv_3x3_tanh"), names.index("none"),
                      names.index("avg_pool_3x3")])
  genotype = nas.choices_genotype(choices, space)
  # `none` drops its edge (2, 0) from the genotype, and comes back as `none`.
  assert genotype.edges == ((1, 0, "sep_conv_3x3_tanh"),
                            (2, 1, "avg_pool_3x3"))
  np.testing.assert_array_equal(nas.genotype_choices(genotype, space), choices)


@pytest.mark.parametrize("name", _SAMPLED)
def test_deployed_child_is_the_most_likely_one_and_predict_runs_it(name):
  space = _space()
  names = space.op_names
  logits = np.zeros((space.num_edges, len(names)), np.float32)
  want = ["sep_conv_3x3_tanh", "none", "avg_pool_3x3"]
  for e, op in enumerate(want):
    logits[e, names.index(op)] = 3.0
  arch = {"normal": jnp.asarray(logits)}
  strategy = nas.make_strategy(name, space)
  genotype = strategy.derive(arch)
  # `none` wins edge (2, 0): the edge is dropped, not replaced.
  assert genotype.edges == ((1, 0, "sep_conv_3x3_tanh"),
                            (2, 1, "avg_pool_3x3"))
  assert genotype == base.most_likely_child(arch, space)
  weights = ss.init_supernet(space, jax.random.key(0), _SHAPE)
  x = jax.random.normal(jax.random.key(1), (3, *_SHAPE))
  derived = ss.derived_model(space, genotype).apply(
      ss.extract_weights(weights, space, genotype, _SHAPE), None, x)
  chex.assert_trees_all_close(strategy.predict(weights, arch, x), derived,
                              atol=1e-5)


@pytest.mark.parametrize("name", _SAMPLED)
def test_child_mask_marks_exactly_the_parameters_the_child_uses(name):
  # One edge: the gradient through the op switch is costly to compile.
  space = ss.SearchSpace(channels=4, nodes=1, cells=1, head="flatten")
  strategy = nas.make_strategy(name, space)
  weights = ss.init_supernet(space, jax.random.key(0), _SHAPE)
  arch = ss.init_arch_params(space, scale=2.0, key=jax.random.key(1))
  key = jax.random.key(2)
  mask = strategy.active_weights(weights, arch, key)
  x = jax.random.normal(jax.random.key(3), (2, *_SHAPE))
  # Jitted: compiling the switch over ops is faster than running it eagerly.
  grads = jax.jit(jax.grad(lambda w: jnp.sum(
      strategy.model.apply(w, arch, x, key) ** 2)))(weights)
  for active, grad in zip(jax.tree.leaves(mask), jax.tree.leaves(grads)):
    if not active:  # Unused parameters have exactly zero gradient ...
      assert not np.any(np.asarray(grad))
  # ... and the used ones are marked (some have nonzero gradient).
  used = [bool(np.any(np.asarray(g))) for g in jax.tree.leaves(grads)]
  assert all(m for m, u in zip(jax.tree.leaves(mask), used) if u)
  assert 0 < sum(map(bool, jax.tree.leaves(mask))) < len(used)


@pytest.mark.parametrize("name", _SAMPLED)
def test_a_child_cut_off_from_its_input_is_reconnected_by_its_likeliest_op(
    name):
  # `none` wins both edges out of the input: the per-edge argmax child
  # would output zeros whatever the image. The input's edge whose best other
  # op is likelier, (2, 0) here, takes that op; the rest stays.
  space = _space()
  names = space.op_names
  logits = np.zeros((space.num_edges, len(names)), np.float32)
  for to, src, op, value in [(1, 0, "none", 3.0), (1, 0, "skip_connect", 1.0),
                             (2, 0, "none", 3.0), (2, 0, "max_pool_3x3", 2.0),
                             (2, 1, "sep_conv_3x3_relu", 3.0)]:
    logits[space.edge_index(to, src), names.index(op)] = value
  genotype = nas.make_strategy(name, space).derive(
      {"normal": jnp.asarray(logits)})
  assert genotype.edges == ((2, 0, "max_pool_3x3"),
                            (2, 1, "sep_conv_3x3_relu"))
