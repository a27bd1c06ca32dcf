"""Architecture search strategies: sampled child == derived model, the
DSNAS estimator's expectation, only the sampled ops computed, one protocol."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fedsearch import search_space as ss
from fedsearch.errors import ConfigError
from fedsearch.search_space import strategies

_SHAPE = (8, 8, 1)


def _space(op_set="dpnas"):
  return ss.SearchSpace(op_set=op_set, channels=4, nodes=2, cells=2,
                        head="flatten",
                        max_in_edges=2 if op_set == "darts" else 0)


@pytest.mark.parametrize("op_set", ["dpnas", "darts"])
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_sampled_child_equals_the_derived_model_of_its_genotype(op_set, seed):
  space = _space(op_set)
  keys = jax.random.split(jax.random.key(seed), 4)
  weights = ss.init_supernet(space, keys[0], _SHAPE)
  arch = ss.init_arch_params(space, scale=2.0, key=keys[1])
  x = jax.random.normal(keys[2], (5, *_SHAPE))
  strategy = strategies.one_stage(space)
  sampled = strategy.apply(weights, arch, x, keys[3])
  genotype = strategies.choices_genotype(
      strategies.sample_choices(arch, keys[3]), space)
  derived = ss.derived_model(space, genotype).apply(
      {"params": ss.extract_weights(weights, space, genotype, _SHAPE)}, x)
  chex.assert_trees_all_close(sampled, derived, atol=1e-5)


def test_deployed_child_is_the_most_likely_one_and_predict_runs_it():
  space = _space()
  names = space.op_names
  logits = np.zeros((space.num_edges, len(names)), np.float32)
  want = ["sep_conv_3x3_tanh", "none", "avg_pool_3x3"]
  for e, op in enumerate(want):
    logits[e, names.index(op)] = 3.0
  arch = {"normal": jnp.asarray(logits)}
  strategy = strategies.one_stage(space)
  genotype = strategy.derive(arch)
  # `none` wins edge (2, 0): the edge is dropped, not replaced.
  assert genotype.edges == ((1, 0, "sep_conv_3x3_tanh"),
                            (2, 1, "avg_pool_3x3"))
  weights = ss.init_supernet(space, jax.random.key(0), _SHAPE)
  x = jax.random.normal(jax.random.key(1), (3, *_SHAPE))
  derived = ss.derived_apply(space, genotype)(
      ss.extract_weights(weights, space, genotype, _SHAPE), None, x)
  chex.assert_trees_all_close(strategy.predict(weights, arch, x), derived,
                              atol=1e-5)


def _exact_expectations(logits, loss_of_gate):
  """E_k[ĝ(k)] (enumerated) and the gradients it is compared with."""
  arch = {"normal": logits[None]}
  p = jax.nn.softmax(logits)
  estimates = []
  for k in range(len(logits)):
    choice = jnp.array([k])
    grad = jax.grad(lambda a: loss_of_gate(
        k, strategies.gated_one_hot(a, choice)[0, k]))(arch)["normal"][0]
    estimates.append(grad)
  expected_estimate = jnp.einsum("k,ko->o", p, jnp.stack(estimates))
  expected_loss = lambda l: sum(
      jax.nn.softmax(l)[k] * loss_of_gate(k, 1.0) for k in range(len(logits)))
  dloss_dgate = lambda l: sum(
      jax.nn.softmax(l)[k] * jax.grad(lambda g: loss_of_gate(k, g))(1.0)
      for k in range(len(logits)))
  return (expected_estimate, jax.grad(expected_loss)(logits),
          jax.grad(dloss_dgate)(logits))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_dsnas_estimator_is_unbiased_for_a_loss_linear_in_the_gate(seed):
  keys = jax.random.split(jax.random.key(seed))
  logits = jax.random.normal(keys[0], (5,))
  c = jax.random.normal(keys[1], (5,))  # L(k, g) = g·c_k
  estimate, true_grad, _ = _exact_expectations(logits, lambda k, g: g * c[k])
  chex.assert_trees_all_close(estimate, true_grad, atol=1e-6)


def test_dsnas_estimator_bias_for_a_nonlinear_loss_is_the_documented_one():
  logits = jnp.array([0.3, -1.0, 0.5, 0.0])
  c = jnp.array([2.0, -1.0, 0.5, 3.0])
  loss = lambda k, g: (g * c[k] - 1.0) ** 2  # Not linear in the gate.
  estimate, true_grad, first_order = _exact_expectations(logits, loss)
  # Unbiased for ∇ E_k[∂L/∂g at g=1] (the first-order credit) ...
  chex.assert_trees_all_close(estimate, first_order, atol=1e-6)
  # ... which is not ∇ E_k[L]: the bias is real and documented.
  assert float(jnp.max(jnp.abs(estimate - true_grad))) > 0.1


def test_the_gate_is_exactly_one_in_the_forward_pass():
  arch = {"normal": jax.random.normal(jax.random.key(0), (3, 10)) * 5}
  choices = jnp.array([0, 4, 9])
  w = strategies.gated_one_hot(arch, choices)
  np.testing.assert_array_equal(np.asarray(w), np.eye(10)[[0, 4, 9]])


def _convs_outside_branches(jaxpr):
  """Contractions (convolutions, dense) that run whatever a `cond` picks."""
  count = 0
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == "dot_general":
      count += 1
    elif eqn.primitive.name != "cond":
      count += sum(_convs_outside_branches(sub)
                   for sub in jax.extend.core.jaxprs_in_params(eqn.params))
  return count


def test_per_example_gradients_of_a_sampled_child_compute_only_its_ops():
  # The choice is one per client step, shared by the examples, so vmapped
  # over examples the op switch stays a `cond`: outside its branches only
  # the contractions every child has (stem, cell preprocessing, classifier)
  # remain, as many as in a child whose edges are all skip connections
  # (which contract nothing themselves). A mixture masked by a
  # one-hot would run every op's convolutions unconditionally.
  space = _space()
  strategy = strategies.one_stage(space)
  weights = ss.init_supernet(space, jax.random.key(0), _SHAPE)
  arch = strategy.init(jax.random.key(1))
  x = jnp.zeros((4, 1, *_SHAPE))

  def per_example_grads(apply):
    return jax.vmap(jax.grad(
        lambda w, a, xi: apply(w, a, xi, jax.random.key(2)).sum(),
        argnums=(0, 1)), in_axes=(None, None, 0))

  def convs(apply, w):
    return _convs_outside_branches(
        jax.make_jaxpr(per_example_grads(apply))(w, arch, x).jaxpr)

  skips = ss.Genotype(space.op_set, space.nodes, tuple(
      (to, src, "skip_connect") for to, src in space.edges))
  fixed = convs(ss.derived_apply(space, skips),
                ss.extract_weights(weights, space, skips, _SHAPE))
  assert convs(strategy.apply, weights) == fixed
  assert convs(ss.supernet_apply(space), weights) > 5 * fixed


def test_child_mask_marks_exactly_the_parameters_the_child_uses():
  space = _space()
  weights = ss.init_supernet(space, jax.random.key(0), _SHAPE)
  arch = ss.init_arch_params(space, scale=2.0, key=jax.random.key(1))
  key = jax.random.key(2)
  mask = strategies.one_stage(space).active_weights(weights, arch, key)
  x = jax.random.normal(jax.random.key(3), (2, *_SHAPE))
  grads = jax.grad(lambda w: jnp.sum(
      strategies.one_stage(space).apply(w, arch, x, key) ** 2))(weights)
  for active, grad in zip(jax.tree.leaves(mask), jax.tree.leaves(grads)):
    if not active:  # Unused parameters have exactly zero gradient ...
      assert not np.any(np.asarray(grad))
  # ... and the used ones are marked (some have nonzero gradient).
  used = [bool(np.any(np.asarray(g))) for g in jax.tree.leaves(grads)]
  assert all(m for m, u in zip(jax.tree.leaves(mask), used) if u)
  assert 0 < sum(map(bool, jax.tree.leaves(mask))) < len(used)


def test_strategies_share_one_protocol_and_names_are_checked():
  space = _space()
  for name in strategies.STRATEGIES:
    strategy = ss.make_strategy(name, space)
    assert isinstance(strategy, ss.SearchStrategy)
    arch = strategy.init(jax.random.key(0))
    assert arch["normal"].shape == (space.num_edges, len(space.op_names))
  with pytest.raises(ConfigError, match="nas.strategy='enas'.*darts"):
    ss.make_strategy("enas", space)


@pytest.mark.parametrize("advantage", [0.0, 0.3, -1.2])
def test_policy_loss_gradient_is_reinforce_with_an_entropy_bonus(advantage):
  space = _space()
  strategy = strategies.reinforce(space, entropy_weight=0.1)
  arch = ss.init_arch_params(space, scale=1.0, key=jax.random.key(0))
  choices = strategies.sample_choices(arch, jax.random.key(1))
  grad = jax.grad(strategy.reinforce.policy_loss)(
      arch, choices, jnp.float32(advantage))["normal"]
  p = jax.nn.softmax(arch["normal"], -1)
  log_p = jnp.log(p)
  score = jax.nn.one_hot(choices, p.shape[-1]) - p  # ∇ log π(k)
  entropy_grad = -p * (log_p - jnp.sum(p * log_p, -1, keepdims=True))
  chex.assert_trees_all_close(grad, -advantage * score - 0.1 * entropy_grad,
                              atol=1e-6)


def test_controller_finds_the_rewarded_child_from_noisy_rewards():
  """Toy: reward = share of edges on a target op, noised; REINFORCE with the
  clients' bias-corrected baseline finds the target within 300 steps."""
  import optax  # pylint: disable=g-import-not-at-top
  from fedsearch.federated import client  # pylint: disable=g-import-not-at-top
  space = _space()
  strategy = strategies.reinforce(space)
  target = jnp.arange(space.num_edges) % len(space.op_names)
  opt = optax.adam(0.05, b1=0.5)

  def step(carry, key):
    arch, state, baseline = carry
    sample_key, noise_key = jax.random.split(key)
    choices = strategy.reinforce.sample(arch, sample_key)
    reward = (jnp.mean(choices == target)
              + 0.1 * jax.random.normal(noise_key, ()))
    advantage = reward - client.baseline_value(baseline, reward)
    g = jax.grad(strategy.reinforce.policy_loss)(arch, choices, advantage)
    updates, state = opt.update(g, state, arch)
    return (optax.apply_updates(arch, updates), state,
            client.update_baseline(baseline, reward, 0.99)), reward

  arch = strategy.init(jax.random.key(0))
  (arch, _, baseline), rewards = jax.lax.scan(
      step, (arch, opt.init(arch), client.init_reward_baseline()),
      jax.random.split(jax.random.key(1), 300))
  np.testing.assert_array_equal(np.argmax(arch["normal"], -1), target)
  assert float(jnp.mean(rewards[-50:])) > 0.8 > float(jnp.mean(rewards[:50]))
  assert float(baseline["weight"]) == pytest.approx(1 - 0.99**300, rel=1e-4)
