"""HyFreeDP's automatic learning rate: privatised loss probes and a quadratic fit.

Every K steps the loss of the current batch is released, privatised, at a few
points θ + s·η·u along the step's update u (itself computed from the
privatised gradient), s in `probe_scales`. A least-squares fit of
L̃(η) ≈ c − b·η + (a/2)·η² gives the step size η* = b/a that minimises the
loss along u (Liu, Bu et al., ICLR 2025, after GeN). Each probe is the
Gaussian mechanism on per-example losses clipped to [−R_l, R_l]: sensitivity
R_l under add/remove, noise N(0, (σ_l·R_l)²), then the mean over the expected
batch size. R_l then follows the last privatised loss at η = 0, which is
post-processing, times `loss_clip_factor`: the clipped mean can never
exceed R_l, so with R_l = L̃ exactly (factor 1) a bound set too low (e.g. the
default 1 against a 10-class cross-entropy of 2.3 at init) could never
grow back, and every probe would read the flat value R_l. The other way is
as bad: the clipped mean is below the mean, so R_l = 2·L̃ shrinks whenever
mean(min(ℓ, R_l)) < R_l/2, which holds once most examples are easy; each
refit then halves R_l, down to its floor, and the probes read only the
easiest examples' flat losses (measured on MNIST: R_l 3.3 → 0.001 by round
151 federated, 1.6 → 0.001 by epoch 8 centralised, after which no fit could
move η). So R_l only grows (`loss_clip_shrinks` False, the default): it
follows 2·L̃ up while the losses are large and then holds, a bound the
losses had reached (a departure from the paper, whose R_l follows the loss
both ways; the paper's-rule rows keep it).

Departures from the paper, measured on digits (centralised, batch ~180, ε 3;
`experiments/README.md`, "HyFreeDP"), where the paper's rule trained nothing
(13.9 % against DP-SGD's 90.5 %):
- The paper's fit moves η on every probe, however noisy. With the probes'
  noise ν = σ_l·R_l/B above the loss changes a step makes (ν ≈ 0.3 on
  digits, 0.02 on MNIST at batch 2048, against changes of 0.001-0.1), the
  fit's sign is noise, and its guards are not symmetric (of the four sign
  patterns of (a, b), two shrink η, one grows it): η drifted down by 10×
  per fit, to 1e-6. Here η moves only on evidence (`significance` z): the
  fitted η* = b/a when the curvature a exceeds z times its standard error
  (from ν and the probe points), else up (down) by `max_change` when the
  slope b is above (below) ±z times its own, else it stays. ν is public
  (σ_l, R_l and the expected batch). z = 3: on noise alone a probe moves η
  with probability ~0.4 %, about 0.5 false moves over the ~116 probes of
  DPNAS's 40-epoch MNIST recipe (z = 2: ~7 %, eight moves). A move is at
  most ×2 (`max_change`; the paper's guard allows any), so one false
  positive costs a factor 2, not 10.
- Evidence is pooled over the probes taken since η last moved
  (`evidence_decay` λ): the fit runs on the precision-weighted mean of
  their losses, Σ λ^age·w·L / Σ λ^age·w with w = 1/ν², whose noise has
  std √(Σ λ^(2·age)·w) / Σ λ^age·w; η moves when that pooled fit is
  significant, and the pool restarts at the new η. The fit is linear in
  the losses, so the pooled (a, b) are the window's mean slope and
  curvature along its updates and b/a the step that minimises the mean
  quadratic model: the best constant step over the window. Each test has
  the same false-move rate on noise alone as one probe's (its statistic
  is N(0, 1) either way); what pooling changes is the power: at λ = 0.9 a
  full window has ν·√((1 − λ)/(1 + λ)) = 0.23·ν, a 4.4× larger z for the
  same signal. Measured reason, in the example-level federation on MNIST
  (`experiments/README.md`, "HyFreeDP federated"): with ν ≈ 0.02 no single
  probe of the run's 20 was significant, so η stayed at its start while
  an lr grid found 2× better. It is post-processing of released probes:
  free. λ = 0 is one probe alone (the paper).
- η0: the paper's 1e-4 (at R = 1) is an Adam-scale rate for fine-tuning.
  The main job starts η where DP-SGD's rate would be (`runner.job.
  auto_lr_config`: `client.learning_rate` after the data-independent
  round-noise cap, with R = `privacy.clip_norm`), so HyFreeDP begins as
  DP-SGD does and leaves it only on evidence; where the probes rarely reach
  significance, that is where η stays. (On digits, centralised: η·R = 0.2,
  DPNAS's rate 2 × clip 0.1, 90.5 %; 0.05: 87.2 %; 1: 77.7 %.)

The state is an optax-style pair `init` / `update`. In a federation the
server carries it between rounds (`optimizers.hyfree`): clients step with
the server's η and report their privatised probes (`ProbeReport`); the
server averages the reports over clients and fits η on that mean: the fit
is nonlinear, so averaging the probes before it, rather than the clients'
fitted η after it, is what lets the clients' noise cancel.
"""

