"""A client's local update: alternating DP steps on architecture and weights.

First-order DARTS (Liu et al. 2019) as FEATHERS/FedNAS run it on a client:
each local step first moves the architecture logits on a batch of the
client's local validation split, then the weights on a batch of its local
train split. Both steps are DP-SGD steps: per-example clipped gradient sum,
Gaussian noise of std σC, mean over the expected batch size, then the
optimiser. Nothing else computed from the client's data leaves this function.

One-stage strategies (`one_stage=True`, Direct Federated NAS) instead take
one joint step per local step on the train batch: the per-example gradient
of (weights, architecture) is clipped as one vector and noised once, so a
step is one Gaussian release with multiplier σ. The architecture part enters
the clipping scaled by C/C_a, so after the shared noise N(0, (σC)²) is
divided back it carries std σ·C_a, as in the alternating form. Every step's
model may be a sampled child: it is drawn from the step's own key (per
client, per step).

With `optimizer="hyfree"` the weight steps are HyFreeDP's: automatic
clipping, the base optimiser at unit learning rate, and a step size η from
`privacy.auto_lr`. Every K global steps a client releases privatised loss
probes on the step's own batch; they go out through `params['carried']`,
the server averages them over clients and refits η (`auto_lr.apply_report`),
so the fit sees the clients' mean, whose noise is √m times smaller.

Policy-gradient strategies (`reinforce`, DPNAS's controller) replace the
architecture step's clipped gradient by one privatised scalar: the sampled
child's validation accuracy on the step's batch, Σ_i correct_i + N(0, σ²)
over the expected batch size (per-example values in {0, 1}: sensitivity 1,
the same multiplier σ and Poisson rate as a gradient architecture step, so
the accountant counts it as one). The policy update is computed from that
scalar and the client's own random child alone: post-processing. The
reward baseline travels in `params['carried']['reward_baseline']`.
"""

import dataclasses
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from fedsearch.errors import ConfigError
from fedsearch.hyperparameters import feedback
from fedsearch.privacy import auto_lr, clipped_grad_sum, ghost
from fedsearch.privacy import private_optimizer
from fedsearch.privacy.auto_lr import AutoLRConfig

OPTIMIZERS = ("dpsgd", "hyfree")
DP_BACKENDS = ("vmap", "ghost")


def check_optimizer(name: str) -> None:
  if name not in OPTIMIZERS:
    raise ConfigError(f"client.optimizer={name!r} is not allowed; choose one"
                      f" of {list(OPTIMIZERS)}")


class Batches(NamedTuple):
  """`steps` padded Poisson batches: x (S, B, ...), y (S, B), padding (S, B)."""

  x: jax.Array
  y: jax.Array
  padding: jax.Array


class ClientBatches(NamedTuple):
  train: Batches
  val: Batches | None  # None when the architecture is not trained.
  # The whole validation split, x (V, ...): the rows a hyperparameter gain is
  # measured on. None when no feedback is asked for.
  feedback: Batches | None = None
  # (S,) bool, a prefix of Trues: which of the S local steps this client
  # takes (a searched `local_steps` below S); None: all of them. A step not
  # taken releases nothing and changes nothing.
  active_steps: jax.Array | None = None


# Client hyperparameters a search may set per client (traced values that
# override the ClientConfig's).
TUNABLE = ("learning_rate", "momentum", "weight_decay", "arch_learning_rate",
           "arch_weight_decay")


