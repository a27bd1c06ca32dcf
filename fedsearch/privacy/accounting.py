"""Privacy accounting for a whole search: every release is one DpEvent.

The unit of privacy is one training example of one client, under add/remove
adjacency. Each kind of release (weight-gradient step, architecture-gradient
step, later loss probes or rewards) is a Poisson-subsampled Gaussian mechanism
on the data it reads; a search is the composition of all of them. Accountants
are jax-privacy's configurations over dp_accounting (RDP by default, PLD on
request), so the ε reported is whatever dp_accounting computes for that
composition.
"""

import dataclasses
import functools
import math
from collections.abc import Callable, Sequence

import dp_accounting
from jax_privacy import accounting as jp_accounting
from scipy import stats

from fedsearch.errors import ConfigError

ACCOUNTANTS = ("rdp", "pld")


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
    if self.count == 0:
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
  return sum(s**-2.0 for s in multipliers if math.isfinite(s))**-0.5


def composed_event(streams: Sequence[ReleaseStream]) -> dp_accounting.DpEvent:
  return dp_accounting.ComposedDpEvent([s.event() for s in streams])


def epsilon(streams: Sequence[ReleaseStream], delta: float,
            accountant: str = "rdp") -> float:
  """ε of the composition of `streams` at `delta`."""
  acc = accountant_config(accountant).create_accountant()
  acc.compose(composed_event(streams))
  return float(acc.get_epsilon(delta))


def calibrate_noise_multiplier(
    make_streams: Callable[[float], Sequence[ReleaseStream]],
    target_epsilon: float, target_delta: float, accountant: str = "rdp",
) -> float:
  """Smallest noise multiplier σ whose composed schedule spends ≤ target ε."""
  make_event = lambda sigma: composed_event(make_streams(sigma))
  try:
    return float(dp_accounting.calibrate_dp_mechanism(
        accountant_config(accountant).create_accountant, make_event,
        target_epsilon, target_delta,
        dp_accounting.LowerEndpointAndGuess(1e-2, 1.0), tol=1e-4))
  except dp_accounting.mechanism_calibration.NoBracketIntervalFoundError as e:
    raise ConfigError(
        f"no noise multiplier reaches privacy.epsilon={target_epsilon} at"
        f" privacy.delta={target_delta} for this schedule; raise epsilon or"
        " shorten the schedule") from e


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
