"""Client-level DP-FedAvg (`mechanisms.client_level`): the clip of a whole
client's delta, the one noise of the sum, the fixed denominator, Poisson
client sampling, and its plan against a direct dp_accounting composition."""

import chex
import dp_accounting
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from fedsearch import federated as fed
from fedsearch.errors import ConfigError
from fedsearch.federated import ClientState, ModelParams
from fedsearch.privacy import accounting, mechanisms
from fedsearch.privacy.plan import NoiseMultipliers, make_plan


def _deltas(weights, arch):
  """Stacked client deltas with no server-carried plug-in state."""
  return ClientState(ModelParams({"w": jnp.asarray(weights)},
                                 {"normal": jnp.asarray(arch)}), None, None)


def _mechanism(clients_per_round=4, clip=1.0, arch_clip=0.1):
  return mechanisms.make_mechanism("aggregate", "client",
                                   clients_per_round=clients_per_round,
                                   clip_norm=clip, arch_clip_norm=arch_clip)


def test_combine_clips_the_scaled_concatenation_on_hand_numbers():
  # Client 0: weights norm 3 (/S_w = 3), arch norm 0.4 (/S_α = 4): scaled
  # norm 5, so it is scaled by 1/5. Client 1: scaled norm 0.5, kept as is.
  # Client 2: a padding slot (weight 0). Client 3: non-finite, dropped.
  weights = [[3.0, 0.0], [0.5, 0.0], [7.0, 7.0], [np.nan, 1.0]]
  arch = [[0.0, 0.4], [0.0, 0.0], [1.0, 1.0], [0.0, 0.0]]
  (total, below), count = _mechanism().combine(
      _deltas(weights, arch), jnp.array([1.0, 5.0, 0.0, 1.0]))
  chex.assert_trees_all_close(total.params.weights["w"],
                              jnp.array([3.0 / 5 + 0.5, 0.0]), atol=1e-6)
  chex.assert_trees_all_close(total.params.arch["normal"],
                              jnp.array([0.0, 0.4 / 5]), atol=1e-6)
  # Three took part (reported, never used by the release); only client 1
  # was within the bound (the count adaptive clipping would release).
  assert float(count) == 3.0 and float(below) == pytest.approx(1 - 1.5)


def test_each_client_moves_the_sum_by_at_most_its_bound():
  # The sensitivity: whatever a client's delta, its scaled contribution
  # has norm ≤ 1.
  key = jax.random.key(0)
  big = 1e3 * jax.random.normal(key, (6, 5))
  (total, _), _ = _mechanism(clip=0.5, arch_clip=0.05).combine(
      _deltas(big, big[:, :2] * 1e-2), jnp.ones(6))
  (one, _), _ = _mechanism(clip=0.5, arch_clip=0.05).combine(
      _deltas(big[:5], big[:5, :2] * 1e-2), jnp.ones(5))
  moved = jnp.sqrt(
      jnp.sum((total.params.weights["w"] - one.params.weights["w"])**2)
      / 0.5**2 + jnp.sum((total.params.arch["normal"]
                          - one.params.arch["normal"])**2) / 0.05**2)
  assert float(moved) == pytest.approx(1.0, rel=1e-5)


def test_release_divides_by_the_expected_clients_and_noises_each_part():
  m, sigma, clip, arch_clip = 4, 2.0, 0.5, 0.05
  mechanism = _mechanism(m, clip, arch_clip)
  total = (_deltas(jnp.full((3000,), 8.0), jnp.full((3000,), 0.4)),
           jnp.float32(0.0))
  noiseless, _ = mechanism.release(total, 2.0, 0.0, jax.random.key(1))
  # Fixed denominator: q·N = 4, not the 2 clients that took part.
  chex.assert_trees_all_close(noiseless.params.weights["w"],
                              jnp.full((3000,), 2.0))
  noisy, _ = mechanism.release(total, 2.0, sigma, jax.random.key(1))
  w_noise = noisy.params.weights["w"] - 2.0
  a_noise = noisy.params.arch["normal"] - 0.1
  assert float(jnp.std(w_noise)) == pytest.approx(sigma * clip / m, rel=0.05)
  assert float(jnp.std(a_noise)) == pytest.approx(sigma * arch_clip / m,
                                                  rel=0.05)
  assert abs(float(jnp.corrcoef(w_noise, a_noise)[0, 1])) < 0.1


