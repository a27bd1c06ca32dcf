"""HyFreeDP: quadratic fit, guards, loss sensitivity, accounting, main job."""

import json
import math

import dp_accounting
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax_privacy import accounting as jp_accounting

from experiments.configs import default
from fedsearch import runner
from fedsearch.errors import ConfigError
from fedsearch.privacy import auto_lr
from fedsearch.runner.plan import NoiseMultipliers, make_plan

_CONFIG = auto_lr.AutoLRConfig(max_change=10.0)


@pytest.mark.parametrize("eta,a,b", [(0.1, 4.0, 1.0), (1.0, 0.5, 0.4),
                                     (0.01, 100.0, 2.0)])
def test_quadratic_fit_recovers_the_optimum_of_a_noiseless_quadratic(eta, a, b):
  scales = jnp.asarray(_CONFIG.probe_scales)
  losses = 2.0 - b * scales * eta + 0.5 * a * (scales * eta) ** 2
  fit_a, fit_b = auto_lr.fit_quadratic(scales * eta, losses)
  assert float(fit_a) == pytest.approx(a, rel=1e-3)
  assert float(fit_b) == pytest.approx(b, rel=1e-3)
  state = auto_lr.AutoLRState(jnp.log(jnp.float32(eta)), jnp.float32(1.0))
  new = auto_lr.update(state, losses, _CONFIG)
  expected = np.clip(b / a, eta / 10, eta * 10)
  assert float(jnp.exp(new.log_learning_rate)) == pytest.approx(expected, rel=1e-3)
  # R_l follows the loss at η = 0 (times the factor): post-processing.
  assert float(new.loss_clip) == pytest.approx(2.0 * _CONFIG.loss_clip_factor)


@pytest.mark.parametrize("losses", [
    [1.0, 2.0, 3.0],  # Uphill: minimum behind us.
    [3.0, 2.0, 1.0],  # Straight downhill: curvature 0.
    [1.0, 0.0, 1.0e9],  # Huge curvature.
    [1.0, 1.0 - 1e-9, 1.0],  # Tiny curvature, huge b/a.
    [float("nan"), 1.0, 2.0],
    [float("inf"), -float("inf"), 0.0],
    [0.0, 0.0, 0.0],
])
def test_guards_keep_the_learning_rate_finite_and_bounded(losses):
  eta = 0.05
  state = auto_lr.AutoLRState(jnp.log(jnp.float32(eta)), jnp.float32(1.0))
  new = auto_lr.update(state, jnp.asarray(losses, jnp.float32), _CONFIG)
  new_eta = float(jnp.exp(new.log_learning_rate))
  assert math.isfinite(new_eta) and math.isfinite(float(new.loss_clip))
  assert eta / 10 * (1 - 1e-5) <= new_eta <= eta * 10 * (1 + 1e-5)
  assert float(new.loss_clip) > 0


def test_loss_release_has_sensitivity_loss_clip():
  loss_clip = 0.7
  adversarial = jnp.array([0.3, 1e30, -1e30, jnp.nan, jnp.inf, -jnp.inf, 0.69])
  padding = jnp.zeros(len(adversarial), bool)
  release = lambda losses, pad: auto_lr.privatized_mean_loss(
      losses, pad, loss_clip, 0.0, jax.random.key(0), 1.0)
  full = release(adversarial, padding)
  for i in range(len(adversarial)):  # Remove example i (as padding).
    removed = release(adversarial, padding.at[i].set(True))
    assert abs(float(full - removed)) <= loss_clip * (1 + 1e-6)


def test_loss_noise_std_is_sigma_times_loss_clip_over_batch():
  keys = jax.random.split(jax.random.key(1), 4000)
  draws = jax.vmap(lambda k: auto_lr.privatized_mean_loss(
      jnp.zeros(5), jnp.zeros(5, bool), 2.0, 3.0, k, 10.0))(keys)
  assert float(jnp.std(draws)) == pytest.approx(3.0 * 2.0 / 10.0, rel=0.05)


def _plan(probe_every, rounds=12, search_rounds=4, local_steps=3, q=0.2):
  schedule = np.tile(np.arange(5), (rounds, 1))[:, :4]  # Clients 0-3 always.
  return make_plan(schedule, search_rounds=search_rounds,
                   local_steps=local_steps, sampling_rate=q, num_clients=5,
                   epsilon=3.0, delta=1e-5, truncation_delta_fraction=0.1,
                   accountant="rdp", probe_every=probe_every,
                   releases_per_probe=3, kappa=0.01)


