"""A client's local update: DP steps whose every release goes through one mechanism.

Each local step (a `lax.scan` over the client's Poisson batches):
  1. the NAS strategy's architecture step, if it has one before the weights
     (DARTS: a clipped, noised architecture gradient on a validation batch;
     REINFORCE: a policy step on a privatised reward);
  2. the clipped per-example sum of weight gradients (with one-stage
     strategies, of weights and architecture jointly), noised by the
     mechanism, divided by the expected batch, through the client
     optimiser's base transform; noise only on the parameters the step's
     model uses (`active_weights`);
  3. the client optimiser's step (HyFreeDP: η, and privatised loss probes);
  4. the strategy's architecture update from a jointly released gradient.
Nothing else computed from the client's data leaves this function, except
the optional hyperparameter feedback: the privatised decrease of the
validation loss (or 0/1 error) over the round (`hyperparameters.feedback`).

Optimiser states start fresh every round (stateless clients, as in FedAvg);
what the server carries for the client optimiser and the strategy enters
and leaves through `ClientState`.
"""

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from fedsearch.hyperparameters import feedback
from fedsearch.nas.base import ArchContext, ArchStep, weights_only
from fedsearch.optimizers import ClientOptimizer, StepProbe, dpsgd
from fedsearch.privacy import mechanisms
from fedsearch.privacy.mechanisms import Mechanism, Model


class Batches(NamedTuple):
  """`steps` padded Poisson batches: x (S, B, ...), y (S, B), padding (S, B)."""

  x: jax.Array
  y: jax.Array
  padding: jax.Array


class ClientBatches(NamedTuple):
  train: Batches
  val: Batches | None  # None when no architecture step reads it.
  # The whole validation split, x (V, ...): the rows a hyperparameter gain is
  # measured on. None when no feedback is asked for.
  feedback: Batches | None = None
  # (S,) bool, a prefix of Trues: which of the S local steps this client
  # takes (a searched `local_steps` below S); None: all of them. A step not
  # taken releases nothing and changes nothing.
  active_steps: jax.Array | None = None


class ModelParams(NamedTuple):
  weights: Any
  arch: Any  # {} once the architecture is fixed


class ClientState(NamedTuple):
  """What a client starts a round from and sends back (all averaged)."""

  params: ModelParams
  optimizer: Any  # the client optimiser's server-carried state
  nas: Any  # the NAS strategy's server-carried state


class ClientKeys(NamedTuple):
  """A client's independent random streams for one round. Every reader of a
  client's randomness takes its stream from here by name, so that no two
  releases can come to share a key through a reordered split."""

  weight: jax.Array  # the weight gradients' noise
  arch: jax.Array  # the architecture step's noise
  probe: jax.Array  # the client optimiser's loss probes
  feedback: jax.Array  # the hyperparameter gain's noise
  model: jax.Array  # the children the local steps sample
  feedback_model: jax.Array  # the child a gain is measured on


def client_keys(key: jax.Array) -> ClientKeys:
  return ClientKeys(*jax.random.split(key, len(ClientKeys._fields)))


def feedback_losses(model: Model, loss: Callable, config: "ClientConfig"
                    ) -> Callable:
  """`(weights, arch, x, y, key) -> (B,)`: the per-example ℓ a gain reads
  (`config.feedback_measure`, hyperparameters/feedback.py)."""
  return mechanisms.example_losses(
      model, feedback.measure(config.feedback_measure, loss))


def validation_gain(example_losses: Callable, before: ModelParams,
                    after: ModelParams, validation: Batches, keys: ClientKeys,
                    config: "ClientConfig", expected_size,
                    noised_sum: Callable) -> jax.Array:
  """The client's privatised decrease of its validation losses from `before`
  to `after`, both measured on the same child."""
  def losses(params: ModelParams):
    return example_losses(params.weights, params.arch, validation.x,
                          validation.y, keys.feedback_model)
  return feedback.privatized_gain(
      losses(before), losses(after), validation.padding, config.feedback_clip,
      config.feedback_noise_multiplier, keys.feedback, expected_size,
      noised_sum)


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
  auto_clip_gamma: float = 0.01  # γ of automatic clipping (HyFreeDP)
  # Hyperparameter feedback (see hyperparameters/feedback.py): per-example
  # validation-loss decreases clipped to ±feedback_clip, noise multiplier σ_f.
  feedback_clip: float = 0.5
  feedback_noise_multiplier: float = 1.0
  feedback_measure: str = "loss"  # `feedback.MEASURES`: what ℓ a gain reads


