"""One-run privacy audit with gradient-space canaries (white box).

Steinke, Nasr & Jagielski (NeurIPS 2023), "Privacy auditing with one (1)
training run": m canaries, each included independently with probability ½;
the adversary scores every canary from what it observes and guesses
"included" for the highest scores; the number of right guesses bounds ε
from below with confidence 1 − significance (`jax_privacy.auditing.
CanaryScoreAuditor.epsilon_one_run`). A sound mechanism keeps the bound at or
below the accountant's ε; a broken one (noise off, clipping off) is caught
by a bound far above it.

White box, Dirac canaries: canary i is an example whose per-example
gradient is `canary_norm`·e_i, a coordinate of its own (an adversary who
controls the gradient puts it where nothing else is). It takes part in the
weight releases of the audited schedule like any example: each canary
belongs to one of the round's clients, and in each of that client's steps
an included canary is in the Poisson(q) batch with probability q. The
releases are made by the mechanism under audit (its per-example clipping
`gradient` and its noise `private_optimizer`), so what is audited is the
code that trains. What the adversary observes follows the trust model:
under `local` each client's release (it carries the full noise), under
`aggregate` only the sum over the round's clients (each carries a share).
The score of canary i is the sum of its coordinate over every observed
release that could contain it.

The other examples' gradients are left out: they are independent of which
canaries are in, so they can only add to the scores' noise; leaving them
out audits the mechanism at its worst case.

Client-level DP (`mechanism.unit == "client"`), canary clients (Andrew
et al., ICLR 2024, with Dirac directions): canary client i's round delta is
`canary_norm`·e_i; each is included with probability ½ and, when included,
takes part in each round with the client sampling rate. Every round's
update is made by the mechanism under audit (its `combine`, clipping a
whole delta, and its `release`, the noise once and the fixed denominator,
with its server-carried state, e.g. adaptive clipping's scale); the
adversary sees the released update (what the server publishes) and scores
canary i by the sum of coordinate i over the rounds.

Black box, input canaries (`InputCanaries`): m examples of random pixels
(in the data's normalised units) with random labels, each included with
probability ½ in one client's training split of a real run (the main job,
`runner.run(..., canaries=...)`); the adversary sees only the final model
and scores each canary by the log-probability it gives the canary's label.
Far weaker than the white box (the final model is all it sees), it checks
the whole pipeline end to end.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax_privacy import auditing

from fedsearch.privacy import accounting
from fedsearch.privacy.mechanisms import Mechanism

# Canaries per block: coordinates of one simulated release vector. Blocks
# are independent (disjoint coordinates, independent noise), which bounds
# the per-step memory at clients · block² floats.
_BLOCK = 256


class AuditSchedule(NamedTuple):
  """The audited weight releases of one client, as the accountant sees them.

  Attributes:
    steps: weight releases of the most exposed client.
    sampling_rate: Poisson rate q of each.
    noise_multiplier: σ of each (the noise is σ·clip_norm).
    clip_norm: per-example clip norm C.
    clients: clients whose releases one observation covers (the round's).
  """

  steps: int
  sampling_rate: float
  noise_multiplier: float
  clip_norm: float
  clients: int = 1


class AuditResult(NamedTuple):
  epsilon_lower_bound: float  # empirical, at 1 − significance confidence
  epsilon_claimed: float  # the accountant's ε of the audited releases
  canaries: int
  included: int
  significance: float
  delta: float
  trust: str
  observation: str  # what the adversary saw (OBSERVATIONS)


class InputCanaries(NamedTuple):
  """Black-box canaries: examples, labels, inclusion and owning client."""

  x: np.ndarray  # (m, *input_shape) float32, normalised units
  y: np.ndarray  # (m,) int32
  included: np.ndarray  # (m,) bool
  owner: np.ndarray  # (m,) int32: the client whose training split holds it

  @classmethod
  def draw(cls, seed: int, count: int, input_shape, num_classes: int,
           num_clients: int) -> "InputCanaries":
    rng = np.random.default_rng([seed, 0xCA7A])
    return cls(rng.standard_normal((count, *input_shape)).astype(np.float32),
               rng.integers(num_classes, size=count).astype(np.int32),
               rng.random(count) < 0.5,
               rng.integers(num_clients, size=count).astype(np.int32))


def input_canary_scores(predict, canaries: InputCanaries) -> np.ndarray:
  """log p(label) the final model gives each canary (`predict(x) -> logits`)."""
  log_p = np.asarray(jax.nn.log_softmax(predict(jnp.asarray(canaries.x))))
  return log_p[np.arange(len(canaries.y)), canaries.y]


def _linear_loss(weights, arch, x, y):
  """A loss whose gradient in `weights` is the example `x` itself."""
  del arch, y
  return jnp.sum(weights * x)


# What the adversary observes: each client's release, or only their sum.
OBSERVATIONS = ("client", "aggregate")


def default_observation(mechanism: Mechanism) -> str:
  """What the trust model lets an adversary see."""
  return "aggregate" if mechanism.name == "aggregate" else "client"


class _Params(NamedTuple):
  weights: jax.Array
  arch: dict


class _ClientDeltas(NamedTuple):
  """Stacked canary-client deltas, shaped as the round hands them over."""

  params: _Params
  optimizer: None = None
  nas: None = None


def client_canary_scores(mechanism: Mechanism, schedule: AuditSchedule,
                         num_canaries: int, key: jax.Array,
                         canary_norm: float | None = None
                         ) -> tuple[np.ndarray, np.ndarray]:
  """(scores, included) of `num_canaries` Dirac canary clients (see the
  module docstring); `schedule.steps` are rounds, its `sampling_rate` the
  client sampling rate, its `clip_norm` S_w."""
  canary_norm = 100 * schedule.clip_norm if canary_norm is None else canary_norm
  include_key, sample_key, noise_key = jax.random.split(key, 3)
  included = jax.random.bernoulli(include_key, 0.5, (num_canaries,))
  deltas = _ClientDeltas(_Params(canary_norm * jnp.eye(num_canaries), {}))

  @jax.jit
  def round_(carry, t):
    scores, state = carry
    present = included & jax.random.bernoulli(
        jax.random.fold_in(sample_key, t), schedule.sampling_rate,
        (num_canaries,))
    sums, count = mechanism.combine(deltas, present.astype(jnp.float32),
                                    state)
    update, state = mechanism.release(sums, count, schedule.noise_multiplier,
                                      jax.random.fold_in(noise_key, t), state)
    return (scores + update.params.weights, state), None

  (scores, _), _ = jax.lax.scan(
      round_, (jnp.zeros(num_canaries), mechanism.init_state()),
      jnp.arange(schedule.steps))
  return np.asarray(scores), np.asarray(included)


def canary_scores(mechanism: Mechanism, schedule: AuditSchedule,
                  num_canaries: int, key: jax.Array,
                  canary_norm: float | None = None,
                  observe: str | None = None
                  ) -> tuple[np.ndarray, np.ndarray]:
  """(scores, included) of `num_canaries` Dirac canaries.

  `canary_norm` defaults to 100·C: clipped to C by a working mechanism, and
  a hundred times louder than the noise allows where clipping is off. `observe`
  (one of OBSERVATIONS) defaults to what the trust model exposes.
  """
  observe = observe or default_observation(mechanism)
  if observe not in OBSERVATIONS:
    raise ValueError(f"observe={observe!r}; choose one of {OBSERVATIONS}")
  canary_norm = 100 * schedule.clip_norm if canary_norm is None else canary_norm
  m = schedule.clients
  per_block = -(-_BLOCK // m) * m  # A multiple of the clients.
  blocks = -(-num_canaries // per_block)
  include_key, sample_key, noise_key = jax.random.split(key, 3)
  included = jax.random.bernoulli(include_key, 0.5, (blocks, per_block))
  clipped_sum = mechanism.gradient(_linear_loss, 0, schedule.clip_norm)
  # Canary j of a block belongs to client j mod m; its example is
  # canary_norm·e_j in the block's coordinates.
  owner = jnp.arange(per_block) % m
  examples = canary_norm * jnp.eye(per_block)
  observe_all = observe == "aggregate"

  def release(present, client_key):
    """One client's noised release over a block's coordinates."""
    total = clipped_sum(jnp.zeros(per_block), None, examples,
                        jnp.zeros(per_block), is_padding_example=~present)
    noise = mechanism.private_optimizer(
        schedule.noise_multiplier * schedule.clip_norm, client_key, 1.0,
        optax.identity())
    return noise.update(total, noise.init(total), total)[0]

  def step(scores, t):
    keys = jax.random.split(jax.random.fold_in(noise_key, t), (blocks, m))
    sampled = jax.random.bernoulli(jax.random.fold_in(sample_key, t),
                                   schedule.sampling_rate,
                                   (blocks, per_block))
    present = (included & sampled)[:, None, :] & (
        owner[None, None, :] == jnp.arange(m)[None, :, None])
    releases = jax.vmap(jax.vmap(release))(present, keys)  # (B, m, d)
    if observe_all:  # Only the sum over the round's clients is seen.
      observed = jnp.sum(releases, axis=1)
    else:  # Each canary is scored on its own client's release.
      observed = jnp.take_along_axis(
          releases, owner[None, None, :].repeat(blocks, 0), axis=1)[:, 0]
    return scores + observed, None

  scores, _ = jax.lax.scan(jax.jit(step), jnp.zeros((blocks, per_block)),
                           jnp.arange(schedule.steps))
  keep = np.arange(blocks * per_block) < num_canaries
  return (np.asarray(scores).ravel()[keep],
          np.asarray(included).ravel()[keep])


def one_run_epsilon(scores: np.ndarray, included: np.ndarray,
                    significance: float, delta: float) -> float:
  """Steinke et al.'s ε lower bound at confidence 1 − significance."""
  auditor = auditing.CanaryScoreAuditor(scores[included], scores[~included])
  return float(auditor.epsilon_one_run(significance, delta))


def white_box(mechanism: Mechanism, schedule: AuditSchedule, *,
              num_canaries: int = 1000, significance: float = 0.05,
              delta: float = 1e-5, accountant: str = "pld",
              key: jax.Array | None = None,
              canary_norm: float | None = None,
              observe: str | None = None) -> AuditResult:
  """Audits `mechanism` on `schedule` with Dirac canaries."""
  if num_canaries < 2:
    raise ValueError(f"num_canaries must be >= 2, got {num_canaries}")
  key = jax.random.key(0) if key is None else key
  if mechanism.unit == "client":
    observe = "aggregate"  # The server's released update.
    scores, included = client_canary_scores(mechanism, schedule,
                                            num_canaries, key, canary_norm)
  else:
    scores, included = canary_scores(mechanism, schedule, num_canaries, key,
                                     canary_norm, observe)
  claimed = accounting.epsilon(
      [accounting.ReleaseStream("audited_weight_steps",
                                schedule.sampling_rate, schedule.steps,
                                schedule.noise_multiplier)],
      delta, accountant)
  return AuditResult(one_run_epsilon(scores, included, significance, delta),
                     claimed, num_canaries, int(included.sum()), significance,
                     delta, mechanism.name,
                     observe or default_observation(mechanism))
