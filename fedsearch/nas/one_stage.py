"""Direct Federated NAS (Garg et al. 2020) with DSNAS's estimator.

Each step samples one op per edge, k_e ~ softmax(α_e), from the step's own
key, and runs only the sampled child. The edge's output is multiplied by a
gate g_e whose value is exactly 1 and whose gradient is ∇_α log p_e(k_e) =
onehot(k_e) − p_e, so the architecture gradient is DSNAS's estimator
  ĝ_α = Σ_e (∂L/∂g_e) · (onehot(k_e) − p_e).
It costs nothing beyond the child's backward pass, has no temperature, and
the forward pass is the deployed child exactly. It is unbiased for
∇_α E_k[L] when L is linear in each gate, in general for ∇_α E_k[∂L/∂g|_{g=1}]
(a first-order credit; both checked by enumeration in the tests).

Release: one per step. The per-example gradient of (weights, C/C_a·α) is
clipped jointly at C and noised once (multiplier σ): after dividing the
architecture part back it carries std σ·C_a, as an alternating step would.
Only the child's parameters get noise (`active_weights`): the others have
exactly zero gradient on every dataset. Deployed: the most likely child,
with the weights it trained with (no retraining needed).
"""

import jax
import jax.numpy as jnp
import optax

from fedsearch.nas.base import (ArchContext, ArchStep, NasStrategy, Traits,
                                private_arch_optimizer, sampled_children,
                                weights_only)
from fedsearch.privacy.mechanisms import mean_loss
from fedsearch.search_space.network import CellNetwork
from fedsearch.search_space.space import SearchSpace

TRAITS = Traits(one_stage=True, shared_program=False, reads_validation=False,
                controller=False, arch_learning_rate=1.0)


def gated_one_hot(arch_params: dict, choices: jax.Array) -> jax.Array:
  """(E, O) one-hot on `choices`, valued exactly 1 on the chosen op, whose
  gradient w.r.t. α is the score ∇ log p_e(k_e) (DSNAS's gate)."""
  log_p = jax.nn.log_softmax(arch_params["normal"], axis=-1)
  chosen = jnp.take_along_axis(log_p, choices[:, None], axis=-1)[:, 0]
  gate = jnp.exp(chosen - jax.lax.stop_gradient(chosen))
  one_hot = jax.nn.one_hot(choices, log_p.shape[-1], dtype=log_p.dtype)
  return one_hot * gate[:, None]


def _scale(tree, factor):
  return jax.tree.map(lambda a: a * factor, tree)


def one_stage(space: SearchSpace) -> NasStrategy:
  net = CellNetwork(space)

  def run_child(weights, arch_params, x, choices):
    return net.apply({"params": weights}, x,
                     gated_one_hot(arch_params, choices), choices)

  def arch_step(context: ArchContext) -> ArchStep:
    arch_scale = context.clip_norm / context.arch_clip_norm
    loss = mean_loss(context.model, context.loss)
    joint = context.mechanism.gradient(
        lambda w, scaled_arch, *rest: loss(w, _scale(scaled_arch, arch_scale),
                                           *rest),
        (0, 1), context.clip_norm, context.clipping, context.gamma)
    # The joint release reads the train batch: its mean is over q·n_train.
    optimizer = private_arch_optimizer(context, context.expected_batch[0])

    def gradients(weights, arch, train, step_key):
      g, scaled_arch_g = joint(weights, _scale(arch, 1 / arch_scale), train.x,
                               train.y, step_key,
                               is_padding_example=train.padding)
      return g, _scale(scaled_arch_g, 1 / arch_scale)

    def after_weights(opt_state, arch, arch_grad):
      updates, opt_state = optimizer.update(arch_grad, opt_state, arch)
      return optax.apply_updates(arch, updates), opt_state

    return weights_only(context)._replace(
        init=lambda arch, state: optimizer.init(arch), gradients=gradients,
        after_weights=after_weights, report=lambda opt_state: None)

  # DSNAS starts from uniform op probabilities.
  return sampled_children(space, "one_stage", TRAITS, run_child, arch_step)
