"""Privacy accounting for a whole search: every release is one DpEvent.

The unit of privacy is one training example of one client, under add/remove
adjacency. Each kind of release (weight-gradient step, architecture-gradient
step, later loss probes or rewards) is a Poisson-subsampled Gaussian mechanism
on the data it reads; a search is the composition of all of them. Accountants
are jax-privacy's configurations over dp_accounting, so the ε reported is
whatever dp_accounting computes for that composition:
  pld (default): privacy loss distributions with a pessimistic
    discretisation (interval 1e-4): an upper bound on the exact ε of the
    composition, within the discretisation of it. Tightest of the two (the
    default digits schedule needs σ = 9.98 with PLD, 10.73 with RDP, for
    the same ε = 3).
  rdp: Rényi DP over jax-privacy's grid of orders; looser, kept as an option
    (and for comparison with papers that report it).
"""

import dataclasses
import functools
import hashlib
import json
import math
import os
import pathlib
from collections.abc import Callable, Sequence

import dp_accounting
import numpy as np
from dp_accounting import dp_event
from jax_privacy import accounting as jp_accounting
from scipy import optimize, stats

from fedsearch.errors import ConfigError

ACCOUNTANTS = ("pld", "rdp")


def accountant_config(name: str) -> jp_accounting.DpAccountantConfig:
  if name == "rdp":
    return jp_accounting.RdpAccountantConfig()
  if name == "pld":
    return jp_accounting.PldAccountantConfig()
  raise ConfigError(f"privacy.accountant={name!r} is not allowed; choose one of"
                    f" {list(ACCOUNTANTS)}")


@dataclasses.dataclass(frozen=True)
class ReleaseStream:
  """A release repeated `count` times, each reading a Poisson(q) sample.

  Attributes:
    name: what is released (for the breakdown in the summary).
    sampling_rate: probability q that a given example is in one release.
    count: how many releases an example's client makes of this kind.
    noise_multiplier: Gaussian noise std / sensitivity.
  """

  name: str
  sampling_rate: float
  count: int
  noise_multiplier: float

  def event(self) -> dp_accounting.DpEvent:
    # Infinite noise releases nothing (a stream not calibrated yet); PLD,
    # unlike RDP, cannot take σ = ∞.
    if self.count == 0 or math.isinf(self.noise_multiplier):
      return dp_accounting.NoOpDpEvent()
    single = dp_accounting.GaussianDpEvent(self.noise_multiplier)
    if self.sampling_rate < 1.0:
      single = dp_accounting.PoissonSampledDpEvent(self.sampling_rate, single)
    return dp_accounting.SelfComposedDpEvent(single, self.count)


def joint_noise_multiplier(*multipliers: float) -> float:
  """One Gaussian equivalent to several released together on the same sample.

  Releasing Gaussians with multipliers σ_j (noise std / sensitivity) computed
  from the same Poisson sample is one Gaussian mechanism on the stacked,
  whitened vector, whose sensitivity is sqrt(Σ_j 1/σ_j²): its multiplier is
  (Σ_j σ_j⁻²)^(-1/2). Accounting them as independently subsampled releases
  would under-count, since they share the sample.
  """
  if any(s == 0 for s in multipliers):
    return 0.0  # One release without noise: nothing is private.
  return sum(s**-2.0 for s in multipliers if math.isfinite(s))**-0.5