import dataclasses
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from fedsearch.errors import ConfigError
from fedsearch.privacy import mechanisms

_MIN_LOSS_CLIP = 1e-3


@dataclasses.dataclass(frozen=True)
class AutoLRConfig:
  """Constants of the automatic learning rate (HyFreeDP defaults).

  Attributes:
    probe_every: K, steps between loss probes.
    probe_scales: the probes sit at s·η for these s (one release each).
    initial_learning_rate: η before the first fit.
    initial_loss_clip: R_l before the first privatised loss.
    max_change: one update moves η by at most this factor either way; it
      is also the step when the loss falls or rises significantly without a
      significant curvature.
    significance: z of the tests that let the probes move η (see the module
      docstring); 0 moves η on every fit, as the paper does.
    loss_clip_factor: R_l = this factor × the last privatised loss.
    loss_clip_shrinks: whether R_l may fall with the loss (the paper) or
      only grow (module docstring).
    evidence_decay: λ, the weight an earlier probe's evidence keeps per
      later probe while η stays (module docstring); 0: each probe alone.
    min_learning_rate, max_learning_rate: absolute bounds on η.
    loss_noise_multiplier: σ_l of every loss probe.
    reporting_clients, shared_noise: see `probe_losses`.
  """

  probe_every: int = 10
  probe_scales: tuple[float, ...] = (0.0, 1.0, 2.0)
  # The main job resolves its η0 itself (see the module docstring).
  initial_learning_rate: float = 0.2
  initial_loss_clip: float = 1.0
  max_change: float = 2.0
  significance: float = 3.0
  loss_clip_factor: float = 2.0
  loss_clip_shrinks: bool = False
  evidence_decay: float = 0.9
  min_learning_rate: float = 1e-6
  max_learning_rate: float = 1e2
  loss_noise_multiplier: float = 1.0
  # m, the clients whose reports the server averages each round, and
  # whether they share the noise (trust `aggregate`): together they give
  # the std of the averaged probes (`probe_losses`).
  reporting_clients: int = 1
  shared_noise: bool = False

  def __post_init__(self):
    if self.probe_every < 1:
      raise ConfigError(f"hyfree.probe_every must be >= 1, got {self.probe_every}")
    if len(set(self.probe_scales)) < 3 or 0.0 not in self.probe_scales:
      raise ConfigError("hyfree.probe_scales needs 3 distinct values, 0 among"
                        " them (the loss at θ, which also sets R_l), got"
                        f" {self.probe_scales}")
    if self.reporting_clients < 1:
      raise ConfigError("federated.clients_per_round must be >= 1, got"
                        f" {self.reporting_clients}")
    if self.max_change <= 1:
      raise ConfigError(f"hyfree.max_change must be > 1, got {self.max_change}")
    if not 0 <= self.significance < math.inf:
      raise ConfigError("hyfree.significance must be a finite number >= 0,"
                        f" got {self.significance}")
    if not 0 <= self.evidence_decay < 1:
      raise ConfigError("hyfree.evidence_decay must be in [0, 1), got"
                        f" {self.evidence_decay}")
    if not 0 < self.initial_learning_rate:
      raise ConfigError("hyfree.initial_learning_rate must be > 0 (or 0 in"
                        " the main job: DP-SGD's rate), got"
                        f" {self.initial_learning_rate}")

  @property
  def releases_per_probe(self) -> int:
    return len(self.probe_scales)


