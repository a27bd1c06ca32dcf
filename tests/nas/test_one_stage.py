"""Direct federated NAS with DSNAS's estimator: the gate, the estimator's
expectation, and only the sampled child's ops computed."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from fedsearch import federated as fed
from fedsearch import nas
from fedsearch import search_space as ss
from fedsearch.nas import one_stage
from fedsearch.privacy import mechanisms

_SHAPE = (8, 8, 1)


def _space():
  return ss.SearchSpace(channels=4, nodes=2, cells=2, head="flatten")


def _exact_expectations(logits, loss_of_gate):
  """E_k[ĝ(k)] (enumerated) and the gradients it is compared with."""
  arch = {"normal": logits[None]}
  p = jax.nn.softmax(logits)
  estimates = []
  for k in range(len(logits)):
    choice = jnp.array([k])
    grad = jax.grad(lambda a: loss_of_gate(
        k, one_stage.gated_one_hot(a, choice)[0, k]))(arch)["normal"][0]
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
  w = one_stage.gated_one_hot(arch, choices)
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
  # one-hot would run every op's convolutions unconditionally. (One cell:
  # tracing the supernet's per-example gradients is the cost.)
  space = ss.SearchSpace(channels=4, nodes=2, cells=1, head="flatten")
  strategy = nas.make_strategy("one_stage", space)
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
  fixed = convs(ss.derived_model(space, skips).apply,
                ss.extract_weights(weights, space, skips, _SHAPE))
  assert convs(strategy.model.apply, weights) == fixed
  assert convs(ss.supernet_model(space).apply, weights) > 5 * fixed


def test_one_stage_starts_from_uniform_op_probabilities():
  # DSNAS starts uniform: the first children are drawn without preference.
  space = _space()
  arch = nas.make_strategy("one_stage", space).init(jax.random.key(0))
  np.testing.assert_array_equal(
      arch["normal"], np.zeros((space.num_edges, len(space.op_names))))


def test_joint_architecture_step_is_the_mean_over_the_expected_train_batch():
  # The joint step reads the train batch, so its architecture part (and with
  # it the cost penalty and the weight decay, which are added to that mean)
  # must be a mean over q·n_train, not over the validation normaliser (which
  # stays 1.0 when nothing reads validation batches: the old defect, which
  # made both terms act q·n times too weakly).
  space = ss.SearchSpace(channels=4, nodes=2, cells=1, head="flatten",
                         num_classes=3)
  strategy = nas.make_strategy("one_stage", space)
  mechanism = mechanisms.local()
  weights = ss.init_supernet(space, jax.random.key(0), _SHAPE)
  arch = {"normal": jax.random.normal(jax.random.key(1),
                                      (space.num_edges, len(space.op_names)))}
  n = 6
  batch = fed.Batches(jax.random.normal(jax.random.key(2), (n, *_SHAPE)),
                      jnp.arange(n) % 3, jnp.zeros(n, bool))
  expected_train = 4.0
  context = nas.ArchContext(
      model=strategy.model, loss=mechanisms.softmax_cross_entropy,
      mechanism=mechanism, weight_gradient=None,
      arch_optimizer=optax.sgd(1.0), clip_norm=1e3, arch_clip_norm=1e2,
      noise_multiplier=0.0, clipping="flat", gamma=0.01,
      key=jax.random.key(3),
      expected_batch=jnp.array([expected_train, 1.0, 1.0]))
  step = strategy.arch_step(context)
  _, arch_sum = jax.jit(step.gradients)(weights, arch, batch,
                                        jax.random.key(4))
  new_arch, _ = jax.jit(step.after_weights)(step.init(arch, None), arch,
                                            arch_sum)
  # Nothing is clipped (huge bounds), so the released sum is the plain sum
  # of per-example architecture gradients of the step's child.
  child_loss = lambda a: jnp.sum(mechanisms.softmax_cross_entropy(
      strategy.model.apply(weights, a, batch.x, jax.random.key(4)), batch.y))
  want_sum = jax.grad(child_loss)(arch)["normal"]
  chex.assert_trees_all_close(arch_sum["normal"], want_sum, rtol=1e-4,
                              atol=1e-6)
  chex.assert_trees_all_close(
      new_arch["normal"], arch["normal"] - want_sum / expected_train,
      rtol=1e-4, atol=1e-6)
