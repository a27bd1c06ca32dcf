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
  combine, release             how the server aggregates the clients'
                               updates: `combine` sums a group of clients
                               (a chunk of the round), `release` turns the
                               round's sum into the update the server uses
                               (client-level DP adds its noise there, once);
  release_stream               how one kind of release enters the accountant.
The federated round and the client update call only these, so a new trust
model or unit of privacy is a new mechanism, not a change to the round.

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
    its share-noised value): the round then computes every client's weight
    and architecture gradients at the round-start state, runs one sampled
    child for all of the round's clients (so the noised coordinates are the
    same for all), and moves the architecture by its optimiser on the
    server, from the released sum (`federated.algorithm`); `runner.job`
    refuses the releases that cannot be so computed.
    The simulation is idealised: continuous Gaussian shares, no
    quantisation or modular arithmetic, and every sampled client reports
    (no dropouts).
  client_level (unit "client", DP-FedAvg, McMahan et al., ICLR 2018): one
    neighbouring dataset adds or removes a whole client. Local training is
    plain (no per-example clipping, no noise); each sampled client's round
    delta (θ_k − θ, α_k − α) is clipped as one scaled vector,
    ‖(Δθ/S_w, Δα/S_α)‖ ≤ 1 (architecture deltas are ~10× smaller than
    weight deltas, so they get their own bound S_α), the server sums the
    clipped deltas, adds N(0, σ²S_w²) to the weights' and N(0, σ²S_α²) to
    the architecture's coordinates once, and divides by the expected number
    of clients per round q·N (McMahan's fixed denominator with equal
    weights: never the realised count, which would release who took part;
    FedAvg's size weights would release the sizes). With clients sampled by
    Poisson(q) the round is a subsampled Gaussian with multiplier σ on the
    client population. The noise of the sum is one draw, which equals in
    distribution the participants' secure-aggregation shares (trust
    `aggregate`); with `local` trust this would be client-level local DP,
    which is refused.
    Adaptive clipping (Andrew et al., NeurIPS 2021), with
    `adaptive_quantile` γ > 0: the bounds are c·(S_w, S_α) for a scale c the
    server carries (the mechanism's state, from 1). Each sampled client also
    reports b_k = 1[its scaled norm ≤ 1]; the server releases
    Σ_k (b_k − ½) + N(0, σ_b²) (sensitivity ½; σ_b = expected clients / 20,
    the paper's choice), estimates the fraction below the bound b̃ with the
    fixed denominator and moves c ← c·exp(−η_C (b̃ − γ)), so that c·S
    follows the γ-quantile of the update norms. Released with the update
    from the same sampled clients, the pair is one Gaussian of multiplier
    z = (z_Δ⁻² + (2σ_b)⁻²)^(−½) (their Theorem 1): the plan calibrates z,
    the update gets z_Δ = (z⁻² − (2σ_b)⁻²)^(−½), slightly more.
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
  # (stacked client deltas, FedAvg weights (0 marks a padding slot),
  # state) -> (their sum as this mechanism counts it, its weight); sums of
  # disjoint groups of clients add up.
  combine: Callable[..., tuple[object, jax.Array]]
  # (round's sum, its weight, noise multiplier, key, state) -> (the update
  # the server uses, the next state).
  release: Callable[..., tuple[object, object]]
  # (name, sampling_rate, count, noise_multiplier) -> accountant stream.
  release_stream: Callable[..., accounting.ReleaseStream]
  # () -> what the server carries for the mechanism between rounds (None:
  # nothing; adaptive clipping: the clip scale).
  init_state: Callable[[], object] = lambda: None
  # Each client adds only a share of the noise, so a client's own state is
  # not private: every release of a round must be computed from the
  # round-start (server) state, with one child per round for all clients,
  # and whatever the release is post-processed by (the architecture's Adam)
  # runs on the server (`federated.algorithm`).
  shares_noise: bool = False

  def aggregate(self, stacked, weights, noise_multiplier=0.0, key=None,
                state=None):
    """The released update of one group of clients."""
    return self.release(*self.combine(stacked, weights, state),
                        noise_multiplier, key, state)[0]


def weighted_sum(stacked, weights: jax.Array, state=None):
  """(Σ_k w_k x_k over the leading (client) axis of every leaf, Σ_k w_k)."""
  del state
  return (jax.tree.map(lambda x: jnp.tensordot(weights.astype(x.dtype), x,
                                               axes=1), stacked),
          jnp.sum(weights))


def divide(total, weight, noise_multiplier=0.0, key=None, state=None):
  """total / weight: the FedAvg mean of example-level mechanisms, whose
  updates are private before they are summed."""
  del noise_multiplier, key
  return jax.tree.map(lambda t: (t / weight).astype(t.dtype), total), state


def weighted_average(stacked, weights: jax.Array):
  """Σ_k w_k x_k / Σ_k w_k over the leading (client) axis of every leaf."""
  return divide(*weighted_sum(stacked, weights))[0]


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
      noised_sum=noised_sum, combine=weighted_sum, release=divide,
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
  if clients_per_round == 1:
    # The one client's share is the whole noise: its own state is private,
    # so it may run any schedule, exactly as under `local`.
    return whole._replace(name="aggregate")

  def shared_optimizer(stddev, key, expected_batch_size, optimizer):
    return private_optimizer(stddev * share, key, expected_batch_size,
                             optimizer)

  def shared_sum(total, stddev, key):
    return noised_sum(total, stddev * share, key)

  return whole._replace(name="aggregate", private_optimizer=shared_optimizer,
                        noised_sum=shared_sum, shares_noise=True)


def _summed_weight_gradient(model, loss, clip_norm=None, clipping=None,
                            gamma=None):
  """The plain gradient of the batch's summed loss (padding rows left out):
  under client-level DP a client's steps need no per-example bound."""
  del clip_norm, clipping, gamma

  def gradient(weights, arch, x, y, key=None, *, is_padding_example):
    def total(w):
      losses = loss(model.apply(w, arch, x, key), y)
      return jnp.sum(jnp.where(is_padding_example, 0.0, losses))
    return jax.grad(total)(weights)
  return gradient


def _summed_gradient(loss_fn, argnums, clip_norm=None, clipping=None,
                     gamma=None):
  """Σ over the batch's real examples of ∇ `loss_fn` (a batch-mean loss, so
  taken example by example), unclipped."""
  del clip_norm, clipping, gamma
  grad = jax.grad(loss_fn, argnums)

  def gradient(weights, arch, x, y, *rest, is_padding_example):
    per_example = jax.vmap(
        lambda xi, yi: grad(weights, arch, xi[None], yi[None], *rest))(x, y)
    keep = jnp.logical_not(is_padding_example)
    return jax.tree.map(
        lambda g: jnp.tensordot(keep.astype(g.dtype), g, axes=1),
        per_example)
  return gradient


def _plain_optimizer(stddev, key, expected_batch_size, optimizer):
  """The mean over the batch, then `optimizer`; no noise (client-level DP
  noises the round's sum at the server)."""
  del stddev, key
  chain = optax.chain(optax.scale(1.0 / expected_batch_size), optimizer)
  return optax.GradientTransformationExtraArgs(
      chain.init, lambda updates, state, params=None, **extra: chain.update(
          updates, state, params))


def _no_client_scalar(total, stddev, key):
  raise ConfigError(
      "privacy.unit='client' releases only clipped round deltas; a client's"
      " privatised scalar sent to the server (hyperparameter gain, HyFreeDP"
      " loss probe) has no client-level form here")


def default_count_stddev(clients_per_round: int) -> float:
  """σ_b of adaptive clipping's count: Andrew et al.'s expected clients / 20."""
  return clients_per_round / 20


def update_noise_multiplier(joint: float, count_stddev: float) -> float:
  """z_Δ of the update so that it and the clipped count (std σ_b,
  sensitivity ½) are together one Gaussian of multiplier `joint`."""
  if joint == 0:
    return 0.0
  if joint >= 2 * count_stddev:
    raise ConfigError(
        f"adaptive clipping: the round's noise multiplier {joint:.3f} leaves"
        f" nothing for the update beside the count's σ_b = {count_stddev:g};"
        " raise federated.clients_per_round (σ_b is a twentieth of it) or"
        " privacy.epsilon, or set privacy.adaptive_clip_quantile=0")
  return (joint**-2 - (2 * count_stddev) ** -2) ** -0.5


def client_level(dp_backend: str = "vmap", nan_safe: bool = True,
                 clients_per_round: int = 1, clip_norm: float = 1.0,
                 arch_clip_norm: float = 0.1, adaptive_quantile: float = 0.0,
                 adaptive_learning_rate: float = 0.2,
                 count_stddev: float | None = None) -> Mechanism:
  """DP-FedAvg with a whole client as the unit (see the module docstring).

  Args:
    dp_backend, nan_safe: unused (no per-example clipping); a non-finite
      client delta is dropped (counted as zero), whatever `nan_safe`.
    clients_per_round: the expected clients per round q·N, the fixed
      denominator.
    clip_norm: S_w, the bound of a client's weight delta (at scale 1).
    arch_clip_norm: S_α, the bound of its architecture delta (at scale 1).
    adaptive_quantile: γ of adaptive clipping; 0 keeps the bounds fixed.
    adaptive_learning_rate: η_C, the geometric step of the scale.
    count_stddev: σ_b of the clipped count; None: clients_per_round / 20.
  """
  del dp_backend, nan_safe
  if clients_per_round < 1:
    raise ConfigError("federated.clients_per_round must be >= 1, got"
                      f" {clients_per_round}")
  for name, value in (("clip_norm", clip_norm),
                      ("arch_clip_norm", arch_clip_norm)):
    if not 0 < value < float("inf"):
      raise ConfigError(f"privacy.{name} must be a finite number > 0, got"
                        f" {value}")
  if not 0 <= adaptive_quantile < 1:
    raise ConfigError("privacy.adaptive_clip_quantile must be in [0, 1) (0:"
                      f" fixed clipping), got {adaptive_quantile}")
  if adaptive_learning_rate <= 0:
    raise ConfigError("privacy.adaptive_clip_learning_rate must be > 0, got"
                      f" {adaptive_learning_rate}")
  adaptive = adaptive_quantile > 0
  if count_stddev is None:
    count_stddev = default_count_stddev(clients_per_round)

  def scaled_sq_norms(stacked):
    """(m,) ‖(Δθ_k/S_w, Δα_k/S_α)‖² of each client."""
    def sq(tree, bound):
      return sum(jnp.sum(jnp.reshape(x, (x.shape[0], -1)) ** 2, axis=1)
                 for x in jax.tree.leaves(tree)) / bound**2
    return (sq(stacked.params.weights, clip_norm)
            + sq(stacked.params.arch, arch_clip_norm))

  def combine(stacked, weights, scale=None):
    """((Σ_k clipped Δ_k, Σ_k (b_k − ½)), clients that took part)."""
    carried = jax.tree.leaves((stacked.optimizer, stacked.nas))
    if carried:
      raise ConfigError(
          "privacy.unit='client' bounds only the model's deltas; this client"
          " optimiser or NAS strategy also sends server-carried state"
          " (choose client.optimizer='dpsgd'; build a controller strategy"
          " with nas.make_strategy(..., unit='client'))")
    # Norms in units of the current bounds c·(S_w, S_α).
    norms = jnp.sqrt(scaled_sq_norms(stacked)) / (1.0 if scale is None
                                                   else scale)
    present = weights > 0
    ok = jnp.isfinite(norms) & present
    factor = jnp.where(ok, jnp.minimum(1.0, 1.0 / jnp.maximum(norms, 1e-12)),
                       0.0)
    total = jax.tree.map(
        lambda x: jnp.tensordot(
            factor.astype(x.dtype),
            jnp.where(jnp.reshape(ok, (-1,) + (1,) * (x.ndim - 1)), x, 0.0),
            axes=1), stacked)
    # A dropped (non-finite) client counts as above the bound.
    below = jnp.sum(jnp.where(present, (ok & (norms <= 1.0)) - 0.5, 0.0))
    return (total, below), jnp.sum(present.astype(jnp.float32))

  def release(sums, weight, noise_multiplier, key, scale=None):
    del weight  # The realised count would release who took part.
    total, below = sums
    update_key, count_key = jax.random.split(key)
    c = 1.0 if scale is None else scale
    z = (update_noise_multiplier(noise_multiplier, count_stddev) if adaptive
         else noise_multiplier)
    params = total.params
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(update_key, max(len(leaves), 1))
    bounds = jax.tree.leaves(params._replace(
        weights=jax.tree.map(lambda _: clip_norm, params.weights),
        arch=jax.tree.map(lambda _: arch_clip_norm, params.arch)))
    noisy = [x + (z * c * bound) * jax.random.normal(k, x.shape, x.dtype)
             for x, bound, k in zip(leaves, bounds, keys)]
    noised = total._replace(params=jax.tree.unflatten(tree, noisy))
    mean = jax.tree.map(lambda t: t / clients_per_round, noised)
    if not adaptive:
      return mean, scale
    fraction_below = (below + count_stddev * jax.random.normal(count_key)
                      + clients_per_round / 2) / clients_per_round
    return mean, scale * jnp.exp(
        -adaptive_learning_rate * (fraction_below - adaptive_quantile))

  return Mechanism(
      name="aggregate", unit="client",
      weight_gradient=_summed_weight_gradient,
      gradient=_summed_gradient, private_optimizer=_plain_optimizer,
      noised_sum=_no_client_scalar, combine=combine, release=release,
      release_stream=accounting.ReleaseStream,
      init_state=(lambda: jnp.float32(1.0)) if adaptive else (lambda: None))


# Keyed by `privacy.trust` (example-level DP).
MECHANISMS = {"local": local, "aggregate": aggregate}
# `privacy.unit`: what one neighbouring dataset adds or removes.
UNITS = ("example", "client")


def make_mechanism(trust: str, unit: str = "example", **options) -> Mechanism:
  if trust not in MECHANISMS:
    raise ConfigError(f"privacy.trust={trust!r} is not allowed; choose one of"
                      f" {sorted(MECHANISMS)}")
  if unit not in UNITS:
    raise ConfigError(f"privacy.unit={unit!r} is not allowed; choose one of"
                      f" {list(UNITS)}")
  if unit == "client":
    if trust != "aggregate":
      raise ConfigError(
          "privacy.unit='client' with privacy.trust='local' would be"
          " client-level local DP (each client noising its whole update),"
          " which fedsearch does not offer; set privacy.trust='aggregate'")
    return client_level(**options)
  return MECHANISMS[trust](**options)
