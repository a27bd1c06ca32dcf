"""DPNAS's controller: the REINFORCE policy gradient, the reward baseline,
the privatised reward released by a client's local update, and a toy
search that finds the rewarded child."""


import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from fedsearch import federated as fed
from fedsearch import nas
from fedsearch import search_space as ss
from fedsearch.nas import base, reinforce
from fedsearch.privacy import mechanisms
from tests import digits

_SHAPE = (8, 8, 1)


def _space():
  return ss.SearchSpace(channels=4, nodes=2, cells=2, head="flatten")


def _context(arch_optimizer, reward, expected_val=4.0):
  """An ArchContext whose mechanism releases `reward` as the mean reward.

  The stub replaces the noised sum of correct predictions, so a test sets
  the advantage exactly; the normaliser is the expected validation batch.
  """
  mechanism = mechanisms.local()._replace(
      noised_sum=lambda total, stddev, key: reward * expected_val)
  return nas.ArchContext(
      model=None, loss=mechanisms.softmax_cross_entropy, mechanism=mechanism,
      weight_gradient=None, arch_optimizer=arch_optimizer, clip_norm=1.0,
      arch_clip_norm=0.1, noise_multiplier=1.0, clipping="flat", gamma=0.01,
      key=jax.random.key(0),
      expected_batch=jnp.array([4.0, expected_val, 1.0]))


def _val_batch(n=3):
  x = jax.random.normal(jax.random.key(5), (n, *_SHAPE))
  return fed.Batches(x, jnp.arange(n) % 10, jnp.zeros(n, bool))


def test_reward_baseline_is_bias_corrected():
  baseline = nas.RewardBaseline.init()
  # No history: the reward is its own baseline (no advantage).
  assert float(baseline.value(jnp.float32(0.7))) == pytest.approx(0.7)
  baseline = baseline.update(jnp.float32(0.7), 0.9)
  # One reward: the corrected average is that reward, not 0.1·0.7.
  assert float(baseline.value(jnp.float32(0.0))) == pytest.approx(0.7)
  baseline = baseline.update(jnp.float32(0.2), 0.9)
  want = (0.9 * 0.1 * 0.7 + 0.1 * 0.2) / (1 - 0.9**2)
  assert float(baseline.value(jnp.float32(0.0))) == pytest.approx(want)
  assert float(baseline.weight) == pytest.approx(1 - 0.9**2)


@pytest.mark.parametrize("advantage", [0.0, 0.3, -1.2])
def test_policy_gradient_is_reinforce_with_an_entropy_bonus(advantage):
  space = _space()
  strategy = reinforce.reinforce(space, entropy_weight=0.1)
  weights = ss.init_supernet(space, jax.random.key(2), _SHAPE)
  arch = ss.init_arch_params(space, scale=1.0, key=jax.random.key(0))
  # Baseline 0.5, so the released reward sets the advantage.
  baseline = nas.RewardBaseline(jnp.float32(0.25), jnp.float32(0.5))
  reward = 0.5 + advantage
  step = strategy.arch_step(_context(optax.sgd(1.0), reward))
  new_arch, (_, new_baseline) = step.before_weights(
      step.init(arch, baseline), weights, arch, _val_batch(),
      jax.random.key(1), 0)
  grad = arch["normal"] - new_arch["normal"]  # SGD at rate 1.
  p = jax.nn.softmax(arch["normal"], -1)
  log_p = jnp.log(p)
  entropy_grad = -p * (log_p - jnp.sum(p * log_p, -1, keepdims=True))
  # ∇ = −A·(onehot(k) − p) − β·∇H for the child k the step sampled: solve
  # for onehot(k), which must be a one-hot row per edge.
  if advantage == 0.0:
    chex.assert_trees_all_close(grad, -0.1 * entropy_grad, atol=1e-6)
  else:
    one_hot = -(grad + 0.1 * entropy_grad) / advantage + p
    choices = jnp.argmax(one_hot, -1)
    chex.assert_trees_all_close(
        one_hot, jax.nn.one_hot(choices, p.shape[-1]), atol=1e-5)
  chex.assert_trees_all_close(new_baseline,
                              baseline.update(jnp.float32(reward), 0.99))


def test_controller_finds_the_rewarded_child_from_noisy_rewards():
  """Toy: reward = share of edges on a target op, noised; REINFORCE with the
  clients' bias-corrected baseline finds the target within 300 steps."""
  space = _space()
  strategy = nas.make_strategy("reinforce", space)
  target = jnp.arange(space.num_edges) % len(space.op_names)
  opt = optax.adam(0.05, b1=0.5)
  weights = ss.init_supernet(space, jax.random.key(2), _SHAPE)
  val = _val_batch(1)

  def step(carry, key):
    arch = carry[0]
    step_key, noise_key = jax.random.split(key)
    # The child the step samples (drawn as the strategy draws it: from the
    # step key folded with 1; were that to change, the reward would no
    # longer follow the child and the search would fail).
    choices = base.sample_choices(arch, jax.random.fold_in(step_key, 1))
    reward = (jnp.mean(choices == target)
              + 0.1 * jax.random.normal(noise_key, ()))
    arch_step = strategy.arch_step(_context(opt, reward))
    arch, state = arch_step.before_weights(carry[1], weights, arch, val,
                                           step_key, 0)
    return (arch, state), reward

  arch = strategy.init(jax.random.key(0))
  init = strategy.arch_step(_context(opt, 0.0)).init(arch,
                                                      strategy.init_state())
  (arch, (_, baseline)), rewards = jax.lax.scan(
      step, (arch, init), jax.random.split(jax.random.key(1), 300))
  np.testing.assert_array_equal(np.argmax(arch["normal"], -1), target)
  assert float(jnp.mean(rewards[-50:])) > 0.8 > float(jnp.mean(rewards[:50]))
  assert float(baseline.weight) == pytest.approx(1 - 0.99**300, rel=1e-4)
  # The metrics line reports the server's baseline.
  assert strategy.metrics(baseline)["reward_baseline"] == pytest.approx(
      float(baseline.sum / baseline.weight))