def test_local_steps_are_plain_sums_and_add_no_noise():
  mechanism = _mechanism()
  model = mechanisms.Model(lambda w, a, x, key=None: x @ w)
  loss = lambda logits, y: jnp.sum((logits - y) ** 2, axis=-1)
  x = jnp.array([[1.0, 0.0], [0.0, 2.0], [5.0, 5.0]])
  y = jnp.zeros((3, 2))
  w = jnp.eye(2)
  padding = jnp.array([False, False, True])
  grad = mechanism.weight_gradient(model, loss)(
      w, None, x, y, None, is_padding_example=padding)
  # Σ over the two real rows of 2·x_iᵀ(x_i W): the third is padding.
  chex.assert_trees_all_close(grad, 2 * x[:2].T @ x[:2])
  per_example = mechanism.gradient(
      lambda w, a, x, y: jnp.mean(loss(model.apply(w, a, x), y)), 0)(
          w, None, x, y, is_padding_example=padding)
  chex.assert_trees_all_close(per_example, grad, rtol=1e-6)
  optimizer = mechanism.private_optimizer(5.0, jax.random.key(0), 2.0,
                                          optax.sgd(1.0))
  updates, _ = optimizer.update(grad, optimizer.init(w), w,
                                noise_mask=None)
  chex.assert_trees_all_close(updates, -grad / 2.0)


@pytest.mark.parametrize("trust,unit,named", [
    ("local", "client", "client-level local DP"),
    ("aggregate", "household", "privacy.unit='household'")])
def test_refused_combinations_name_the_field(trust, unit, named):
  with pytest.raises(ConfigError, match=named):
    mechanisms.make_mechanism(trust, unit)


def test_plugin_state_is_refused_not_released_unclipped():
  stacked = _deltas(jnp.ones((2, 3)), jnp.ones((2, 2)))._replace(
      nas=jnp.ones((2,)))
  with pytest.raises(ConfigError, match="server-carried state"):
    _mechanism().combine(stacked, jnp.ones(2))


def test_poisson_client_schedule_rates_padding_and_truncation():
  rng = np.random.default_rng(0)
  schedule = fed.poisson_client_schedule(1000, 0.05, 400, 80, rng)
  assert schedule.shape == (400, 80)
  taken = schedule >= 0
  # Each client takes part in about q of the rounds; slots fill a prefix.
  assert taken.sum(axis=1).mean() == pytest.approx(50, rel=0.05)
  counts = np.bincount(schedule[taken], minlength=1000)
  assert counts.mean() == pytest.approx(0.05 * 400, rel=0.05)
  assert np.all(np.diff(taken.astype(int), axis=1) <= 0)
  for row in schedule:  # Distinct clients within a round.
    ids = row[row >= 0]
    assert len(np.unique(ids)) == len(ids)
  # More draws than slots: truncated to the slots.
  full = fed.poisson_client_schedule(50, 0.9, 5, 10, rng)
  assert np.all(full >= 0)


def test_plan_is_one_poisson_subsampled_gaussian_per_round():
  rounds, q, sigma = 30, 0.1, 1.1
  plan = make_plan(np.full((rounds, 0), -1), search_rounds=10, local_steps=5,
                   sampling_rate=0.3, num_clients=100, epsilon=3.0,
                   delta=1e-5, truncation_delta_fraction=0.1,
                   accountant="pld", unit="client", client_sampling_rate=q)
  accountant = dp_accounting.pld.PLDAccountant()
  accountant.compose(dp_accounting.PoissonSampledDpEvent(
      q, dp_accounting.GaussianDpEvent(sigma)), rounds)
  direct = accountant.get_epsilon(plan.accounting_delta)
  assert plan.spent(NoiseMultipliers(sigma), rounds) == pytest.approx(
      direct, rel=1e-6)
  assert plan.counts(rounds) == {"client_updates": rounds}
  # One truncation event per round's draw of clients.
  assert plan.total_draws() == rounds
  tail = plan.truncation_tail()
  slots = plan.client_slots()
  assert accounting.padded_batch_size(101, q, tail) == slots
  assert 10 < slots < 100
  # Calibration spends exactly the target.
  sigmas = plan.noise_multipliers(0.0)
  assert plan.spent(sigmas, rounds) == pytest.approx(3.0, rel=1e-3)