class AutoLRState(NamedTuple):
  log_learning_rate: jax.Array  # log η, so that η stays positive
  loss_clip: jax.Array  # R_l
  # The probes pooled since η last moved (`update`): Σ λ^age·w·L over
  # their losses L, Σ λ^age·w and Σ λ^(2·age)·w, with w = 1/ν².
  evidence: jax.Array
  evidence_weight: jax.Array
  evidence_weight_sq: jax.Array

  @property
  def learning_rate(self) -> jax.Array:
    return jnp.exp(self.log_learning_rate)


class ProbeReport(NamedTuple):
  losses: jax.Array  # privatised losses at η·probe_scales
  probed: jax.Array  # 1.0 if the losses are new this round, else 0.0
  # ν, the std of the noise of each loss the server averages (public:
  # σ_l, R_l, the expected batch, the clients and who adds the noise; see
  # `probe_losses`).
  noise_std: jax.Array | float = 0.0


def init(config: AutoLRConfig) -> AutoLRState:
  return AutoLRState(jnp.log(jnp.float32(config.initial_learning_rate)),
                     jnp.float32(config.initial_loss_clip),
                     jnp.zeros(config.releases_per_probe, jnp.float32),
                     jnp.float32(0.0), jnp.float32(0.0))


def _design(etas: jax.Array) -> jax.Array:
  return jnp.stack([jnp.ones_like(etas), -etas, 0.5 * etas**2], axis=-1)


