"""The privacy plan of a search, fixed before it starts.

Everything the accountant needs is data-independent and known up front: the
client schedule (so how often each client takes part), the local steps and
the Poisson rate q. Client sizes are not assumed public: each client
releases its size once, noised (`privacy.client_sizes`), and every size the
run uses is computed from that release. The plan calibrates one noise multiplier σ
for every release so that the whole schedule spends the target ε, or checks
a given σ against it, and says what ε has been spent after any round.

Releases of a client: its privatised size, once (a Gaussian, no sampling);
then per participation, all Poisson(q)-subsampled Gaussians on its own
examples:
  search phase: `local_steps` weight steps (train split) and `local_steps`
    architecture steps (validation split), or, for one-stage strategies
    (`arch_steps=False`), `local_steps` joint steps, whose architecture
    gradient is part of the weight step's release;
  training phase: `local_steps` weight steps (all local data).
With HyFreeDP, a weight step whose global index is a multiple of K also
releases `releases_per_probe` privatised losses of the same batch; that step
is accounted as one Gaussian with the joint multiplier of the gradient and
the losses (they share the Poisson sample). Streams are composed
sequentially, an upper bound (the splits are disjoint, so parallel
composition would be tighter; we do not rely on it). With partial
participation the counts are those of the most exposed client, or where no
one client is, the least count that dominates every client's
(`most_exposed`), so the ε holds for every client.

Stages: a retraining run of a genotype found by a private search composes
the search's releases (its workdir's `privacy_events.json`, `PriorStage`)
into the same accountant, so its `privacy.epsilon` is the total of both
stages and its σ is calibrated for what the search left; the search itself
calibrates to `privacy.stage_share` of the same total. Both stages'
truncation shares are taken off δ.

Client-level DP (`unit="client"`, `mechanisms.client_level`): the unit is a
whole client, which takes part in each round with probability q_c (Poisson
sampling of the population, drawn from the run's secret randomness, so the
accountant may use the amplification), and then releases one clipped delta
inside the noised sum. The whole run is one stream: `rounds` Poisson(q_c)-
subsampled Gaussians with multiplier σ. Nothing else of a client's leaves
it (no size release: sizes never leave the client). The round's clients
are padded to a static count; a round that samples more is truncated, an
event counted in the truncation δ like an example batch's.

Noise multipliers: DP-SGD calibrates one σ for every release. HyFreeDP
(Liu, Bu et al. 2025) calibrates σ_ref as if the gradients spent all of ε,
gives the gradients σ_g = (1 + κ)·σ_ref, and solves the loss probes' σ_l so
that the whole composition spends exactly ε.
"""

import dataclasses
import json
import math
from collections.abc import Callable

import numpy as np

from fedsearch.errors import ConfigError
from fedsearch.privacy import accounting


@dataclasses.dataclass(frozen=True)
class NoiseMultipliers:
  gradient: float  # σ (σ_g for HyFreeDP), weight and architecture steps alike
  loss: float = math.inf  # σ_l of each HyFreeDP loss probe
  feedback: float = math.inf  # σ_f of each hyperparameter-feedback release


@dataclasses.dataclass(frozen=True)
class PriorStage:
  """The releases of earlier stages on the same data (a search before its
  retraining), composed into this run's accountant.

  Attributes:
    streams: every release of those stages (most exposed client).
    truncation_delta: the δ those stages set aside for truncation.
    source: where they were read from (for the summary).
  """

  streams: tuple[accounting.ReleaseStream, ...]
  truncation_delta: float
  source: str = ""
  # Set when those stages were one run of a private tuning (their releases
  # then count as the tuning's selection, which this plan does not compose).
  tuning: accounting.Tuning | None = None

  def to_json(self) -> str:
    return json.dumps({
        "streams": [dataclasses.asdict(s) for s in self.streams],
        "truncation_delta": self.truncation_delta,
        "tuning": self.tuning and dataclasses.asdict(self.tuning)})

  @classmethod
  def from_json(cls, text: str, source: str = "") -> "PriorStage":
    data = json.loads(text)
    tuning = data.get("tuning")
    return cls(tuple(accounting.ReleaseStream(**s) for s in data["streams"]),
               float(data["truncation_delta"]), source,
               tuning and accounting.Tuning(**tuning))


# A client's example-level releases, by kind. The gradient kinds are one
# mechanism (a Poisson(q) Gaussian at σ_g), and so are the probe kinds (at
# the joint multiplier of the gradient and its losses, ≤ σ_g).
_KINDS = ("weight_steps_search", "probe_steps_search", "arch_steps_search",
          "weight_steps_train", "probe_steps_train", "hp_feedback")
