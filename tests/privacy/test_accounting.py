"""Accounting against dp_accounting, calibration, padded batch sizes, joint σ."""

import json
import math
from unittest import mock

import dp_accounting
import numpy as np
import pytest
from jax_privacy import accounting as jp_accounting
from scipy import optimize, stats

from fedsearch import privacy
from fedsearch.errors import ConfigError
from fedsearch.privacy import accounting


def _direct_epsilon(streams, delta, accountant):
  # jax-privacy's RDP accountant evaluates a finer grid of orders than
  # dp_accounting's default; the direct computation uses the same grid.
  orders = jp_accounting.RdpAccountantConfig().orders
  acc = (dp_accounting.rdp.RdpAccountant(orders=orders) if accountant == "rdp"
         else dp_accounting.pld.PLDAccountant())
  for s in streams:
    if s.count:
      event = dp_accounting.GaussianDpEvent(s.noise_multiplier)
      if s.sampling_rate < 1:
        event = dp_accounting.PoissonSampledDpEvent(s.sampling_rate, event)
      acc.compose(event, s.count)
  return acc.get_epsilon(delta)


@pytest.mark.parametrize("accountant", ["rdp", "pld"])
def test_epsilon_matches_direct_dp_accounting(accountant):
  streams = [privacy.ReleaseStream("weights", 0.05, 300, 1.1),
             privacy.ReleaseStream("arch", 0.1, 120, 1.1),
             privacy.ReleaseStream("unused", 0.5, 0, 1.1)]
  ours = privacy.epsilon(streams, 1e-5, accountant)
  assert ours == pytest.approx(_direct_epsilon(streams, 1e-5, accountant),
                               rel=1e-9)


def test_an_unsampled_stream_is_a_plain_gaussian():
  # q = 1 (hyperparameter feedback reads the whole split): no amplification.
  streams = [privacy.ReleaseStream("weights", 0.05, 300, 1.1),
             privacy.ReleaseStream("feedback", 1.0, 4, 6.0)]
  assert privacy.epsilon(streams, 1e-5, "rdp") == pytest.approx(
      _direct_epsilon(streams, 1e-5, "rdp"), rel=1e-9)
  assert isinstance(streams[1].event().event, dp_accounting.GaussianDpEvent)


def test_unknown_accountant_is_refused():
  with pytest.raises(ConfigError, match=r"privacy\.accountant='gdp'"):
    privacy.epsilon([privacy.ReleaseStream("w", 0.1, 1, 1.0)], 1e-5, "gdp")


def test_calibration_spends_the_target():
  make = lambda s: [privacy.ReleaseStream("w", 0.02, 2000, s)]
  sigma = privacy.calibrate_noise_multiplier(make, 3.0, 1e-5, "rdp")
  assert privacy.epsilon(make(sigma), 1e-5, "rdp") <= 3.0
  assert privacy.epsilon(make(sigma * 0.99), 1e-5, "rdp") > 3.0
  # Same σ as dp_accounting's own calibration of the same event.
  direct = dp_accounting.calibrate_dp_mechanism(
      lambda: dp_accounting.rdp.RdpAccountant(
          orders=jp_accounting.RdpAccountantConfig().orders),
      lambda s: dp_accounting.SelfComposedDpEvent(
          dp_accounting.PoissonSampledDpEvent(
              0.02, dp_accounting.GaussianDpEvent(s)), 2000), 3.0, 1e-5)
  assert sigma == pytest.approx(direct, rel=1e-3)


@pytest.mark.parametrize("n,q", [(50, 0.25), (5000, 0.01), (7, 0.9)])
def test_padded_batch_size_bounds_the_truncation_probability(n, q):
  tail = accounting.truncation_tail(4000, 3.0, 1e-6)
  b = accounting.padded_batch_size(n, q, tail)
  # The smallest b with P[Binomial(n, q) > b] ≤ tail.
  assert stats.binom.sf(b, n, q) <= tail
  assert b == n or stats.binom.sf(b - 1, n, q) > tail
  assert tail == pytest.approx(1e-6 / ((1 + math.exp(3.0)) * 4000))


