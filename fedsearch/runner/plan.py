"""The privacy plan of a search, fixed before it starts.

Everything the accountant needs is data-independent and known up front: the
client schedule (so how often each client takes part), the local steps, the
Poisson rate q and the split sizes (treated as public, like the dataset size
in centralised DP-SGD accounting). The plan calibrates one noise multiplier σ
for every release so that the whole schedule spends the target ε, or checks
a given σ against it, and says what ε has been spent after any round.

Releases per participation of a client, all Poisson(q)-subsampled Gaussians
with multiplier σ on its own examples:
  search phase: `local_steps` weight steps (train split) and `local_steps`
    architecture steps (validation split);
  training phase: `local_steps` weight steps (all local data).
They are composed sequentially, an upper bound (the splits are disjoint, so
parallel composition would be tighter; we do not rely on it).
"""

import dataclasses

import numpy as np

from fedsearch.errors import ConfigError
from fedsearch.privacy import accounting


@dataclasses.dataclass(frozen=True)
class PrivacyPlan:
  schedule: np.ndarray  # (rounds, m) client ids
  search_rounds: int
  local_steps: int
  sampling_rate: float
  num_clients: int
  epsilon: float
  delta: float
  truncation_delta: float
  accountant: str

  @property
  def accounting_delta(self) -> float:
    return self.delta - self.truncation_delta

  def participations(self, rounds_done: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-client counts of (search, training) rounds among the first ones."""
    search = self.schedule[:min(rounds_done, self.search_rounds)]
    train = self.schedule[self.search_rounds:max(rounds_done, self.search_rounds)]
    count = lambda s: np.bincount(s.ravel(), minlength=self.num_clients)
    return count(search), count(train)

  def streams(self, noise_multiplier: float, rounds_done: int
              ) -> list[accounting.ReleaseStream]:
    """Releases of the most exposed client after `rounds_done` rounds."""
    search, train = self.participations(rounds_done)
    worst = int(np.argmax(2 * search + train))
    steps = self.local_steps
    q, s = self.sampling_rate, noise_multiplier
    return [
        accounting.ReleaseStream("weight_steps_search", q,
                                 int(search[worst]) * steps, s),
        accounting.ReleaseStream("arch_steps_search", q,
                                 int(search[worst]) * steps, s),
        accounting.ReleaseStream("weight_steps_train", q,
                                 int(train[worst]) * steps, s),
    ]

  def spent(self, noise_multiplier: float, rounds_done: int) -> float:
    """ε spent after `rounds_done` rounds (at the accounting δ)."""
    streams = self.streams(noise_multiplier, rounds_done)
    if not any(st.count for st in streams):
      return 0.0
    return accounting.epsilon(streams, self.accounting_delta, self.accountant)

  def noise_multiplier(self, given: float) -> float:
    """Calibrated σ (given <= 0), or `given` after checking it fits the budget."""
    rounds = len(self.schedule)
    if given <= 0:
      return accounting.calibrate_noise_multiplier(
          lambda sigma: self.streams(sigma, rounds), self.epsilon,
          self.accounting_delta, self.accountant)
    eps = self.spent(given, rounds)
    if eps > self.epsilon:
      raise ConfigError(
          f"privacy.noise_multiplier={given} would spend ε={eps:.3f} over this"
          f" schedule, above privacy.epsilon={self.epsilon}; refusing to start."
          " Raise the noise multiplier, shorten the schedule, or set"
          " privacy.noise_multiplier=0 to calibrate it")
    return given

  def total_draws(self) -> int:
    """Poisson batches drawn in the whole run (all clients, all streams)."""
    m = self.schedule.shape[1]
    train_rounds = len(self.schedule) - self.search_rounds
    return m * self.local_steps * (2 * self.search_rounds + train_rounds)

  def padded_batch_size(self, split_sizes) -> int:
    """Static batch size for Poisson batches over splits of these sizes.

    +1: a neighbouring dataset may hold one more example.
    """
    tail = accounting.truncation_tail(self.total_draws(), self.epsilon,
                                      self.truncation_delta)
    return max(accounting.padded_batch_size(int(n) + 1, self.sampling_rate,
                                            tail) for n in split_sizes)


def make_plan(schedule, *, search_rounds, local_steps, sampling_rate,
              num_clients, epsilon, delta, truncation_delta_fraction,
              accountant) -> PrivacyPlan:
  if not 0 < sampling_rate <= 1:
    raise ConfigError("federated.sampling_rate must be in (0, 1], got"
                      f" {sampling_rate}")
  if epsilon <= 0 or not 0 < delta < 1:
    raise ConfigError(f"privacy.epsilon must be > 0 and privacy.delta in"
                      f" (0, 1); got {epsilon}, {delta}")
  if not 0 < truncation_delta_fraction < 1:
    raise ConfigError("privacy.truncation_delta_fraction must be in (0, 1),"
                      f" got {truncation_delta_fraction}")
  accounting.accountant_config(accountant)  # Validates the name.
  return PrivacyPlan(schedule, search_rounds, local_steps, sampling_rate,
                     num_clients, epsilon, delta,
                     truncation_delta_fraction * delta, accountant)