@dataclasses.dataclass(frozen=True)
class ClientConfig:
  """Static hyperparameters of local training (DARTS defaults for the arch)."""

  clip_norm: float = 1.0
  # Architecture gradients are ~10x smaller than weight gradients (measured
  # median per-example norm 0.09 vs 1.5 on digits at init): a bound of their
  # own keeps their noise (σ times this bound) in proportion.
  arch_clip_norm: float = 0.1
  noise_multiplier: float = 1.0
  learning_rate: float = 0.05
  momentum: float = 0.9
  weight_decay: float = 0.0
  arch_learning_rate: float = 3e-3
  arch_b1: float = 0.5
  arch_b2: float = 0.999
  arch_weight_decay: float = 1e-3
  nan_safe: bool = True
  optimizer: str = "dpsgd"  # dpsgd | hyfree (weight steps)
  auto_clip_gamma: float = 0.01  # γ of HyFreeDP's automatic clipping
  auto_lr: AutoLRConfig = AutoLRConfig()
  # Hyperparameter feedback (see hyperparameters/feedback.py): per-example
  # validation-loss decreases clipped to ±feedback_clip, noise multiplier σ_f.
  feedback_clip: float = 0.5
  feedback_noise_multiplier: float = 1.0

  # How weight steps clip per example: "vmap" (jax-privacy, per-example
  # gradients) or "ghost" (per-example norms from layer inputs and output
  # cotangents, then the clipped sum by book-keeping; privacy.ghost).
  # Architecture and one-stage joint steps always use "vmap".
  dp_backend: str = "vmap"

  def __post_init__(self):
    check_optimizer(self.optimizer)
    if self.dp_backend not in DP_BACKENDS:
      raise ConfigError(f"privacy.dp_backend={self.dp_backend!r} is not"
                        f" allowed; choose one of {list(DP_BACKENDS)}")


def init_reward_baseline() -> dict:
  """Moving-average reward baseline, as the server carries it: Σ dᵗ⁻ˢ(1−d)R̃_s
  and its normaliser 1 − dᵗ (bias correction: the first reward is its own
  baseline, so the first update has no advantage to follow)."""
  return {"sum": jnp.float32(0.0), "weight": jnp.float32(0.0)}


def baseline_value(baseline: dict, reward: jax.Array) -> jax.Array:
  return jnp.where(baseline["weight"] > 0,
                   baseline["sum"] / jnp.maximum(baseline["weight"], 1e-12),
                   reward)


def update_baseline(baseline: dict, reward: jax.Array, decay: float) -> dict:
  return {"sum": decay * baseline["sum"] + (1 - decay) * reward,
          "weight": decay * baseline["weight"] + (1 - decay)}


def per_example_loss(apply_fn: Callable) -> Callable:
  def loss(weights, arch, x, y, key):
    logits = apply_fn(weights, arch, x, key)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y)
  return loss


def probed_example_loss(apply_fn: Callable) -> Callable:
  """Per-example losses through the model's norm-probed twin (ghost DP)."""
  probed = getattr(apply_fn, "probed", None)
  if probed is None:
    raise ConfigError(
        "privacy.dp_backend='ghost' needs a model built with"
        " search_space.network.with_norm_probes (its layers from"
        " search_space.layers); this model has none: use 'vmap'")

  def loss(weights, probes, arch, x, y, key):
    logits, probes = probed(weights, probes, arch, x, key)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y), probes
  return loss


def weight_grad_sum(apply_fn: Callable, config: ClientConfig):
  """The clipped per-example weight-gradient sum of `config.dp_backend`."""
  clipping = "auto" if config.optimizer == "hyfree" else "flat"
  if config.dp_backend == "ghost":
    return ghost.clipped_grad_sum(probed_example_loss(apply_fn),
                                  config.clip_norm, clipping,
                                  config.auto_clip_gamma)
  return clipped_grad_sum(cross_entropy_loss(apply_fn), 0, config.clip_norm,
                          config.nan_safe, clipping, config.auto_clip_gamma)


def cross_entropy_loss(apply_fn: Callable) -> Callable:
  per_example = per_example_loss(apply_fn)
  return lambda *args: per_example(*args).mean()


def add_gradient_of(penalty: Callable) -> optax.GradientTransformation:
  """Adds ∇penalty(params) to the updates (a data-independent term)."""
  def update(updates, state, params):
    return jax.tree.map(jnp.add, updates, jax.grad(penalty)(params)), state
  return optax.GradientTransformation(lambda params: optax.EmptyState(),
                                      update)