_GRADIENT_KINDS = ("weight_steps_train", "weight_steps_search",
                   "arch_steps_search")
_PROBE_KINDS = ("probe_steps_search", "probe_steps_train")


def most_exposed(per_client: np.ndarray) -> dict[str, int]:
  """Counts of each kind (`_KINDS`, columns of `per_client`) whose
  composition bounds every client's.

  A probe step releases its gradient and more (the gradient step is a
  post-processing of it), so a client's releases are dominated by any
  count with at least its probes, at least its probes plus gradient steps
  and at least its feedback. The least such count takes each of the three
  maxima over clients: with partial participation it is often one client's
  exact count, and never above the component-wise maximum over the kinds
  (which charges a client both the most probe rounds of any client and the
  most plain rounds of any other: 29 steps where each client took 20, in
  the federated HyFreeDP schedule of 10 of 100 clients a round).
  """
  column = {kind: per_client[:, i] for i, kind in enumerate(_KINDS)}
  probes = sum(column[k] for k in _PROBE_KINDS)
  steps = probes + sum(column[k] for k in _GRADIENT_KINDS)
  feedback = column["hp_feedback"]
  # Start from the client with the most probes (then steps, then feedback)
  # and raise its plain steps and feedback to the maxima.
  client = np.lexsort((feedback, steps, probes))[-1]
  counts = {kind: int(column[kind][client]) for kind in _KINDS}
  missing = int(steps.max() - steps[client])
  for kind in _GRADIENT_KINDS:  # Within each kind's own maximum: it fits.
    added = min(missing, int(column[kind].max()) - counts[kind])
    counts[kind] += added
    missing -= added
  assert missing == 0, "a client's steps exceed the kinds' maxima"
  counts["hp_feedback"] = int(feedback.max())
  return counts


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
  probe_every: int = 0  # K of HyFreeDP; 0 = no loss probes (DP-SGD)
  releases_per_probe: int = 0
  kappa: float = 0.01
  feedback: bool = False  # a hyperparameter gain per search participation
  feedback_fraction: float = 0.1  # share of ε the feedback may spend
  arch_steps: bool = True  # separate architecture releases while searching
  # Search rounds before the first architecture step (DPNAS's controller
  # warm-up): their clients train sampled children's weights only.
  arch_warmup_rounds: int = 0
  # The mechanism's accounting of one kind of release (`Mechanism.release_stream`).
  release_stream: Callable[..., accounting.ReleaseStream] = (
      accounting.ReleaseStream)
  # σ_n of the one release of each client's size (`privacy.client_sizes`).
  size_noise_multiplier: float = 10.0
  # Earlier stages on the same data, composed in (their ε is part of ours).
  prior: PriorStage | None = None
  # Share of `epsilon` this run calibrates to: a search that a composed
  # retraining will follow leaves it the rest (`privacy.stage_share`).
  stage_share: float = 1.0
  # "example" or "client" (`privacy.unit`); for "client", the Poisson rate
  # at which each client takes part in a round.
  unit: str = "example"
  client_sampling_rate: float = 1.0
  # This run is one of a private random-search tuning (`accounting.Tuning`):
  # its ε is the tuning's, the selected run's, and σ is calibrated for it.
  tuning: accounting.Tuning | None = None

  @property
  def all_truncation_delta(self) -> float:
    """The truncation shares of δ of this run and of its earlier stages."""
    prior = self.prior.truncation_delta if self.prior else 0.0
    return self.truncation_delta + prior

  @property
  def accounting_delta(self) -> float:
    """δ of the accountant: the total less every stage's truncation share."""
    return self.delta - self.all_truncation_delta

  def epsilon_of(self, streams) -> float:
    """ε of `streams` composed, by this plan's accountant at its δ (of the
    tuning's selected run when this run is one of a tuning's)."""
    return accounting.epsilon(streams, self.accounting_delta, self.accountant,
                              self.tuning)

  @property
  def target_epsilon(self) -> float:
    return self.epsilon * self.stage_share

  @property
  def private(self) -> bool:
    """False for `privacy.epsilon=inf`: the same schedule with every noise
    multiplier 0 (clipping kept), nothing accounted; a ceiling to measure
    the privacy's cost against, never a private result."""
    return math.isfinite(self.epsilon)

  def counts(self, rounds_done: int) -> dict[str, int]:
    """Releases of each kind of a client at least as exposed as every one
    (`most_exposed`)."""
    if self.unit == "client":
      return {"client_updates": min(rounds_done, len(self.schedule))}
    return most_exposed(self.per_client_counts(rounds_done))

  def weight_releases(self, rounds_done: int) -> int:
    """The most weight-gradient releases of any client (its plain and its
    probe steps, search and training): what an audit of the weights sees."""
    if self.unit == "client":
      return self.counts(rounds_done)["client_updates"]
    per_client = self.per_client_counts(rounds_done)
    weights = [_KINDS.index(k) for k in (
        "weight_steps_search", "probe_steps_search", "weight_steps_train",
        "probe_steps_train")]
    return int(per_client[:, weights].sum(axis=1).max())

  def per_client_counts(self, rounds_done: int) -> np.ndarray:
    """(clients, kinds) example-level releases of each client (`_KINDS`)."""
    per_client = np.zeros((self.num_clients, len(_KINDS)), np.int64)
    for round_ in range(min(rounds_done, len(self.schedule))):
      first = round_ * self.local_steps
      probes = sum(1 for g in range(first, first + self.local_steps)
                   if self.probe_every and g % self.probe_every == 0)
      search = round_ < self.search_rounds
      arch = self.arch_steps and round_ >= self.arch_warmup_rounds
      row = ([self.local_steps - probes, probes,
              self.local_steps * arch, 0, 0, int(self.feedback)]
             if search else [0, 0, 0, self.local_steps - probes, probes, 0])
      per_client[self.schedule[round_]] += row
    return per_client

  def streams(self, sigmas: NoiseMultipliers, rounds_done: int
              ) -> list[accounting.ReleaseStream]:
    """Releases that dominate every client's after `rounds_done` rounds
    (`most_exposed`), earlier stages' included."""
    prior = list(self.prior.streams) if self.prior else []
    return prior + self.own_streams(sigmas, rounds_done)

  def own_streams(self, sigmas: NoiseMultipliers, rounds_done: int
                  ) -> list[accounting.ReleaseStream]:
    """This run's releases that dominate every client's (`most_exposed`)."""
    counts = self.counts(rounds_done)
    if self.unit == "client":
      return [self.release_stream("client_updates",
                                  self.client_sampling_rate,
                                  counts["client_updates"], sigmas.gradient)]
    q = self.sampling_rate
    probe = accounting.joint_noise_multiplier(
        sigmas.gradient,
        *[sigmas.loss] * self.releases_per_probe)
    streams = [self.release_stream("client_sizes", 1.0, 1,
                                   self.size_noise_multiplier)]
    for name, count in counts.items():
      is_probe = name.startswith("probe")
      if is_probe and not self.probe_every:
        continue
      if name == "hp_feedback":
        # The gain reads the client's whole validation split: no sampling.
        if self.feedback:
          streams.append(self.release_stream(name, 1.0, count,
                                                  sigmas.feedback))
        continue
      streams.append(self.release_stream(
          name, q, count, probe if is_probe else sigmas.gradient))
    return streams

  def spent(self, sigmas: NoiseMultipliers, rounds_done: int) -> float:
    """ε spent after `rounds_done` rounds (at the accounting δ)."""
    if not self.private:
      return math.inf
    streams = self.streams(sigmas, rounds_done)
    if not any(st.count for st in streams):
      return 0.0
    return self.epsilon_of(streams)

  def breakdown(self, sigmas: NoiseMultipliers) -> dict[str, float]:
    """ε of the whole run, and of each kind of release alone."""
    rounds = len(self.schedule)
    if not self.private:
      return {"total": math.inf}
    counts = self.counts(rounds)
    alone = self.epsilon_of
    out = {"total": self.spent(sigmas, rounds),
           "gradients_only": alone([
               s for s in self.own_streams(NoiseMultipliers(sigmas.gradient),
                                           rounds)
               if s.name != "client_sizes" and s.count])}
    if self.unit == "example":
      out["client_sizes_only"] = alone(self.own_streams(sigmas, 0))
    if self.prior:
      out["earlier_stages_only"] = alone(list(self.prior.streams))
      out["this_stage_only"] = alone(self.own_streams(sigmas, rounds))
    if self.feedback:
      count = counts["hp_feedback"]
      out["hp_feedback_only"] = alone(
          [self.release_stream("hp_feedback", 1.0, count, sigmas.feedback)])
    if self.probe_every:
      probes = sum(v for k, v in counts.items() if k.startswith("probe"))
      loss_only = sigmas.loss / math.sqrt(self.releases_per_probe)
      out["loss_probes_only"] = alone(
          [self.release_stream("loss_probes", self.sampling_rate, probes,
                               loss_only)])
    return out

  def noise_multipliers(self, given: float) -> NoiseMultipliers:
    """Calibrated σ (given <= 0), or `given` after checking it fits the budget.

    With loss probes, σ_g = (1 + κ)·σ_ref and σ_l is calibrated; a given σ
    is then taken as σ_g.
    """
    if not self.private:
      if given > 0:
        raise ConfigError(
            f"privacy.noise_multiplier={given} with privacy.epsilon=inf (no"
            " privacy): set privacy.noise_multiplier=0, or a finite"
            " privacy.epsilon to account for the noise")
      return NoiseMultipliers(0.0, 0.0, 0.0)
    rounds = len(self.schedule)
    # Gradients (and loss probes) first, within their share of ε; the
    # hyperparameter feedback then gets exactly the rest.
    gradient_epsilon = self.target_epsilon * (
        1 - self.feedback_fraction if self.feedback else 1)
    calibrate = lambda make, target=gradient_epsilon: (
        accounting.calibrate_noise_multiplier(
            lambda sigma: self.streams(make(sigma), rounds), target,
            self.accounting_delta, self.accountant, tuning=self.tuning))
    if given > 0:
      gradient = given
    else:
      gradient = calibrate(NoiseMultipliers)
      if self.probe_every:
        gradient *= 1.0 + self.kappa
    if self.probe_every:
      if self.spent(NoiseMultipliers(gradient), rounds) >= gradient_epsilon:
        raise ConfigError(
            f"the gradients alone spend privacy.epsilon={self.epsilon} with"
            f" σ_g={gradient:.4f}, leaving nothing for the loss probes; raise"
            " hyfree.kappa or privacy.noise_multiplier")
      sigmas = NoiseMultipliers(
          gradient, calibrate(lambda s: NoiseMultipliers(gradient, s)))
    else:
      sigmas = NoiseMultipliers(gradient)
    if self.feedback:
      if self.spent(sigmas, rounds) >= self.epsilon:
        raise ConfigError(
            f"privacy.noise_multiplier={given} leaves no budget for the"
            " hyperparameter feedback; raise it or set it to 0 to calibrate")
      sigmas = dataclasses.replace(sigmas, feedback=calibrate(
          lambda s: dataclasses.replace(sigmas, feedback=s),
          self.target_epsilon))
    eps = self.spent(sigmas, rounds)
    if eps > self.target_epsilon * (1 + 1e-6):
      raise ConfigError(
          f"privacy.noise_multiplier={given} would spend ε={eps:.3f} over this"
          f" schedule, above privacy.epsilon={self.epsilon} (times"
          f" privacy.stage_share={self.stage_share}); refusing to start."
          " Raise the noise multiplier, shorten the schedule, or set"
          " privacy.noise_multiplier=0 to calibrate it")
    return sigmas

  def as_prior(self, sigmas: NoiseMultipliers) -> PriorStage:
    """This run's releases (and its own priors) as a later stage reads them."""
    return PriorStage(
        tuple(s for s in self.streams(sigmas, len(self.schedule))
              if s.count and math.isfinite(s.noise_multiplier)),
        self.all_truncation_delta, tuning=self.tuning)

  def total_draws(self) -> int:
    """Events on which a padded shape may truncate: Poisson batches drawn in
    the whole run (all clients, all streams) and each client's public size
    bound (`client_sizes`); under client-level DP, each round's draw of
    clients (a client's local batches are inside its clipped delta)."""
    if self.unit == "client":
      return len(self.schedule)
    m = self.schedule.shape[1]
    train_rounds = len(self.schedule) - self.search_rounds
    return self.num_clients + m * self.local_steps * (
        (1 + self.arch_steps) * self.search_rounds + train_rounds)

  def truncation_tail(self) -> float:
    """Probability allowed to each truncation event (see `total_draws`)."""
    # Without privacy truncation costs nothing; ε = 0's tail keeps the
    # padded shapes those of a private run. A tuning's runs share its
    # truncation δ: the expected number of truncations over its runs is
    # mean_runs times one run's.
    runs = self.tuning.mean_runs if self.tuning else 1.0
    return accounting.truncation_tail(
        self.total_draws(), self.epsilon if self.private else 0.0,
        self.truncation_delta / runs)

  def client_slots(self) -> int:
    """Static number of client slots of a client-level round: a Poisson(q_c)
    draw of the population (one client more under add/remove) fits but with
    the truncation tail's probability."""
    return accounting.padded_batch_size(self.num_clients + 1,
                                        self.client_sampling_rate,
                                        self.truncation_tail())

  def padded_batch_size(self, split_sizes) -> int:
    """Static batch size for Poisson batches over splits of at most these
    (public bounds of) sizes.

    +1: a neighbouring dataset may hold one more example.
    """
    tail = self.truncation_tail()
    return max(accounting.padded_batch_size(int(n) + 1, self.sampling_rate,
                                            tail) for n in split_sizes)


