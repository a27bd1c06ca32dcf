"""Per-example clipped gradient sums and their Gaussian privatisation.

Built on jax-privacy: `jax_privacy.clipped_grad` computes the sum of per-example
gradients each clipped to L2 norm C, and `noise_addition.gaussian_privatizer`
adds N(0, (σC)^2) to that sum as the first link of an optax chain.

Formal guarantee (add/remove one example, the example being a batch row): the
clipped sum has L2 sensitivity C, so sum + N(0, (σC)^2 I) is the Gaussian
mechanism with noise multiplier σ; dividing by the *expected* batch size
q·n (a constant, not the realised size, which would depend on the data) and
any later optimiser step are post-processing. Padding rows
(`is_padding_example`) contribute exactly zero. With `nan_safe=True`, a
per-example gradient with NaN/inf entries is zeroed before clipping, so the
bound holds even when one example makes the model overflow.

Automatic clipping (Bu et al. 2023, used by HyFreeDP) replaces min(1, C/‖g‖)
by C/(‖g‖ + γ): every per-example gradient is normalised, so its norm is
C·‖g‖/(‖g‖+γ) < C whatever its size and the clip norm is no longer a
hyperparameter to tune (its scale is absorbed by the learning rate). It runs
as jax-privacy's `pre_clipping_transform`, followed by its usual clipping at
C, which is then a no-op but keeps the sensitivity C formally guaranteed
(e.g. for a non-finite ‖g‖).
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp
import jax_privacy
import optax


CLIPPING = ("flat", "auto")


def auto_clip_transform(clip_norm: float, gamma: float) -> Callable:
  """Per-example g -> C·g/(‖g‖ + γ) (automatic clipping)."""
  def transform(grad):
    scale = clip_norm / (optax.tree.norm(grad) + gamma)
    return jax.tree.map(lambda g: g * scale.astype(g.dtype), grad)
  return transform


def clipped_grad_sum(loss_fn: Callable, argnums: int | tuple[int, ...],
                     clip_norm: float,
                     nan_safe: bool = True, clipping: str = "flat",
                     gamma: float = 0.01
                     ) -> jax_privacy.clipping.BoundedSensitivityCallable:
  """Sum over the batch of per-example gradients clipped to `clip_norm`.

  Args:
    loss_fn: `loss_fn(weights, arch_params, x, y, *rest) -> scalar` mean
      loss of a batch; it is called on batches of one example (`rest`, e.g.
      the step's model key, is shared by the batch).
    argnums: 0 differentiates the weights, 1 the architecture parameters,
      (0, 1) both, clipped as one vector.
    clip_norm: per-example L2 bound C (the sensitivity of the sum).
    nan_safe: see the module docstring.
    clipping: "flat" (min(1, C/‖g‖)) or "auto" (C/(‖g‖+γ)).
    gamma: the stability constant γ of automatic clipping.

  Returns:
    A callable `(weights, arch, x, y, is_padding_example=mask) -> sum` with
    `.sensitivity()` == C under add/remove adjacency.
  """
  if clipping not in CLIPPING:
    raise ValueError(f"clipping={clipping!r}; choose one of {CLIPPING}")
  if gamma <= 0:
    raise ValueError(f"gamma must be > 0, got {gamma}")
  pre_clipping = (auto_clip_transform(clip_norm, gamma) if clipping == "auto"
                  else lambda g: g)
  return jax_privacy.clipped_grad(
      loss_fn, argnums=argnums, l2_clip_norm=clip_norm, batch_argnums=(2, 3),
      nan_safe=nan_safe, pre_clipping_transform=pre_clipping)


def masked_noise(privatizer: optax.GradientTransformation
                 ) -> optax.GradientTransformationExtraArgs:
  """`privatizer`, with noise only on the leaves where `noise_mask` is True.

  For coordinates whose per-example gradients are exactly zero on every
  dataset (parameters of ops a sampled child does not run), the clipped sum
  is the constant 0, which reveals nothing: noise there protects nothing and
  only buries those parameters. The mask must not depend on the data (the
  sampled child is drawn from the step's key and the privatised
  architecture parameters); the sensitivity of the rest is unchanged.
  """
  def update(updates, state, params=None, *, noise_mask=None, **extra_args):
    del extra_args
    noisy, state = privatizer.update(updates, state, params)
    if noise_mask is None:
      return noisy, state
    return jax.tree.map(lambda u, n, keep: jnp.where(keep, n, u), updates,
                        noisy, noise_mask), state
  return optax.GradientTransformationExtraArgs(privatizer.init, update)
