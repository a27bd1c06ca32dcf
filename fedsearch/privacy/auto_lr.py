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
grow back, and every probe would read the flat value R_l.

The state is an optax-style pair `init` / `update`. In a federation the
server carries it between rounds (`optimizers.hyfree`): clients step with
the server's η and report their privatised probes (`ProbeReport`); the
server averages the reports over clients and fits η on that mean: the fit
is nonlinear, so averaging the probes before it, rather than the clients'
fitted η after it, is what lets the clients' noise cancel.
"""

import dataclasses
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
      also sets the step when the fit has no minimum (curvature ≤ 0).
    loss_clip_factor: R_l = this factor × the last privatised loss.
    min_learning_rate, max_learning_rate: absolute bounds on η.
    loss_noise_multiplier: σ_l of every loss probe.
  """

  probe_every: int = 10
  probe_scales: tuple[float, ...] = (0.0, 1.0, 2.0)
  initial_learning_rate: float = 1e-4
  initial_loss_clip: float = 1.0
  max_change: float = 10.0
  loss_clip_factor: float = 2.0
  min_learning_rate: float = 1e-6
  max_learning_rate: float = 1e2
  loss_noise_multiplier: float = 1.0

  def __post_init__(self):
    if self.probe_every < 1:
      raise ConfigError(f"hyfree.probe_every must be >= 1, got {self.probe_every}")
    if len(set(self.probe_scales)) < 3 or 0.0 not in self.probe_scales:
      raise ConfigError("hyfree.probe_scales needs 3 distinct values, 0 among"
                        " them (the loss at θ, which also sets R_l), got"
                        f" {self.probe_scales}")
    if self.max_change <= 1:
      raise ConfigError(f"hyfree.max_change must be > 1, got {self.max_change}")
    if not 0 < self.initial_learning_rate:
      raise ConfigError("hyfree.initial_learning_rate must be > 0, got"
                        f" {self.initial_learning_rate}")

  @property
  def releases_per_probe(self) -> int:
    return len(self.probe_scales)


class AutoLRState(NamedTuple):
  log_learning_rate: jax.Array  # log η, so that η stays positive
  loss_clip: jax.Array  # R_l

  @property
  def learning_rate(self) -> jax.Array:
    return jnp.exp(self.log_learning_rate)


class ProbeReport(NamedTuple):
  losses: jax.Array  # privatised losses at η·probe_scales
  probed: jax.Array  # 1.0 if the losses are new this round, else 0.0


def init(config: AutoLRConfig) -> AutoLRState:
  return AutoLRState(jnp.log(jnp.float32(config.initial_learning_rate)),
                     jnp.float32(config.initial_loss_clip))


def fit_quadratic(etas: jax.Array, losses: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Least squares L ≈ c − b·η + (a/2)·η²; returns (a, b)."""
  design = jnp.stack([jnp.ones_like(etas), -etas, 0.5 * etas**2], axis=-1)
  coef, *_ = jnp.linalg.lstsq(design, losses)
  return coef[2], coef[1]


def next_learning_rate(eta, a, b, config: AutoLRConfig) -> jax.Array:
  """η* = b/a, guarded.

  Curvature a ≤ 0 means the fit has no minimum along u: grow η by
  `max_change` if the loss goes down (b > 0), shrink it otherwise. A
  non-finite fit keeps η. Every update stays within a factor `max_change`.
  """
  step = config.max_change
  proposal = jnp.where(a > 0, b / a, jnp.where(b > 0, eta * step, eta / step))
  proposal = jnp.where(jnp.isfinite(proposal), proposal, eta)
  proposal = jnp.where(proposal > 0, proposal, eta / step)
  proposal = jnp.clip(proposal, eta / step, eta * step)
  return jnp.clip(proposal, config.min_learning_rate, config.max_learning_rate)


def update(state: AutoLRState, probe_losses: jax.Array,
           config: AutoLRConfig) -> AutoLRState:
  """New state from privatised losses at η·probe_scales (post-processing)."""
  eta = state.learning_rate
  scales = jnp.asarray(config.probe_scales, jnp.float32)
  a, b = fit_quadratic(scales * eta, probe_losses)
  new_eta = next_learning_rate(eta, a, b, config)
  at_zero = probe_losses[config.probe_scales.index(0.0)]
  loss_clip = jnp.where(jnp.isfinite(at_zero),
                        jnp.maximum(config.loss_clip_factor * at_zero,
                                    _MIN_LOSS_CLIP), state.loss_clip)
  return AutoLRState(jnp.log(new_eta), loss_clip.astype(jnp.float32))


def probe_losses(loss_at, state: AutoLRState, config: AutoLRConfig,
                 key, noised_sum=None) -> jax.Array:
  """Privatised losses at θ + s·η·u for each probe scale s.

  `loss_at(step) -> (per_example_loss, padding, expected_batch)` evaluates
  the batch at θ + step·u. Each probe is `mechanisms.privatized_mean` of
  the per-example losses with bound R_l (sensitivity R_l), noised by
  `noised_sum` (the mechanism's; default: the client adds all of it).
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
  return jnp.stack(values)
