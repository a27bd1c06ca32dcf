"""Privacy mechanisms: how a release is bounded, noised, aggregated and accounted.

Every quantity a client computes from its data and sends out goes through one
`Mechanism`:
  weight_gradient / gradient   the bounded part: a clipped per-example sum
                               (sensitivity = the clip norm under add/remove
                               of one example);
  private_optimizer            noise on such a sum, the mean over the
                               expected batch, then an optax optimiser;
  noised_sum                   noise on a bounded scalar sum (rewards, loss
                               probes, hyperparameter feedback);
  aggregate                    how the server combines the clients' updates;
  release_stream               how one kind of release enters the accountant.
The federated round and the client update call only these, so a new trust
model (noise shared out among clients under secure aggregation, client-level
clipping of whole updates) is a new member of `MECHANISMS`, not a change to
the round.

Members:
  local: example-level DP, no one trusted. Each client adds the full noise
    N(0, (σ·S)²) to each of its own releases (S: the release's sensitivity),
    so every message that leaves a client is already private; the server
    averages them (FedAvg weights, treated as public). Each release is a
    Poisson(q)-subsampled Gaussian on the client's examples.
  aggregate: example-level DP with the noise added once to the sum over the
    round's m clients, as secure aggregation gives it: each client adds only
    its share N(0, (σ·S)²/m), so a client's own message is not private on
    its own; the server (or anyone) sees only the sum, which carries
    N(0, (σ·S)²), exactly the noise of `local`'s one release. The
    accountant is therefore the same. Sound only when every release of a
    round is a linear function of the round-start state and the client's
    bounded sums (one local step, nothing post-processed by the client from
    its share-noised value): `runner.job` refuses the other combinations.
    The simulation is idealised: continuous Gaussian shares, no
    quantisation or modular arithmetic, and every sampled client reports
    (no dropouts).
"""

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import jax_privacy
import optax
from jax_privacy import noise_addition

from fedsearch.errors import ConfigError
from fedsearch.privacy import accounting, dp_grad, ghost


class Model(NamedTuple):
  """A model as the DP code sees it.

  `apply(weights, arch, x, key=None) -> logits`; `probed(weights, probes,
  arch, x, key=None) -> (logits, probes)` is the same model with the ghost
  backend's norm probes (see `privacy.ghost`), or None when its layers have
  none.
  """

  apply: Callable[..., jax.Array]
  probed: Callable[..., tuple[jax.Array, dict]] | None = None


def softmax_cross_entropy(logits, labels):
  """The default per-example loss `loss(logits, label)`."""
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


def example_losses(model: Model, loss: Callable) -> Callable:
  """`(weights, arch, x, y, key) -> (B,)` per-example losses."""
  def losses(weights, arch, x, y, key):
    return loss(model.apply(weights, arch, x, key), y)
  return losses


def mean_loss(model: Model, loss: Callable) -> Callable:
  per_example = example_losses(model, loss)
  return lambda *args: per_example(*args).mean()


def _probed_losses(model: Model, loss: Callable) -> Callable:
  if model.probed is None:
    raise ConfigError(
        "privacy.dp_backend='ghost' needs a model built with"
        " search_space.network.with_norm_probes (its layers from"
        " search_space.layers); this model has none: use 'vmap'")

  def losses(weights, probes, arch, x, y, key):
    logits, probes = model.probed(weights, probes, arch, x, key)
    return loss(logits, y), probes
  return losses


def noised_sum(total: jax.Array, stddev, key) -> jax.Array:
  """`total` + N(0, stddev²): the Gaussian mechanism on a bounded sum."""
  return total + stddev * jax.random.normal(key, ())


def privatized_mean(values: jax.Array, padding: jax.Array, bound,
                    noise_multiplier, key, normaliser,
                    add_noise: Callable = noised_sum) -> jax.Array:
  """(Σ_i clip(v_i, ±bound) + N(0, (σ·bound)²)) / normaliser.

  Formal guarantee: adding or removing one example moves the clipped sum by
  at most `bound` whatever the values (a non-finite v_i counts as 0, padding
  rows as nothing), so the release is the Gaussian mechanism with
  sensitivity `bound` and multiplier σ; the division by a public normaliser
  (the expected batch or split size) is post-processing. Used for loss
  probes, rewards (accuracies, bound 1) and hyperparameter feedback.
  """
  values = jnp.where(jnp.isfinite(values), values, 0.0)
  clipped = jnp.where(padding, 0.0, jnp.clip(values, -bound, bound))
  return add_noise(jnp.sum(clipped), noise_multiplier * bound, key) / normaliser


class Mechanism(NamedTuple):
  """One trust model / unit of privacy (see the module docstring)."""

  name: str
  unit: str  # what one neighbouring dataset adds or removes: "example"
  # (model, loss, clip_norm, clipping, gamma) -> clipped sum of per-example
  # weight gradients, `(weights, arch, x, y, key, is_padding_example=...)`.
  weight_gradient: Callable[..., jax_privacy.clipping.BoundedSensitivityCallable]
  # (mean_loss, argnums, clip_norm, clipping, gamma) -> clipped sum over
  # the arguments `argnums` (architecture and joint steps).
  gradient: Callable[..., jax_privacy.clipping.BoundedSensitivityCallable]
  # (stddev, key, expected_batch, optimizer) -> optax transformation whose
  # `update(..., noise_mask=...)` noises the clipped sum.
  private_optimizer: Callable[..., optax.GradientTransformation]
  # (bounded sum, stddev, key) -> the released value.
  noised_sum: Callable[..., jax.Array]
  # (stacked client values, FedAvg weights) -> what the server uses.
  aggregate: Callable[..., object]
  # (name, sampling_rate, count, noise_multiplier) -> accountant stream.
  release_stream: Callable[..., accounting.ReleaseStream]