@dataclasses.dataclass(frozen=True)
class Tuning:
  """Private hyperparameter tuning by random search (Papernot & Steinke,
  ICLR 2022): run the training K times, K drawn at random, each run with
  hyperparameters drawn at random from a data-independent set, and keep the
  run whose (public or private) score is best. If each run is (λ, ε)-RDP,
  the selected run's release is RDP with a bounded overhead that depends on
  K's distribution, not on how many configurations there are; a fixed K
  (the whole grid composed) would cost K times a run.

  K is truncated negative binomial with `shape` η and mean `mean_runs`: η = 0
  the logarithmic distribution (the cheapest at the means a tuning uses:
  ε = 2.76 against 2.90 for Poisson and 3.20 for the geometric, a 40-epoch
  DP-SGD run on MNIST at batch 2048
  and σ = 3, mean 5), η = 1 the geometric, η = ∞ Poisson (which
  may draw K = 0: then nothing is trained or released). dp_accounting's RDP
  accountant implements the bound (`RepeatAndSelectDpEvent`).
  """

  mean_runs: float
  shape: float = 0.0

  def __post_init__(self):
    if not (math.isfinite(self.mean_runs) and self.mean_runs >= 1):
      raise ConfigError("privacy.tuning_mean_runs must be a finite number"
                        f" >= 1 (0: no tuning), got {self.mean_runs}")
    if math.isnan(self.shape) or self.shape < 0:
      raise ConfigError("privacy.tuning_shape must be >= 0 (0 logarithmic, 1"
                        f" geometric, inf Poisson), got {self.shape}")

  def wrap(self, event: dp_accounting.DpEvent) -> dp_accounting.DpEvent:
    """The release of the best of K runs, each releasing `event`."""
    return dp_event.RepeatAndSelectDpEvent(event, self.mean_runs, self.shape)

  def _gamma(self) -> float:
    """The truncated negative binomial's γ that gives `mean_runs`."""
    eta = self.shape

    def mean(gamma):
      if eta == 0:
        return (1 - gamma) / (gamma * math.log(1 / gamma))
      return eta * (1 - gamma) / (gamma * (1 - gamma**eta))

    # The mean falls from ∞ (γ → 0) to 1 (γ → 1).
    return optimize.brentq(lambda g: mean(g) - self.mean_runs, 1e-12,
                           1 - 1e-12, xtol=1e-14)

  def draw_runs(self, rng: np.random.Generator) -> int:
    """K, the number of runs, from the tuning's own secret randomness."""
    if math.isinf(self.shape):
      return int(rng.poisson(self.mean_runs))
    if self.mean_runs == 1:
      return 1
    gamma = self._gamma()
    if self.shape == 0:
      return int(rng.logseries(1 - gamma))
    while True:  # Negative binomial conditioned on K >= 1.
      runs = int(rng.negative_binomial(self.shape, gamma))
      if runs:
        return runs


def composed_event(streams: Sequence[ReleaseStream],
                   tuning: Tuning | None = None) -> dp_accounting.DpEvent:
  """The streams' composition; with `tuning`, the release of the best of a
  random number of runs that each make all of them."""
  event = dp_accounting.ComposedDpEvent([s.event() for s in streams])
  return tuning.wrap(event) if tuning else event


def epsilon(streams: Sequence[ReleaseStream], delta: float,
            accountant: str = "pld", tuning: Tuning | None = None) -> float:
  """ε of the composition of `streams` at `delta` (of the tuning's selected
  run, with `tuning`)."""
  acc = accountant_config(accountant).create_accountant()
  acc.compose(composed_event(streams, tuning))
  return float(acc.get_epsilon(delta))


def _cache_file() -> pathlib.Path:
  root = os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache"
  return pathlib.Path(root) / "fedsearch" / "calibration.json"


def _calibration_key(make_streams, target_epsilon, target_delta,
                     accountant, tuning) -> str:
  """The schedule's identity: its events at two noise levels (their repr
  names every kind, rate and count, and the tuning), the target and the
  accountant."""
  shape = [repr(composed_event(make_streams(sigma), tuning))
           for sigma in (1.0, 2.0)]
  text = json.dumps([shape, float(target_epsilon), float(target_delta),
                     accountant])
  return hashlib.sha256(text.encode()).hexdigest()


def _read_cache() -> dict:
  try:
    return json.loads(_cache_file().read_text())
  except (OSError, ValueError):
    return {}


def _write_cache(key: str, sigma: float) -> None:
  try:
    cache = _read_cache()
    cache[key] = sigma
    path = _cache_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(cache))
    os.replace(tmp, path)
  except OSError:
    pass  # A cache that cannot be written only costs time.