def add_gradient_of(penalty: Callable) -> optax.GradientTransformation:
  """Adds ∇penalty(params) to the updates (a data-independent term)."""
  def update(updates, state, params):
    return jax.tree.map(jnp.add, updates, jax.grad(penalty)(params)), state
  return optax.GradientTransformation(lambda params: optax.EmptyState(),
                                      update)


def arch_optimizer(config: ClientConfig, h=None,
                   penalty: Callable | None = None
                   ) -> optax.GradientTransformation:
  """The architecture's optax chain, before any noise the strategy adds;
  `h` overrides entries of TUNABLE."""
  h = {name: getattr(config, name) for name in TUNABLE} | (h or {})
  return optax.chain(
      *([add_gradient_of(penalty)] if penalty else []),
      optax.add_decayed_weights(h["arch_weight_decay"]),
      optax.adam(h["arch_learning_rate"], config.arch_b1, config.arch_b2))


class _Carry(NamedTuple):
  weights: Any
  arch: Any
  weight_opt: Any
  arch_step: Any
  optimizer: Any
  index: jax.Array


class _Step(NamedTuple):
  """What every local step of one client's round closes over."""

  arch: ArchStep
  weight_opt: optax.GradientTransformationExtraArgs
  optimizer: ClientOptimizer
  example_losses: Callable
  active_weights: Callable | None
  model_key: jax.Array
  probe_key: jax.Array
  first_step: jax.Array
  expected_batch: jax.Array
  # Not None: the weight step reads this round-start architecture, not the
  # one the strategy's step before it moved (`Mechanism.shares_noise`).
  # Taken from the round's start (the same for all clients, so the child's
  # op switch stays one branch under vmap), not from the per-client carry.
  round_start_arch: Any


def _dp_step(step: _Step, carry: _Carry, train: Batches, val) -> _Carry:
  """One local step (see the module docstring for its parts)."""
  step_key = jax.random.fold_in(step.model_key, carry.index)
  arch_params, arch_carry = step.arch.before_weights(
      carry.arch_step, carry.weights, carry.arch, val, step_key, carry.index)
  weight_arch = (arch_params if step.round_start_arch is None
                 else step.round_start_arch)
  g, arch_grad = step.arch.gradients(carry.weights, weight_arch, train,
                                     step_key)
  noise_mask = (step.active_weights(carry.weights, weight_arch, step_key)
                if step.active_weights else None)
  updates, weight_state = step.weight_opt.update(
      g, carry.weight_opt, carry.weights, noise_mask=noise_mask)

  def loss_at(step_size, direction=None):
    along = updates if direction is None else direction
    moved = optax.apply_updates(
        carry.weights, jax.tree.map(lambda u: step_size * u, along))
    return (step.example_losses(moved, weight_arch, train.x, train.y,
                                step_key),
            train.padding, step.expected_batch[0])

  updates, opt_state = step.optimizer.update(
      updates, carry.optimizer,
      StepProbe(loss_at, step.first_step + carry.index, step.probe_key))
  arch_params, arch_carry = step.arch.after_weights(arch_carry, arch_params,
                                                    arch_grad)
  return _Carry(optax.apply_updates(carry.weights, updates), arch_params,
                weight_state, arch_carry, opt_state, carry.index + 1)


def _varying_like(tree, reference):
  """`tree`, typed as varying wherever the per-client `reference` is.

  Inside `shard_map`, a carry masked by a per-client `reference` (which
  steps a client takes) becomes varying over the client axis, so its
  initial value must be too, or the scan's carry types differ (e.g. the step
  count of a fresh optimiser state). Under `vmap` the axis types cannot be
  read, so the type is carried over by adding a zero computed from
  `reference` (compiled away). Key leaves are left as they are.
  """
  zero = jnp.sum(jnp.zeros_like(reference, jnp.int32))

  def cast(x):
    if jnp.issubdtype(x.dtype, jnp.bool_):
      return x | zero.astype(bool)
    if jnp.issubdtype(x.dtype, jnp.number):
      return x + zero.astype(x.dtype)
    return x

  return jax.tree.map(cast, tree)


