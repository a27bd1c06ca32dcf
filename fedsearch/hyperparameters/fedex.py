"""FedEx (Khodak et al. 2021): exponentiated gradient over local hyperparameters.

A distribution θ over the pool; each round every client draws c_k ~ θ, trains
with it and reports a (privatised) gain g_k. With the baseline λ (a running
mean of past gains), the importance-weighted gradient estimate is
∇̃_j = Σ_{k: c_k=j} w_k (g_k − λ) / θ_j, unbiased for the expected gain's
gradient, and θ ← θ ⊙ exp(η·∇̃), renormalised (ascent: gains are
decreases of the validation loss).
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from fedsearch.hyperparameters.base import Strategy, per_config_sums


class FedExState(NamedTuple):
  probs: jax.Array  # (pool,) θ
  baseline: jax.Array  # λ
  rounds: jax.Array  # int32: updates so far (the first sets λ)


def init(pool_size: int) -> FedExState:
  return FedExState(jnp.full(pool_size, 1.0 / pool_size, jnp.float32),
                    jnp.float32(0.0), jnp.int32(0))


def choose(state: FedExState, key, num_clients: int) -> jax.Array:
  return jax.random.choice(key, state.probs.shape[0], (num_clients,),
                           p=state.probs)


def update(state: FedExState, config_ids: jax.Array, gains: jax.Array,
           weights: jax.Array, *, step_size: float = 1.0,
           baseline_decay: float = 0.9, min_prob: float = 1e-6) -> FedExState:
  """One exponentiated-gradient step; λ is the baseline *before* this round.

  `min_prob` floors θ so that no configuration's importance weight 1/θ_j
  explodes and none is lost for good.
  """
  w = weights / jnp.sum(weights)
  baseline = jnp.where(state.rounds > 0, state.baseline, jnp.sum(w * gains))
  weighted_advantage, _ = per_config_sums(config_ids, gains - baseline, w,
                                          state.probs.shape[0])
  grad = weighted_advantage / state.probs
  logits = jnp.log(state.probs) + step_size * grad
  probs = jnp.maximum(jax.nn.softmax(logits), min_prob)
  probs = probs / jnp.sum(probs)
  mean_gain = jnp.sum(w * gains)
  new_baseline = jnp.where(
      state.rounds > 0,
      baseline_decay * state.baseline + (1 - baseline_decay) * mean_gain,
      mean_gain)
  return FedExState(probs, new_baseline, state.rounds + 1)


def strategy(step_size: float = 1.0) -> Strategy:
  """FedEx behind the `Strategy` protocol (every round aggregates)."""
  def choose_(state, key, num_clients):
    return state, choose(state, key, num_clients), jnp.bool_(True)

  def update_(state, ids, gains, weights, aggregate, clients=None):
    del aggregate, clients
    return update(state, ids, gains, weights, step_size=step_size)

  return Strategy(init, choose_, update_,
                  lambda state: jnp.argmax(state.probs),
                  lambda state: state.probs)