def test_update_noise_multiplier_leaves_the_joint_one_for_the_pair():
  # Andrew et al., Thm 1: z⁻² = z_Δ⁻² + (2σ_b)⁻².
  z_delta = mechanisms.update_noise_multiplier(1.0, 5.0)
  assert z_delta == pytest.approx((1.0 - 1.0 / 100) ** -0.5)
  assert accounting.joint_noise_multiplier(z_delta, 2 * 5.0) == (
      pytest.approx(1.0))
  with pytest.raises(ConfigError, match="adaptive_clip_quantile"):
    mechanisms.update_noise_multiplier(10.0, 5.0)


def _adaptive(quantile=0.5, count_stddev=0.0, m=4):
  return mechanisms.client_level(clients_per_round=m, clip_norm=1.0,
                                 arch_clip_norm=1.0,
                                 adaptive_quantile=quantile,
                                 adaptive_learning_rate=0.2,
                                 count_stddev=count_stddev)


def test_adaptive_count_and_scale_step_on_hand_numbers():
  mechanism = _adaptive()
  scale = mechanism.init_state()
  assert float(scale) == 1.0
  # Norms 0.5, 2, 3 at scale 1 (a padding slot besides): one below.
  deltas = _deltas([[0.5], [2.0], [3.0], [9.0]], [[0.0]] * 4)
  sums, count = mechanism.combine(deltas, jnp.array([1.0, 1.0, 1.0, 0.0]),
                                  scale)
  assert float(sums[1]) == pytest.approx(1 - 1.5)  # Σ (b_k − ½).
  _, new_scale = mechanism.release(sums, count, 0.0, jax.random.key(0), scale)
  # b̃ = (−0.5 + 4/2)/4 = 0.375 below a target of 0.5: the bound grows.
  assert float(new_scale) == pytest.approx(np.exp(-0.2 * (0.375 - 0.5)))
  # At scale 4, every norm is within the bound and is kept as is.
  sums, _ = mechanism.combine(deltas, jnp.array([1.0, 1.0, 1.0, 0.0]), 4.0)
  assert float(sums[1]) == pytest.approx(1.5)
  chex.assert_trees_all_close(sums[0].params.weights["w"], jnp.array([5.5]))


def test_adaptive_bound_tracks_the_target_quantile():
  """Noise off, 100 clients with update norms 1..100: the bound walks to
  the γ-quantile of the norms from far below and far above."""
  m = 100
  mechanism = _adaptive(quantile=0.3, m=m)
  deltas = _deltas(jnp.arange(1.0, m + 1)[:, None], jnp.zeros((m, 1)))
  step = jax.jit(lambda scale: mechanism.release(
      *mechanism.combine(deltas, jnp.ones(m), scale), 0.0,
      jax.random.key(0), scale)[1])
  for start in (0.1, 1000.0):
    scale = jnp.float32(start)
    for _ in range(400):
      scale = step(scale)
    assert 27 <= float(scale) <= 33


def test_adaptive_noise_scales_with_the_bound():
  m, sigma = 4, 1.0
  mechanism = _adaptive(count_stddev=5.0, m=m)
  total = (_deltas(jnp.zeros((4000,)), jnp.zeros((4000,))), jnp.float32(0.0))
  mean, _ = mechanism.release(total, 0.0, sigma, jax.random.key(3), 3.0)
  z_delta = mechanisms.update_noise_multiplier(sigma, 5.0)
  assert float(jnp.std(mean.params.weights["w"])) == pytest.approx(
      z_delta * 3.0 * 1.0 / m, rel=0.05)