def fit_quadratic(etas: jax.Array, losses: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Least squares L ≈ c − b·η + (a/2)·η²; returns (a, b)."""
  coef, *_ = jnp.linalg.lstsq(_design(etas), losses)
  return coef[2], coef[1]


def fit_standard_errors(etas: jax.Array, noise_std) -> tuple[jax.Array, jax.Array]:
  """(sd of a, sd of b) of the fit when each loss has independent noise of
  std `noise_std`: σ·√diag((XᵀX)⁻¹)."""
  design = _design(etas)
  cov = jnp.linalg.inv(design.T @ design)
  return (noise_std * jnp.sqrt(cov[2, 2]), noise_std * jnp.sqrt(cov[1, 1]))


def next_learning_rate(eta, losses, config: AutoLRConfig,
                       noise_std=0.0) -> jax.Array:
  """η after probes `losses` at η·probe_scales, each with noise std
  `noise_std`.

  With a, b the fit's curvature and slope and sd_a, sd_b their standard
  errors: η* = b/a where a > z·sd_a; else ×/÷ `max_change` where
  b > z·sd_b / b < −z·sd_b; else η (module docstring). A non-finite fit
  keeps η. Every update stays within a factor `max_change` and the
  absolute bounds.
  """
  step, z = config.max_change, config.significance
  etas = jnp.asarray(config.probe_scales, jnp.float32) * eta
  a, b = fit_quadratic(etas, losses)
  sd_a, sd_b = fit_standard_errors(etas, noise_std)
  proposal = jnp.where(
      a > z * sd_a, b / a,
      jnp.where(b > z * sd_b, eta * step,
                jnp.where(b < -z * sd_b, eta / step, eta)))
  proposal = jnp.where(jnp.isfinite(proposal) & jnp.all(jnp.isfinite(losses)),
                       proposal, eta)
  proposal = jnp.where(proposal > 0, proposal, eta / step)
  proposal = jnp.clip(proposal, eta / step, eta * step)
  return jnp.clip(proposal, config.min_learning_rate, config.max_learning_rate)


def pool_evidence(state: AutoLRState, probe_losses: jax.Array, noise_std,
                  decay: float) -> tuple[AutoLRState, jax.Array, jax.Array]:
  """The state with this probe's losses pooled in, the pooled losses and
  their noise std (module docstring). A probe without a known noise
  (ν = 0: not privatised) or with a non-finite loss is not pooled: the
  former is used alone, the latter adds nothing."""
  noise_std = jnp.asarray(noise_std, jnp.float32)
  usable = (noise_std > 0) & jnp.all(jnp.isfinite(probe_losses))
  weight = jnp.where(usable, 1.0 / jnp.where(usable, noise_std, 1.0)**2, 0.0)
  evidence = decay * state.evidence + weight * jnp.where(usable, probe_losses,
                                                         0.0)
  total = decay * state.evidence_weight + weight
  total_sq = decay**2 * state.evidence_weight_sq + weight
  pooled = state._replace(evidence=evidence, evidence_weight=total,
                          evidence_weight_sq=total_sq)
  alone = noise_std <= 0
  losses = jnp.where(alone, probe_losses, evidence / total)
  std = jnp.where(alone, noise_std, jnp.sqrt(total_sq) / total)
  return pooled, losses, std


def update(state: AutoLRState, probe_losses: jax.Array,
           config: AutoLRConfig, noise_std=0.0) -> AutoLRState:
  """New state from privatised losses at η·probe_scales, whose noise has
  std `noise_std` (post-processing): η from the evidence pooled since it
  last moved, R_l from this probe's loss at η = 0."""
  eta = state.learning_rate
  pooled, losses, std = pool_evidence(state, probe_losses, noise_std,
                                      config.evidence_decay)
  new_eta = next_learning_rate(eta, losses, config, std)
  at_zero = probe_losses[config.probe_scales.index(0.0)]
  followed = jnp.maximum(config.loss_clip_factor * at_zero, _MIN_LOSS_CLIP)
  if not config.loss_clip_shrinks:
    followed = jnp.maximum(followed, state.loss_clip)
  loss_clip = jnp.where(jnp.isfinite(at_zero), followed, state.loss_clip)
  # Probes at the new η sit at other points: the pool restarts.
  restart = new_eta != eta
  keep = lambda x: jnp.where(restart, jnp.zeros_like(x), x).astype(jnp.float32)
  return AutoLRState(jnp.log(new_eta), loss_clip.astype(jnp.float32),
                     keep(pooled.evidence), keep(pooled.evidence_weight),
                     keep(pooled.evidence_weight_sq))


def report_noise_factor(config: AutoLRConfig) -> float:
  """c/√m of `probe_losses`: a client's share of the noise (c), over √m."""
  m = config.reporting_clients
  share = 1.0 / math.sqrt(m) if config.shared_noise else 1.0
  return share / math.sqrt(m)


def probe_losses(loss_at, state: AutoLRState, config: AutoLRConfig,
                 key, noised_sum=None) -> ProbeReport:
  """Privatised losses at θ + s·η·u for each probe scale s, and their noise.

  `loss_at(step) -> (per_example_loss, padding, expected_batch)` evaluates
  the batch at θ + step·u. Each probe is `mechanisms.privatized_mean` of
  the per-example losses with bound R_l (sensitivity R_l), noised by
  `noised_sum` (the mechanism's; default: the client adds all of it), so
  its noise has std s_k = σ_l·R_l·c / expected batch (c = 1/√m when the m
  clients share the noise, else 1). The report's `noise_std` is the std of
  the server's average instead: its FedAvg weights are proportional to the
  expected batches, so the average is Σ_k (sum_k + noise_k) / Σ_k q·n̂_k,
  whose noise has std σ_l·R_l·√(m·c²) / Σ_k q·n̂_k; averaged like the
  losses, s_k/√m from each client gives exactly that.
  """
  add_noise = noised_sum or mechanisms.noised_sum
  eta = state.learning_rate
  keys = jax.random.split(key, config.releases_per_probe)
  values = []
  for s, k in zip(config.probe_scales, keys):
    per_example, padding, expected = loss_at(s * eta)
    values.append(mechanisms.privatized_mean(
        per_example, padding, state.loss_clip, config.loss_noise_multiplier,
        k, expected, add_noise))
  noise_std = (config.loss_noise_multiplier * state.loss_clip / expected
               * report_noise_factor(config))
  return ProbeReport(jnp.stack(values), jnp.float32(1.0),
                     jnp.asarray(noise_std, jnp.float32))
