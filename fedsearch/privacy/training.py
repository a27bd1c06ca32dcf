"""DP-SGD on a user's own flax model in a few lines: `make_private`.

The analogue of Opacus's `make_private` for a pure-functional stack: given a
flax module (stock layers), a per-example loss, an optax optimiser and the
schedule (examples, expected batch, steps) it calibrates σ for the target
(ε, δ) with the accountant the main job uses, and returns jit-able `init` /
`step` functions plus the Poisson batches to feed them:

  dp = fedsearch.make_private(model, optax.sgd(0.5), key, examples=len(x),
                              expected_batch_size=256, steps=500, epsilon=3.,
                              delta=1e-5, clip_norm=1.0, backend="ghost")
  opt_state = dp.init(params)
  for rows, padding in dp.batches(np.random.default_rng()):
    params, opt_state = dp.step(params, opt_state, x[rows], y[rows], padding)
  dp.epsilon(dp.steps)

Each step is the subsampled Gaussian mechanism: a Poisson(q) batch (q =
expected batch / examples) padded to a static size, per-example gradients
clipped to `clip_norm` (jax-privacy's `vmap(grad)`, or ghost norms), N(0,
σ²C²) added to the sum, divided by the expected batch, then the optimiser.
A draw larger than the static size is truncated with a probability that
costs `truncation_delta_fraction`·δ (coupling), so `epsilon(steps)` is ε at
the remaining δ and the pair spends (ε, δ). The batches' generator must be
secret for the amplification by sampling to hold (numpy's default_rng()
seeds itself from the operating system's entropy).
"""

from collections.abc import Callable, Iterator
from typing import NamedTuple

import flax.linen as nn
import jax
import numpy as np
import optax

from fedsearch.errors import ConfigError
from fedsearch.federated import sampling
from fedsearch.privacy import accounting
from fedsearch.privacy.flax_probes import flax_model
from fedsearch.privacy.mechanisms import (DP_BACKENDS, Model,
                                          private_optimizer,
                                          softmax_cross_entropy)


class PrivateTraining(NamedTuple):
  """What `make_private` returns.

  Attributes:
    init: `(params) -> opt_state`.
    step: `(params, opt_state, x, y, is_padding) -> (params, opt_state)`,
      jitted; x, y of the static `batch_size`, `is_padding` marking rows that
      are padding (they add nothing).
    batches: `(rng) -> iterator` of `steps` pairs (rows into the examples,
      is_padding), Poisson samples padded to `batch_size`.
    epsilon: `(steps_done) -> ε` spent at δ.
    noise_multiplier: σ (noise std / clip_norm).
    sampling_rate: q.
    batch_size: the static batch size.
    steps: the schedule's length.
  """

  init: Callable
  step: Callable
  batches: Callable[[np.random.Generator], Iterator]
  epsilon: Callable[[int], float]
  noise_multiplier: float
  sampling_rate: float
  batch_size: int
  steps: int


def make_private(model: nn.Module | Model,
                 optimizer: optax.GradientTransformation, key: jax.Array, *,
                 examples: int, expected_batch_size: float, steps: int,
                 epsilon: float, delta: float, clip_norm: float,
                 loss: Callable = softmax_cross_entropy,
                 backend: str = "vmap", accountant: str = "pld",
                 truncation_delta_fraction: float = 0.01
                 ) -> PrivateTraining:
  """DP-SGD for `model` (a flax module `module(x) -> logits`, or a `Model`)
  that spends (epsilon, delta) over `steps` steps; `loss(logits, y)` is
  per-example; `key` seeds the noise (keep it secret)."""
  for name, value in (("examples", examples), ("steps", steps),
                      ("expected_batch_size", expected_batch_size),
                      ("epsilon", epsilon), ("clip_norm", clip_norm)):
    if not value > 0:
      raise ConfigError(f"make_private: {name} must be > 0, got {value}")
  if not 0 < delta < 1 or not 0 < truncation_delta_fraction < 1:
    raise ConfigError("make_private: delta and truncation_delta_fraction must"
                      f" lie in (0, 1), got {delta}, {truncation_delta_fraction}")
  if backend not in DP_BACKENDS:
    raise ConfigError(f"make_private: backend={backend!r} is not allowed;"
                      f" choose one of {list(DP_BACKENDS)}")
  rate = expected_batch_size / examples
  if rate > 1:
    raise ConfigError(f"make_private: expected_batch_size={expected_batch_size}"
                      f" exceeds examples={examples}")
  if isinstance(model, nn.Module):
    model = flax_model(model)
  mechanism_delta = delta * (1 - truncation_delta_fraction)
  streams = lambda sigma, count=steps: [
      accounting.ReleaseStream("weights", rate, count, sigma)]
  sigma = accounting.calibrate_noise_multiplier(streams, epsilon,
                                                mechanism_delta, accountant)
  batch_size = accounting.padded_batch_size(
      examples, rate, accounting.truncation_tail(
          steps, epsilon, delta * truncation_delta_fraction))
  transform = private_optimizer(sigma * clip_norm, key, rate * examples,
                                optimizer)
  clipped_sum = DP_BACKENDS[backend](nan_safe=True)(model, loss, clip_norm)

  @jax.jit
  def step(params, opt_state, x, y, is_padding):
    grads = clipped_sum(params, None, x, y, None,
                        is_padding_example=is_padding)
    updates, opt_state = transform.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  def batches(rng: np.random.Generator):
    rows, padding = sampling.poisson_batches(np.arange(examples), rate, steps,
                                             batch_size, rng)
    return zip(rows, padding)

  return PrivateTraining(
      init=transform.init, step=step, batches=batches,
      epsilon=lambda done: accounting.epsilon(streams(sigma, done),
                                              mechanism_delta, accountant),
      noise_multiplier=sigma, sampling_rate=rate, batch_size=batch_size,
      steps=steps)