def make_plan(schedule, *, search_rounds, local_steps, sampling_rate,
              num_clients, epsilon, delta, truncation_delta_fraction,
              accountant, probe_every=0, releases_per_probe=0,
              kappa=0.01, feedback=False,
              feedback_fraction=0.1, arch_steps=True,
              arch_warmup_rounds=0,
              release_stream=accounting.ReleaseStream,
              size_noise_multiplier=10.0, prior: PriorStage | None = None,
              stage_share: float = 1.0, unit: str = "example",
              client_sampling_rate: float = 1.0,
              tuning: accounting.Tuning | None = None) -> PrivacyPlan:
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
  if feedback and not 0 < feedback_fraction < 1:
    raise ConfigError("hpo.feedback_epsilon_fraction must be in (0, 1), got"
                      f" {feedback_fraction}")
  if not 0 <= arch_warmup_rounds <= search_rounds:
    raise ConfigError("nas.controller_warmup_rounds must be in [0,"
                      f" federated.search_rounds={search_rounds}], got"
                      f" {arch_warmup_rounds}")
  if probe_every and kappa <= 0:
    raise ConfigError(f"hyfree.kappa must be > 0, got {kappa}")
  if not 0 < size_noise_multiplier < math.inf:
    raise ConfigError("privacy.size_noise_multiplier must be a finite number"
                      f" > 0, got {size_noise_multiplier}")
  if unit == "client" and not 0 < client_sampling_rate <= 1:
    raise ConfigError("federated.clients_per_round / federated.num_clients"
                      f" must be in (0, 1], got {client_sampling_rate}")
  if not 0 < stage_share <= 1:
    raise ConfigError(f"privacy.stage_share must be in (0, 1], got"
                      f" {stage_share}")
  if tuning is not None:
    if accountant != "rdp":
      raise ConfigError(
          f"privacy.tuning_mean_runs={tuning.mean_runs} needs"
          f" privacy.accountant='rdp' (got {accountant!r}): the tuning's"
          " bound (Papernot & Steinke) is a Rényi-DP one")
    if prior is not None or stage_share < 1:
      raise ConfigError(
          "privacy.tuning_mean_runs tunes one whole run: it cannot compose"
          " an earlier stage (nas.genotype from a private search) or leave"
          f" a later one a share (privacy.stage_share={stage_share}); tune"
          " a run that trains from scratch, with privacy.stage_share=1")
  if prior is not None and prior.tuning is not None:
    raise ConfigError(
        f"the earlier stage ({prior.source}) was one run of a private"
        " tuning (privacy.tuning_mean_runs): composing a tuning's selection"
        " into a later stage is not supported; retrain from a search that"
        " was not tuned")
  plan = PrivacyPlan(schedule, search_rounds, local_steps, sampling_rate,
                     num_clients, epsilon, delta,
                     truncation_delta_fraction * delta, accountant,
                     probe_every, releases_per_probe, kappa, feedback,
                     feedback_fraction, arch_steps, arch_warmup_rounds,
                     release_stream, size_noise_multiplier, prior,
                     stage_share, unit, client_sampling_rate, tuning)
  if plan.accounting_delta <= 0:
    raise ConfigError(
        f"privacy.delta={delta} is spent by the truncation of this and the"
        f" earlier stages ({delta - plan.accounting_delta:.2e}); raise"
        " privacy.delta or lower privacy.truncation_delta_fraction")
  if prior is not None and plan.private:
    if any(st.noise_multiplier == 0 for st in prior.streams):
      raise ConfigError(
          f"the earlier stage ({prior.source}) ran without privacy"
          " (privacy.epsilon=inf): a private run cannot follow it; retrain"
          " with privacy.epsilon=inf too, or search privately")
    spent = plan.epsilon_of(list(prior.streams))
    if spent >= plan.target_epsilon:
      raise ConfigError(
          f"the earlier stage ({prior.source}) already spends ε={spent:.3f}"
          f" of privacy.epsilon={epsilon}: nothing is left for this run;"
          " raise privacy.epsilon (the total of both stages) or give the"
          " search a smaller privacy.stage_share")
  return plan