def test_accountant_total_matches_direct_dp_accounting_composition():
  plan = _plan(probe_every=4)
  sigmas = NoiseMultipliers(gradient=1.3, loss=5.0)
  # 12 rounds x 3 steps = global steps 0..35; probes at 0, 4, ..., 32 (9),
  # of which steps 0..11 are search rounds (0, 4, 8: 3 probes).
  search_steps, train_steps = 4 * 3, 8 * 3
  probe_search, probe_train = 3, 6
  # A probe step releases the gradient and 3 losses of one Poisson sample:
  # one Gaussian on the whitened stack, sensitivity sqrt(1/σ_g² + 3/σ_l²).
  joint = (1.3**-2 + 3 * 5.0**-2) ** -0.5
  orders = jp_accounting.RdpAccountantConfig().orders
  acc = dp_accounting.rdp.RdpAccountant(orders=orders)
  subsampled = lambda s: dp_accounting.PoissonSampledDpEvent(
      0.2, dp_accounting.GaussianDpEvent(s))
  acc.compose(subsampled(1.3), search_steps - probe_search)  # Weights.
  acc.compose(subsampled(joint), probe_search)
  acc.compose(subsampled(1.3), search_steps)  # Architecture.
  acc.compose(subsampled(1.3), train_steps - probe_train)
  acc.compose(subsampled(joint), probe_train)
  direct = acc.get_epsilon(plan.accounting_delta)
  assert plan.spent(sigmas, 12) == pytest.approx(direct, rel=1e-9)
  assert plan.counts(12) == {
      "weight_steps_search": 9, "probe_steps_search": 3,
      "arch_steps_search": 12, "weight_steps_train": 18,
      "probe_steps_train": 6, "hp_feedback": 0}


def test_calibration_splits_the_budget():
  plan = _plan(probe_every=2)
  sigmas = plan.noise_multipliers(0.0)
  reference = _plan(probe_every=0).noise_multipliers(0.0).gradient
  assert sigmas.gradient == pytest.approx(1.01 * reference, rel=1e-3)
  assert plan.spent(sigmas, 12) == pytest.approx(3.0, rel=1e-3)
  assert plan.spent(sigmas, 12) <= 3.0 * (1 + 1e-6)
  breakdown = plan.breakdown(sigmas)
  assert breakdown["gradients_only"] < breakdown["total"]
  assert breakdown["loss_probes_only"] < breakdown["total"]


def test_probe_scales_without_zero_are_refused():
  with pytest.raises(ConfigError, match="hyfree.probe_scales"):
    auto_lr.AutoLRConfig(probe_scales=(1.0, 2.0, 3.0))


def _hyfree_config():
  config = default.get_config()
  config.space.channels = 4
  config.space.nodes = 1
  config.federated.search_rounds = 2
  config.federated.train_rounds = 2
  config.client.optimizer = "hyfree"
  config.hyfree.probe_every = 1
  config.hyfree.initial_learning_rate = 0.05
  return config


def test_main_job_runs_hyfree_within_budget_and_resumes(tmp_path):
  config = _hyfree_config()
  straight = runner.run(config, tmp_path / "a", report=lambda _: None)
  assert straight["optimizer"] == "hyfree"
  assert straight["epsilon"] <= config.privacy.epsilon * (1 + 1e-6)
  assert set(straight["epsilon_breakdown"]) == {
      "total", "gradients_only", "loss_probes_only"}
  lines = [json.loads(l) for l in
           (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
  rates = [l["learning_rate"] for l in lines]
  assert len(set(rates)) > 1  # η was refitted.
  assert straight["final_learning_rate"] == pytest.approx(rates[-1])
  # Interrupted in the search phase, then resumed: same result.
  runner.run(config, tmp_path / "b", report=lambda _: None, stop_after_round=1)
  resumed = runner.run(config, tmp_path / "b", report=lambda _: None)
  for key in ("test_accuracy", "epsilon", "final_learning_rate"):
    assert resumed[key] == pytest.approx(straight[key], rel=1e-5)