def weighted_average(stacked, weights: jax.Array):
  """Σ_k w_k x_k / Σ_k w_k over the leading (client) axis of every leaf."""
  weights = weights / jnp.sum(weights)
  return jax.tree.map(lambda x: jnp.tensordot(weights, x, axes=1), stacked)


def private_optimizer(stddev: float, key, expected_batch_size,
                      optimizer: optax.GradientTransformation
                      ) -> optax.GradientTransformation:
  """Noise on the clipped sum, then the mean over the expected batch, then `optimizer`.

  The expected batch q·n is a constant of the plan, not the realised size
  (which depends on the data). `update(..., noise_mask=tree of bools)`
  limits the noise (`dp_grad.masked_noise`).
  """
  return optax.chain(
      dp_grad.masked_noise(noise_addition.gaussian_privatizer(
          stddev=stddev, prng_key=key)),
      optax.scale(1.0 / expected_batch_size),
      optimizer,
  )


def _vmap_weight_gradient(nan_safe: bool) -> Callable:
  """jax-privacy's per-example gradients (`vmap(grad)`), then clipping."""
  def weight_gradient(model, loss, clip_norm, clipping="flat", gamma=0.01):
    return dp_grad.clipped_grad_sum(mean_loss(model, loss), 0, clip_norm,
                                    nan_safe, clipping, gamma)
  return weight_gradient


def _ghost_weight_gradient(nan_safe: bool) -> Callable:
  """Per-example norms from layer inputs and output cotangents, then the
  clipped sum by book-keeping (`privacy.ghost`); always NaN-safe."""
  del nan_safe
  def weight_gradient(model, loss, clip_norm, clipping="flat", gamma=0.01):
    return ghost.clipped_grad_sum(_probed_losses(model, loss), clip_norm,
                                  clipping, gamma)
  return weight_gradient


# Keyed by `privacy.dp_backend`: how weight steps clip per example.
DP_BACKENDS = {"vmap": _vmap_weight_gradient, "ghost": _ghost_weight_gradient}


def local(dp_backend: str = "vmap", nan_safe: bool = True,
          clients_per_round: int = 1) -> Mechanism:
  """Example-level DP with each client adding its own full noise.

  Args:
    dp_backend: a key of `DP_BACKENDS`, for weight steps. Architecture and
      joint steps always use per-example gradients ("vmap").
    nan_safe: zero a non-finite per-example gradient before clipping (vmap;
      ghost is always NaN-safe).
    clients_per_round: unused (each client's noise is whole).
  """
  del clients_per_round
  if dp_backend not in DP_BACKENDS:
    raise ConfigError(f"privacy.dp_backend={dp_backend!r} is not allowed;"
                      f" choose one of {list(DP_BACKENDS)}")

  def gradient(loss_fn, argnums, clip_norm, clipping="flat", gamma=0.01):
    return dp_grad.clipped_grad_sum(loss_fn, argnums, clip_norm, nan_safe,
                                    clipping, gamma)

  return Mechanism(
      name="local", unit="example",
      weight_gradient=DP_BACKENDS[dp_backend](nan_safe),
      gradient=gradient, private_optimizer=private_optimizer,
      noised_sum=noised_sum, aggregate=weighted_average,
      release_stream=accounting.ReleaseStream)


def aggregate(dp_backend: str = "vmap", nan_safe: bool = True,
              clients_per_round: int = 1) -> Mechanism:
  """Example-level DP with the noise shared out among the round's clients.

  Each of the `clients_per_round` clients adds N(0, (σ·S)²/m) to its bounded
  sums, so their sum carries N(0, (σ·S)²). With FedAvg weights
  proportional to the sizes the normalisers q·n̂_k come from, the server's
  average is Σ_k (bounded sum_k + share_k) / (q·Σ n̂_k): centralised DP-SGD
  on the union of the clients' batches.
  """
  if clients_per_round < 1:
    raise ConfigError("federated.clients_per_round must be >= 1, got"
                      f" {clients_per_round}")
  share = 1.0 / clients_per_round**0.5
  whole = local(dp_backend, nan_safe)

  def shared_optimizer(stddev, key, expected_batch_size, optimizer):
    return private_optimizer(stddev * share, key, expected_batch_size,
                             optimizer)

  def shared_sum(total, stddev, key):
    return noised_sum(total, stddev * share, key)

  return whole._replace(name="aggregate", private_optimizer=shared_optimizer,
                        noised_sum=shared_sum)


# Keyed by `privacy.trust`.
MECHANISMS = {"local": local, "aggregate": aggregate}


def make_mechanism(trust: str, **options) -> Mechanism:
  if trust not in MECHANISMS:
    raise ConfigError(f"privacy.trust={trust!r} is not allowed; choose one of"
                      f" {sorted(MECHANISMS)}")
  return MECHANISMS[trust](**options)