def make_local_update(apply_fn: Callable, config: ClientConfig,
                      train_arch: bool, one_stage: bool = False,
                      arch_penalty: Callable | None = None,
                      active_weights: Callable | None = None,
                      reinforce=None) -> Callable:
  """Builds `local_update(params, batches, key, expected_batch, first_step)`.

  Args:
    apply_fn: `apply_fn(weights, arch_params, x, key) -> logits`; `key` is
      the step's (a sampled child is drawn from it; others ignore it).
    config: local hyperparameters and DP constants.
    train_arch: whether the architecture parameters are trained (search
      phase) or left as they are (training a derived model).
    one_stage: with `train_arch`, update weights and architecture jointly on
      the train batch (see the module docstring); `batches.val` is unused.
    arch_penalty: optional `arch_params -> scalar` added to the architecture
      objective (e.g. an expected-cost penalty). It must not read data: its
      gradient joins after the noise, as post-processing.
    active_weights: optional `(weights, arch, step_key) -> tree of bools`,
      the parameters the step's model uses (a sampled child's); the weight
      noise is added only there (see `privacy.dp_grad.masked_noise`).
    reinforce: a `search_space.strategies.Reinforce`: architecture steps are
      policy-gradient steps on a privatised reward (module docstring); then
      `params['carried']['reward_baseline']` must exist.

  `params` is {'weights': ..., 'arch': ...} (plus {'carried': {'auto_lr':
  ...}} for HyFreeDP); `expected_batch` is (train, val, feedback) floats: q
  times the client's split sizes (the DP-SGD normalisers) and its
  validation-split size; `first_step` is the global index of the first local
  step (HyFreeDP probes every K global steps); `hparams` optionally sets
  entries of TUNABLE for this client. Optimiser states start fresh every
  round (stateless clients, as in FedAvg). Returns (new params, privatised
  validation gain or None when `batches.feedback` is None).
  """
  hyfree = config.optimizer == "hyfree"
  lr_config = config.auto_lr
  loss = cross_entropy_loss(apply_fn)
  example_losses = per_example_loss(apply_fn)
  # One-stage search steps are joint (below); their model may have no probes.
  weight_grad = (None if train_arch and one_stage
                 else weight_grad_sum(apply_fn, config))
  arch_grad = clipped_grad_sum(loss, 1, config.arch_clip_norm, config.nan_safe)
  arch_scale = config.clip_norm / config.arch_clip_norm
  scale = lambda tree, factor: jax.tree.map(lambda a: a * factor, tree)
  joint_grad = clipped_grad_sum(
      lambda w, scaled_arch, *rest: loss(w, scale(scaled_arch, arch_scale),
                                         *rest),
      (0, 1), config.clip_norm, config.nan_safe,
      "auto" if hyfree else "flat", config.auto_clip_gamma)
  alternating_arch = train_arch and not one_stage
  weight_stddev = config.noise_multiplier * config.clip_norm
  arch_stddev = config.noise_multiplier * config.arch_clip_norm
  policy_gradient = alternating_arch and reinforce is not None

  def reward_step(weights, arch, baseline, val, step_key, noise_key,
                  expected):
    """(policy gradient, next baseline) from one child's privatised reward."""
    choices = reinforce.sample(arch, jax.random.fold_in(step_key, 1))
    logits = reinforce.child_logits(weights, val.x, choices)
    correct = (jnp.argmax(logits, -1) == val.y).astype(jnp.float32)
    # Any bounded per-example mean: correct ∈ {0, 1}, so the bound is 1.
    reward = auto_lr.privatized_mean_loss(correct, val.padding, 1.0,
                                          config.noise_multiplier, noise_key,
                                          expected)
    advantage = reward - baseline_value(baseline, reward)
    g = jax.grad(reinforce.policy_loss)(arch, choices, advantage)
    return g, update_baseline(baseline, reward, reinforce.baseline_decay)

  def local_update(params, batches: ClientBatches, key, expected_batch,
                   first_step, hparams=None):
    (weight_key, arch_key, probe_key, feedback_key, model_key,
     feedback_model_key) = jax.random.split(key, 6)
    h = {name: getattr(config, name) for name in TUNABLE}
    h.update(hparams or {})
    weight_opt = private_optimizer(
        weight_stddev, weight_key, expected_batch[0],
        optax.chain(optax.add_decayed_weights(h["weight_decay"]),
                    optax.sgd(1.0 if hyfree else h["learning_rate"],
                              h["momentum"])))
    arch_inner = optax.chain(
        *([add_gradient_of(arch_penalty)] if arch_penalty else []),
        optax.add_decayed_weights(h["arch_weight_decay"]),
        optax.adam(h["arch_learning_rate"], config.arch_b1, config.arch_b2))
    # A policy gradient is post-processing of an already noised reward.
    arch_opt = (arch_inner if policy_gradient else private_optimizer(
        arch_stddev, arch_key, expected_batch[1], arch_inner))
    weights, arch = params["weights"], params["arch"]
    carried = params.get("carried")
    eta = carried["auto_lr"].learning_rate if hyfree else 1.0

    def probe(weights, arch, updates, train, step, step_key):
      def loss_at(step_size):
        moved = optax.apply_updates(
            weights, jax.tree.map(lambda u: step_size * u, updates))
        return (example_losses(moved, arch, train.x, train.y, step_key),
                train.padding, expected_batch[0])
      return auto_lr.probe_losses(loss_at, carried["auto_lr"], lr_config,
                                  jax.random.fold_in(probe_key, step))

    def step(carry, batch):
      train, val, active = batch
      new_carry, _ = dp_step(carry, (train, val))
      if active is None:
        return new_carry, None
      # The steps taken are a prefix, so the optimiser states after the last
      # one are never used (they start fresh next round): only the
      # parameters and the probe report need keeping.
      weights, arch, weight_state, arch_state, report, baseline, index = (
          new_carry)
      kept = jax.tree.map(lambda new, old: jnp.where(active, new, old),
                          (weights, arch, report, baseline),
                          (carry[0], carry[1], carry[4], carry[5]))
      return (kept[0], kept[1], weight_state, arch_state, kept[2], kept[3],
              index), None

    def dp_step(carry, batch):
      weights, arch, weight_state, arch_state, report, baseline, index = carry
      train, val = batch
      step_key = jax.random.fold_in(model_key, index)
      if policy_gradient:
        g, baseline = reward_step(weights, arch, baseline, val, step_key,
                                  jax.random.fold_in(arch_key, index),
                                  expected_batch[1])
      elif alternating_arch:
        g = arch_grad(weights, arch, val.x, val.y, step_key,
                      is_padding_example=val.padding)
      if alternating_arch:
        updates, arch_state = arch_opt.update(g, arch_state, arch)
        arch = optax.apply_updates(arch, updates)
      if train_arch and one_stage:
        g, scaled_arch_g = joint_grad(
            weights, scale(arch, 1 / arch_scale), train.x, train.y, step_key,
            is_padding_example=train.padding)
        arch_updates, arch_state = arch_opt.update(
            scale(scaled_arch_g, 1 / arch_scale), arch_state, arch)
      else:
        g = weight_grad(weights, arch, train.x, train.y, step_key,
                        is_padding_example=train.padding)
      noise_mask = (active_weights(weights, arch, step_key) if active_weights
                    else None)
      updates, weight_state = weight_opt.update(g, weight_state, weights,
                                                noise_mask=noise_mask)
      if hyfree:
        global_step = first_step + index
        # The step index is the same for every client, so under vmap this
        # stays a real branch: probes cost only on probe steps.
        report = jax.lax.cond(
            global_step % lr_config.probe_every == 0,
            lambda: auto_lr.ProbeReport(
                probe(weights, arch, updates, train, global_step, step_key),
                jnp.ones_like(report.probed)),
            lambda: report)
        updates = jax.tree.map(lambda u: eta * u, updates)
      weights = optax.apply_updates(weights, updates)
      if train_arch and one_stage:
        arch = optax.apply_updates(arch, arch_updates)
      return (weights, arch, weight_state, arch_state, report, baseline,
              index + 1), None

    report = carried["report"] if hyfree else None
    baseline = carried["reward_baseline"] if policy_gradient else None
    carry = (weights, arch, weight_opt.init(weights), arch_opt.init(arch),
             report, baseline, jnp.int32(0))
    xs = (batches.train, batches.val if alternating_arch else None,
          batches.active_steps)
    (weights, arch, _, _, report, baseline, _), _ = jax.lax.scan(
        step, carry, xs)
    new = {"weights": weights, "arch": arch}
    if carried is not None:
      new["carried"] = dict(carried)
      if hyfree:
        new["carried"]["report"] = report
      if policy_gradient:
        new["carried"]["reward_baseline"] = baseline
    gain = None
    if batches.feedback is not None:
      fb = batches.feedback
      # Before and after are measured on the same child.
      gain = feedback.privatized_gain(
          example_losses(params["weights"], params["arch"], fb.x, fb.y,
                         feedback_model_key),
          example_losses(weights, arch, fb.x, fb.y, feedback_model_key),
          fb.padding,
          config.feedback_clip, config.feedback_noise_multiplier,
          feedback_key, expected_batch[2])
    return new, gain

  return local_update
