"""A client's local update: alternating DP steps on architecture and weights.

First-order DARTS (Liu et al. 2019) as FEATHERS/FedNAS run it on a client:
each local step first moves the architecture logits on a batch of the
client's local validation split, then the weights on a batch of its local
train split. Both steps are DP-SGD steps: per-example clipped gradient sum,
Gaussian noise of std σC, mean over the expected batch size, then the
optimiser. Nothing else computed from the client's data leaves this function.
"""

import dataclasses
from collections.abc import Callable
from typing import NamedTuple

import jax
import optax

from fedsearch.privacy import clipped_grad_sum, private_optimizer


class Batches(NamedTuple):
  """`steps` padded Poisson batches: x (S, B, ...), y (S, B), padding (S, B)."""

  x: jax.Array
  y: jax.Array
  padding: jax.Array


class ClientBatches(NamedTuple):
  train: Batches
  val: Batches | None  # None when the architecture is not trained.


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


def cross_entropy_loss(apply_fn: Callable) -> Callable:
  def loss(weights, arch, x, y):
    logits = apply_fn(weights, arch, x)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
  return loss


def make_local_update(apply_fn: Callable, config: ClientConfig,
                      train_arch: bool) -> Callable:
  """Builds `local_update(params, batches, key, expected_batch) -> params`.

  Args:
    apply_fn: `apply_fn(weights, arch_params, x) -> logits`.
    config: local hyperparameters and DP constants.
    train_arch: whether the architecture parameters are trained (search
      phase) or left as they are (training a derived model).

  `params` is {'weights': ..., 'arch': ...}; `expected_batch` is a pair of
  floats (train, val): q times the client's split sizes, the DP-SGD
  normaliser. The optimiser states start fresh every round (stateless
  clients, as in FedAvg).
  """
  loss = cross_entropy_loss(apply_fn)
  weight_grad = clipped_grad_sum(loss, 0, config.clip_norm, config.nan_safe)
  arch_grad = clipped_grad_sum(loss, 1, config.arch_clip_norm, config.nan_safe)
  weight_stddev = config.noise_multiplier * config.clip_norm
  arch_stddev = config.noise_multiplier * config.arch_clip_norm

  def local_update(params, batches: ClientBatches, key, expected_batch):
    weight_key, arch_key = jax.random.split(key)
    weight_opt = private_optimizer(
        weight_stddev, weight_key, expected_batch[0],
        optax.chain(optax.add_decayed_weights(config.weight_decay),
                    optax.sgd(config.learning_rate, config.momentum)))
    arch_opt = private_optimizer(
        arch_stddev, arch_key, expected_batch[1],
        optax.chain(optax.add_decayed_weights(config.arch_weight_decay),
                    optax.adam(config.arch_learning_rate, config.arch_b1,
                               config.arch_b2)))
    weights, arch = params["weights"], params["arch"]

    def step(carry, batch):
      weights, arch, weight_state, arch_state = carry
      train, val = batch
      if train_arch:
        g = arch_grad(weights, arch, val.x, val.y,
                      is_padding_example=val.padding)
        updates, arch_state = arch_opt.update(g, arch_state, arch)
        arch = optax.apply_updates(arch, updates)
      g = weight_grad(weights, arch, train.x, train.y,
                      is_padding_example=train.padding)
      updates, weight_state = weight_opt.update(g, weight_state, weights)
      weights = optax.apply_updates(weights, updates)
      return (weights, arch, weight_state, arch_state), None

    carry = (weights, arch, weight_opt.init(weights), arch_opt.init(arch))
    xs = (batches.train, batches.val if train_arch else None)
    (weights, arch, _, _), _ = jax.lax.scan(step, carry, xs)
    return {"weights": weights, "arch": arch}

  return local_update