@pytest.mark.parametrize("multipliers,expected", [
    ((2.0,), 2.0),
    ((3.0, 4.0), 2.4),  # (1/9 + 1/16)^(-1/2) = 12/5.
    ((2.0, 2.0, 2.0, 2.0), 1.0),  # Four equal releases: σ/√4.
    ((1.3, 5.0, 5.0, 5.0), (1.3**-2 + 3 * 5.0**-2) ** -0.5),
    ((1.5, math.inf, math.inf), 1.5),  # No loss probes: only the gradient.
])
def test_joint_noise_multiplier_on_hand_numbers(multipliers, expected):
  assert accounting.joint_noise_multiplier(*multipliers) == pytest.approx(
      expected, rel=1e-12)


def test_joint_release_spends_what_its_parts_spend_on_one_sample():
  # Two Gaussians on the same data (no subsampling) compose exactly to one
  # Gaussian with the joint multiplier (RDP of Gaussians adds as 1/σ²).
  orders = jp_accounting.RdpAccountantConfig().orders
  acc = dp_accounting.rdp.RdpAccountant(orders=orders)
  acc.compose(dp_accounting.GaussianDpEvent(3.0))
  acc.compose(dp_accounting.GaussianDpEvent(4.0))
  joint = privacy.ReleaseStream("both", 1.0, 1,
                                accounting.joint_noise_multiplier(3.0, 4.0))
  assert privacy.epsilon([joint], 1e-5, "rdp") == pytest.approx(
      acc.get_epsilon(1e-5), rel=1e-9)


def _analytic_gaussian_epsilon(sigma, delta):
  """Exact ε of one Gaussian mechanism (sensitivity 1, std σ) at δ, from
  Balle & Wang (2018): δ(ε) = Φ(1/(2σ) − εσ) − e^ε Φ(−1/(2σ) − εσ)."""
  def delta_of(eps):
    return (stats.norm.cdf(0.5 / sigma - eps * sigma)
            - math.exp(eps) * stats.norm.cdf(-0.5 / sigma - eps * sigma))
  return optimize.brentq(lambda e: delta_of(e) - delta, 0.0, 100.0)


@pytest.mark.parametrize("sigma,count", [(1.0, 1), (2.0, 10), (0.8, 4),
                                         (5.0, 100)])
def test_accountants_against_the_closed_form_gaussian_at_q_1(sigma, count):
  # k Gaussians on the whole data compose to one Gaussian with σ/√k.
  exact = _analytic_gaussian_epsilon(sigma / math.sqrt(count), 1e-5)
  streams = [privacy.ReleaseStream("w", 1.0, count, sigma)]
  pld = privacy.epsilon(streams, 1e-5, "pld")
  rdp = privacy.epsilon(streams, 1e-5, "rdp")
  # Both are sound upper bounds; PLD's pessimistic discretisation is within
  # a small margin of the exact value, RDP clearly above it.
  assert exact <= pld <= exact * 1.01 + 1e-3
  assert rdp > pld
  assert pld == privacy.epsilon(streams, 1e-5)  # PLD is the default.


def test_pld_is_tighter_than_rdp_on_a_subsampled_schedule():
  streams = [privacy.ReleaseStream("weights", 0.035, 1080, 1.0)]
  pld = privacy.epsilon(streams, 1e-5, "pld")
  assert pld == pytest.approx(_direct_epsilon(streams, 1e-5, "pld"),
                              rel=1e-9)
  assert pld < 0.95 * privacy.epsilon(streams, 1e-5, "rdp")