def calibrate_noise_multiplier(
    make_streams: Callable[[float], Sequence[ReleaseStream]],
    target_epsilon: float, target_delta: float, accountant: str = "pld",
    use_cache: bool = True, tuning: Tuning | None = None,
) -> float:
  """Smallest noise multiplier σ whose composed schedule spends ≤ target ε.

  PLD calibration of a long schedule takes seconds, so a result is cached
  (`$XDG_CACHE_HOME/fedsearch/calibration.json`, keyed by the schedule's
  events, target and accountant). The cache is only a hint: a
  cached σ is used after one ε evaluation confirms it spends at most the
  target (and at least 0.999 of it, so that it is not needlessly noisy);
  otherwise σ is calibrated again.
  """
  key = _calibration_key(make_streams, target_epsilon, target_delta,
                         accountant, tuning) if use_cache else None
  cached = _read_cache().get(key) if use_cache else None
  if cached is not None:
    spent = epsilon(make_streams(cached), target_delta, accountant, tuning)
    if target_epsilon * (1 - 1e-3) <= spent <= target_epsilon * (1 + 1e-9):
      return float(cached)
  try:
    sigma = _calibrate(make_streams, target_epsilon, target_delta, accountant,
                       tuning)
  except dp_accounting.mechanism_calibration.NoBracketIntervalFoundError as e:
    raise ConfigError(
        f"no noise multiplier reaches privacy.epsilon={target_epsilon} at"
        f" privacy.delta={target_delta} for this schedule; raise epsilon or"
        " shorten the schedule") from e
  if use_cache:
    _write_cache(key, sigma)
  return sigma


def _calibrate(make_streams, target_epsilon, target_delta, accountant,
               tuning=None):
  """Bisection for σ. PLD is searched only between bounds found with RDP:
  a PLD at a tiny σ (where a blind bracket search starts) has an enormous
  loss range (measured: 25 GiB for one evaluation at σ = 0.01) and takes
  minutes, while RDP costs milliseconds."""
  make_event = lambda sigma: composed_event(make_streams(sigma), tuning)
  calibrate = lambda bracket: float(dp_accounting.calibrate_dp_mechanism(
      accountant_config(accountant).create_accountant, make_event,
      target_epsilon, target_delta, bracket, tol=1e-4))
  if accountant == "rdp":
    return calibrate(dp_accounting.LowerEndpointAndGuess(1e-2, 1.0))
  spends = lambda sigma: epsilon(make_streams(sigma), target_delta,
                                 accountant, tuning)
  # RDP's σ is usually just enough for PLD (a looser bound); checked, not
  # assumed. RDP finds none when fixed streams already overspend under RDP
  # alone (e.g. HyFreeDP's loss probes beside PLD-calibrated gradients).
  try:
    high = _calibrate(make_streams, target_epsilon, target_delta, "rdp",
                      tuning)
  except dp_accounting.mechanism_calibration.NoBracketIntervalFoundError:
    high = 1.0
  while spends(high) > target_epsilon:
    high *= 1.25
    if high > 1e6:
      raise dp_accounting.mechanism_calibration.NoBracketIntervalFoundError(
          "no σ up to 1e6 spends the target")
  low = 0.8 * high
  while spends(low) <= target_epsilon:
    high, low = low, 0.8 * low
  return calibrate(dp_accounting.ExplicitBracketInterval(low, high))


@functools.lru_cache(maxsize=None)
def padded_batch_size(max_population: int, sampling_rate: float,
                      tail_probability: float) -> int:
  """Static batch size b with P[Binomial(max_population, q) > b] ≤ tail.

  Poisson batches have random size; jit needs a static one. Batches are padded
  to b and, with probability at most `tail_probability` per draw, truncated
  to b. Truncation changes the mechanism only on that event, so (coupling
  argument) over D draws in total the truncated run satisfies
  (ε, δ + (1 + e^ε) · D · tail)-DP when the untruncated one is (ε, δ)-DP;
  `truncation_tail` picks the tail so that this extra δ is a set budget.
  """
  b = int(stats.binom.isf(tail_probability, max_population, sampling_rate))
  while stats.binom.sf(b, max_population, sampling_rate) > tail_probability:
    b += 1
  return max(b, 1)


def truncation_tail(total_draws: int, epsilon_: float,
                    delta_budget: float) -> float:
  """Per-draw truncation probability allowed by a δ budget (see above)."""
  # exp overflows past ε≈709; the tail is then far below any float anyway.
  return delta_budget / ((1.0 + math.exp(min(epsilon_, 700.0)))
                         * max(total_draws, 1))