_digits_splits = digits.federation


def _client_batches(steps):
  """Client 0's Poisson batches for `steps` local steps, and its expected
  (train, validation, feedback) batch sizes."""
  x, y, splits = _digits_splits()
  inputs = fed.round_inputs(
      splits, np.asarray([0]), seed=0, round_=0, steps=steps,
      sampling_rate=0.5, batch_sizes=(24, 32), validation_batches=True,
      train_on_all_local_data=False)
  batches = fed.ClientBatches(
      fed.Batches(x[inputs.train_idx[0]], y[inputs.train_idx[0]],
                  inputs.train_padding[0]),
      fed.Batches(x[inputs.val_idx[0]], y[inputs.val_idx[0]],
                  inputs.val_padding[0]))
  return batches, jnp.asarray(inputs.expected_batch[0])


def _reinforce_step(noise_multiplier, steps=1):
  """One client's local update under the reinforce strategy, per key."""
  space = ss.SearchSpace(channels=4, nodes=1, cells=1)
  strategy = nas.make_strategy("reinforce", space)
  start = fed.ClientState(
      fed.ModelParams(ss.init_supernet(space, jax.random.key(0), _SHAPE),
                      strategy.init(None)),
      None, strategy.init_state())
  local = fed.make_local_update(
      strategy.model, fed.ClientConfig(noise_multiplier=noise_multiplier),
      arch_step=strategy.arch_step,
      reads_validation=strategy.traits.reads_validation,
      active_weights=strategy.active_weights)
  batches, expected = _client_batches(steps)
  real_val = int((~batches.val.padding).sum())
  # Keys in sequence: each key's child is its own program (see round.py).
  run = jax.jit(lambda keys: jax.lax.map(
      lambda key: local(start, batches, key, expected, 0)[0], keys))
  return start, run, float(expected[1]), real_val


def test_reinforce_reward_is_an_accuracy_noised_with_sigma():
  keys = jax.random.split(jax.random.key(0), 128)
  # σ = 0: the released reward is a count of correct rows over the
  # expected batch size (the baseline's first entry is 0.01·R̃).
  _, run, expected, real_val = _reinforce_step(0.0)
  rewards = np.asarray(run(keys).nas.sum) / 0.01
  counts = rewards * expected
  np.testing.assert_allclose(counts, np.round(counts), atol=1e-3)
  assert 0 <= counts.min() and counts.max() <= real_val
  # σ = 40: the spread is σ / expected batch (the Gaussian mechanism on a
  # sum of {0, 1} values), the accuracy's own spread being ≤ 0.5.
  _, run, expected, _ = _reinforce_step(40.0)
  rewards = np.asarray(run(keys).nas.sum) / 0.01
  assert np.std(rewards) == pytest.approx(40.0 / expected, rel=0.2)


@pytest.mark.slow
def test_reinforce_first_step_follows_no_advantage_then_the_policy_moves():
  start, run, _, _ = _reinforce_step(1.0)
  one = run(jax.random.split(jax.random.key(1), 2))
  # Bias-corrected baseline: step one's advantage is 0, and the entropy
  # bonus has no gradient at the uniform policy.
  chex.assert_trees_all_close(one.params.arch, jax.tree.map(
      lambda a: jnp.stack([a, a]), start.params.arch))
  moved = jax.tree.map(lambda new, old: float(jnp.abs(new - old).max()),
                       one.params.weights, start.params.weights)
  assert max(jax.tree.leaves(moved)) > 0
  _, run, _, _ = _reinforce_step(1.0, steps=3)
  three = run(jax.random.split(jax.random.key(1), 2))
  assert float(jnp.abs(three.params.arch["normal"]).max()) > 1e-3
  np.testing.assert_allclose(three.nas.weight, 1 - 0.99**3, rtol=1e-5)


def test_client_level_rewards_stay_on_the_client():
  """Under client-level DP the controller carries no server state, its
  rewards are not noised (the client-level mechanism's scalar release
  raises, so the update runs only if the rewards never reach it) and its
  policy steps move α inside the delta that the mechanism clips."""
  space = ss.SearchSpace(channels=4, nodes=1, cells=1)
  strategy = nas.make_strategy("reinforce", space, unit="client")
  assert strategy.init_state() is None
  start = fed.ClientState(
      fed.ModelParams(ss.init_supernet(space, jax.random.key(0), _SHAPE),
                      strategy.init(None)), None, None)
  batches, expected = _client_batches(3)
  local = fed.make_local_update(
      strategy.model, fed.ClientConfig(arch_learning_rate=0.5),
      mechanism=mechanisms.make_mechanism("aggregate", "client"),
      arch_step=strategy.arch_step, reads_validation=True,
      active_weights=strategy.active_weights)
  quiet = jax.jit(lambda: local(start, batches, jax.random.key(5), expected,
                                0)[0])()
  assert quiet.nas is None
  # Three steps: the first reward is its own baseline, the next two move α.
  assert float(jnp.abs(quiet.params.arch["normal"]
                       - start.params.arch["normal"]).max()) > 1e-3