def _run_steps(step: _Step, start: ClientState, batches: ClientBatches,
               reads_validation: bool) -> _Carry:
  def scan_body(carry, batch):
    train, val, active = batch
    new = _dp_step(step, carry, train, val)
    if active is not None:
      # The steps taken are a prefix: an inactive step changes nothing.
      new = jax.tree.map(lambda n, o: jnp.where(active, n, o),
                         new, carry)._replace(index=new.index)
    return new, None

  weights, arch_params = start.params
  carry = _Carry(weights, arch_params, step.weight_opt.init(weights),
                 step.arch.init(arch_params, start.nas), start.optimizer,
                 jnp.int32(0))
  if batches.active_steps is not None:
    carry = _varying_like(carry, batches.active_steps)._replace(
        index=carry.index)
  carry, _ = jax.lax.scan(scan_body, carry, (
      batches.train, batches.val if reads_validation else None,
      batches.active_steps))
  return carry


def make_local_update(
    model: Model, config: ClientConfig, *,
    loss: Callable = mechanisms.softmax_cross_entropy,
    mechanism: Mechanism | None = None,
    optimizer: ClientOptimizer | None = None,
    arch_step: Callable[[ArchContext], ArchStep] = weights_only,
    reads_validation: bool = False,
    active_weights: Callable | None = None,
    arch_penalty: Callable | None = None) -> Callable:
  """Builds `local_update(state, batches, key, expected_batch, first_step,
  hparams=None, shared_key=None) -> (new ClientState, privatised gain or
  None)`.

  Args:
    model: `model.apply(weights, arch, x, key) -> logits`; `key` is the
      step's (a sampled child is drawn from it; others ignore it).
    config: local hyperparameters and DP constants.
    loss: per-example `loss(logits, labels)`.
    mechanism: how releases are bounded and noised (default: local noise,
      vmap backend).
    optimizer: the client optimiser (default: DP-SGD).
    arch_step: the NAS strategy's `arch_step` while searching; the default
      leaves the architecture as it is.
    reads_validation: the architecture step reads `batches.val`.
    active_weights: optional `(weights, arch, step_key) -> tree of bools`,
      the parameters the step's model uses; the weight noise is added only
      there (see `privacy.dp_grad.masked_noise`).
    arch_penalty: optional `arch_params -> scalar` added to the architecture
      objective (e.g. an expected-cost penalty). It must not read data: its
      gradient joins after the noise, as post-processing.

  `expected_batch` is (train, val, feedback): q times the client's split
  sizes (the DP-SGD normalisers) and its validation-split size;
  `first_step` is the global index of the first local step; `hparams`
  optionally sets entries of TUNABLE for this client; `shared_key`, the
  round's, replaces the client's own key for the models its steps sample
  (one child for all of the round's clients).

  Under a mechanism that `shares_noise`, the client's architecture
  optimiser is a unit step down its noised mean gradient (a linear function
  of its share-noised release; the server runs `arch_optimizer` on the
  round's sum) and its weight step reads the round-start architecture.
  """
  mechanism = mechanism or mechanisms.local()
  optimizer = optimizer or dpsgd()
  example_losses = mechanisms.example_losses(model, loss)
  gain_losses = feedback_losses(model, loss, config)

  def weight_gradient(*args, **kwargs):
    # Built when a step asks for it: a one-stage search step never does, and
    # its sampled model need not support the ghost backend.
    return mechanism.weight_gradient(model, loss, config.clip_norm,
                                     optimizer.clipping,
                                     config.auto_clip_gamma)(*args, **kwargs)

  def local_update(start: ClientState, batches: ClientBatches, key,
                   expected_batch, first_step, hparams=None, shared_key=None):
    keys = client_keys(key)
    model_key = keys.model if shared_key is None else shared_key
    h = {name: getattr(config, name) for name in TUNABLE} | (hparams or {})
    arch = arch_step(ArchContext(
        model, loss, mechanism, weight_gradient,
        optax.scale(-1.0) if mechanism.shares_noise
        else arch_optimizer(config, h, arch_penalty),
        config.clip_norm, config.arch_clip_norm, config.noise_multiplier,
        optimizer.clipping, config.auto_clip_gamma, keys.arch, expected_batch))
    weight_opt = mechanism.private_optimizer(
        config.noise_multiplier * config.clip_norm, keys.weight,
        expected_batch[0], optimizer.transform(h))
    carry = _run_steps(_Step(arch, weight_opt, optimizer, example_losses,
                             active_weights, model_key, keys.probe, first_step,
                             expected_batch,
                             start.params.arch if mechanism.shares_noise
                             else None),
                       start, batches, reads_validation)
    new = ClientState(ModelParams(carry.weights, carry.arch), carry.optimizer,
                      arch.report(carry.arch_step))
    gain = None if batches.feedback is None else validation_gain(
        gain_losses, start.params, new.params, batches.feedback, keys,
        config, expected_batch[2], mechanism.noised_sum)
    return new, gain

  return local_update