def test_a_cached_calibration_is_reverified_and_a_wrong_one_replaced(
    tmp_path, monkeypatch):
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
  make = lambda s: [privacy.ReleaseStream("w", 0.05, 400, s)]
  sigma = privacy.calibrate_noise_multiplier(make, 2.0, 1e-5)
  cache_file = tmp_path / "fedsearch" / "calibration.json"
  cached = json.loads(cache_file.read_text())
  assert list(cached.values()) == [sigma]
  # A hit returns the verified σ without calibrating again ...
  with mock.patch.object(dp_accounting, "calibrate_dp_mechanism",
                         side_effect=AssertionError("recalibrated")):
    assert privacy.calibrate_noise_multiplier(make, 2.0, 1e-5) == sigma
  # ... a cached σ that overspends (a stale or tampered file) is not
  # trusted: σ is calibrated again and the entry replaced.
  cache_file.write_text(json.dumps({k: 0.5 * v for k, v in cached.items()}))
  assert privacy.calibrate_noise_multiplier(make, 2.0, 1e-5) == sigma
  assert list(json.loads(cache_file.read_text()).values()) == [sigma]
  # A different schedule or target is a different entry.
  privacy.calibrate_noise_multiplier(make, 3.0, 1e-5)
  assert len(json.loads(cache_file.read_text())) == 2


@pytest.mark.parametrize("shape", [0.0, 0.5, 1.0, 3.0, math.inf])
@pytest.mark.parametrize("mean", [1.0, 2.5, 6.0])
def test_tuning_draws_runs_of_the_stated_mean(shape, mean):
  tuning = accounting.Tuning(mean, shape)
  rng = np.random.default_rng(0)
  runs = np.array([tuning.draw_runs(rng) for _ in range(20000)])
  # Only Poisson may draw no run at all.
  assert runs.min() >= (0 if math.isinf(shape) else 1)
  # 20,000 draws: the sample mean is within 4 standard errors.
  assert abs(runs.mean() - mean) <= 4 * runs.std() / math.sqrt(len(runs)) + 1e-9


def test_a_tunings_cost_grows_with_its_mean_and_stays_below_composition():
  # The selection of one run (mean 1) costs at least the run itself.
  streams = [privacy.ReleaseStream("w", 0.05, 400, 1.2)]
  one = privacy.epsilon(streams, 1e-5, "rdp")
  for shape in (0.0, 1.0, math.inf):
    assert privacy.epsilon(streams, 1e-5, "rdp",
                           accounting.Tuning(1.0, shape)) >= one * (1 - 1e-9)
  tuned = [privacy.epsilon(streams, 1e-5, "rdp", accounting.Tuning(m, 0.0))
           for m in (2.0, 5.0, 20.0)]
  assert one < tuned[0] < tuned[1] < tuned[2]
  # Far below composing the runs: five runs composed against mean five.
  assert tuned[1] < privacy.epsilon(streams * 5, 1e-5, "rdp")


@pytest.mark.parametrize("mean, shape, field", [
    (0.5, 0.0, "privacy.tuning_mean_runs"),
    (math.inf, 0.0, "privacy.tuning_mean_runs"),
    (3.0, -1.0, "privacy.tuning_shape"),
])
def test_bad_tuning_names_the_field(mean, shape, field):
  with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
    accounting.Tuning(mean, shape)


def test_the_calibration_cache_tells_a_tuning_from_a_single_run(tmp_path):
  make = lambda s: [privacy.ReleaseStream("w", 0.02, 500, s)]
  with mock.patch.dict("os.environ", {"XDG_CACHE_HOME": str(tmp_path)}):
    single = privacy.calibrate_noise_multiplier(make, 3.0, 1e-5, "rdp")
    tuned = privacy.calibrate_noise_multiplier(
        make, 3.0, 1e-5, "rdp", tuning=accounting.Tuning(5.0))
  assert tuned > single
  assert privacy.epsilon(make(tuned), 1e-5, "rdp",
                         accounting.Tuning(5.0)) <= 3.0
