"""DPNAS's controller search (Cheng et al. 2022, after ENAS), rewards privatised.

Every weight step trains one child sampled from the policy
π(k) = Π_e softmax(α_e)[k_e] (only its parameters are noised); every
architecture step samples a child, scores it on a Poisson batch of the
client's validation split and moves the policy by REINFORCE with an entropy
bonus, ∇_α [−(R̃ − b)·log π(k) − β·H(π)].

Release: R̃ is the child's accuracy privatised by the client, Σ_i correct_i
+ N(0, σ²) over the expected batch size (per-example values in {0, 1}:
sensitivity 1, the same σ and Poisson rate as a gradient architecture step,
so the accountant counts it as one). The policy update is computed from R̃
and the child alone: post-processing (under `aggregate` trust the child is
the round's, the same for all clients, and the policy's Adam runs on the
server from the sum of their updates). b is a
bias-corrected moving average (decay 0.99) of past R̃, the strategy's
state, which the server averages and carries between rounds.

Client-level DP (`privacy.unit=client`): a client's rewards never leave
it. They are its plain accuracies (no noise), its policy steps are part of
its local training, and only the round's clipped delta (weights and α
together) is released, noised once on the sum (`mechanisms.client_level`).
The baseline is then the client's own, restarted each round (its first
reward is its own baseline): a server-carried average of rewards would be
one more per-client release.

Deviations from DPNAS, stated: its code releases the reward without noise
and picks the final architecture on the test set; here the deployed child
is the policy's mode (argmax per edge), which reads no data. DPNAS's
controller is an LSTM over the edge decisions; this policy is factorised
over edges (the same logits as the other strategies, so cost penalties and
derivation apply unchanged).
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from fedsearch.nas.base import (ArchContext, ArchStep, NasStrategy, Traits,
                                sample_choices, sampled_children,
                                weights_only)
from fedsearch.privacy.mechanisms import privatized_mean
from fedsearch.search_space.network import CellNetwork
from fedsearch.search_space.space import SearchSpace

# DPNAS's 3e-4 is for ~10⁴ controller steps; a federated search takes tens
# to hundreds, and Adam moves each logit by about its step size.
TRAITS = Traits(one_stage=False, shared_program=False, reads_validation=True,
                controller=True, arch_learning_rate=0.05)


class RewardBaseline(NamedTuple):
  """Σ dᵗ⁻ˢ(1−d)R̃_s and its normaliser 1 − dᵗ (bias correction: the first
  reward is its own baseline, so the first update has no advantage)."""

  sum: jax.Array
  weight: jax.Array

  @classmethod
  def init(cls) -> "RewardBaseline":
    return cls(jnp.float32(0.0), jnp.float32(0.0))

  def value(self, reward: jax.Array) -> jax.Array:
    return jnp.where(self.weight > 0,
                     self.sum / jnp.maximum(self.weight, 1e-12), reward)

  def update(self, reward: jax.Array, decay: float) -> "RewardBaseline":
    return RewardBaseline(decay * self.sum + (1 - decay) * reward,
                          decay * self.weight + (1 - decay))


def reinforce(space: SearchSpace, entropy_weight: float = 0.005,
              baseline_decay: float = 0.99, client_level: bool = False
              ) -> NasStrategy:
  """Entropy bonus β and baseline decay as DPNAS; `client_level`: rewards
  and baseline stay on the client (module docstring)."""
  net = CellNetwork(space)
  num_ops = len(space.op_names)

  def child_logits(weights, x, choices):
    return net.apply({"params": weights}, x,
                     jax.nn.one_hot(choices, num_ops), choices)

  def policy_loss(arch_params, choices, advantage):
    log_p = jax.nn.log_softmax(arch_params["normal"], axis=-1)
    chosen = jnp.take_along_axis(log_p, choices[:, None], axis=-1).sum()
    entropy = -jnp.sum(jnp.exp(log_p) * log_p)
    return -jax.lax.stop_gradient(advantage) * chosen - entropy_weight * entropy

  def reward_gradient(weights, arch, baseline, val, step_key, noise_key,
                      context):
    """(policy gradient, next baseline) from one child's privatised reward."""
    choices = sample_choices(arch, jax.random.fold_in(step_key, 1))
    logits = child_logits(weights, val.x, choices)
    correct = (jnp.argmax(logits, -1) == val.y).astype(jnp.float32)
    reward = privatized_mean(correct, val.padding, 1.0,
                             context.noise_multiplier, noise_key,
                             context.expected_batch[1],
                             _kept if client_level
                             else context.mechanism.noised_sum)
    advantage = reward - baseline.value(reward)
    g = jax.grad(policy_loss)(arch, choices, advantage)
    return g, baseline.update(reward, baseline_decay)

  def arch_step(context: ArchContext) -> ArchStep:
    # A policy gradient is post-processing of an already noised reward.
    optimizer = context.arch_optimizer

    def before_weights(carry, weights, arch, val, step_key, index):
      opt_state, baseline = carry
      g, baseline = reward_gradient(weights, arch, baseline, val, step_key,
                                    jax.random.fold_in(context.key, index),
                                    context)
      updates, opt_state = optimizer.update(g, opt_state, arch)
      return optax.apply_updates(arch, updates), (opt_state, baseline)

    if client_level:
      return weights_only(context)._replace(
          init=lambda arch, state: (optimizer.init(arch),
                                    _fresh_baseline_like(arch)),
          before_weights=before_weights, report=lambda carry: None)
    return weights_only(context)._replace(
        init=lambda arch, baseline: (optimizer.init(arch), baseline),
        before_weights=before_weights, report=lambda carry: carry[1])

  return sampled_children(
      space, "reinforce", TRAITS,
      lambda weights, arch_params, x, choices: child_logits(weights, x,
                                                            choices),
      arch_step,
      init_state=(lambda: None) if client_level else RewardBaseline.init,
      # The server's baseline: a moving average of privatised rewards.
      metrics=lambda baseline: {} if baseline is None else {
          "reward_baseline": float(baseline.value(jnp.float32(0.0)))})


def _fresh_baseline_like(arch_params) -> RewardBaseline:
  """An empty baseline typed like the client's α: inside `shard_map` a
  per-client carry must be device-varying from its first value."""
  zero = 0.0 * jnp.sum(arch_params["normal"])
  return RewardBaseline(zero, zero)


def _kept(total, stddev, key):
  """A sum that stays on the client: no noise (client-level DP bounds what
  it moves, the client's delta)."""
  del stddev, key
  return total
