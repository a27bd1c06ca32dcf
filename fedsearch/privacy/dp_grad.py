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
"""

from collections.abc import Callable

import jax_privacy
import optax
from jax_privacy import noise_addition


def clipped_grad_sum(loss_fn: Callable, argnums: int, clip_norm: float,
                     nan_safe: bool = True) -> jax_privacy.clipping.BoundedSensitivityCallable:
  """Sum over the batch of per-example gradients clipped to `clip_norm`.

  Args:
    loss_fn: `loss_fn(weights, arch_params, x, y) -> scalar` mean loss of a
      batch; it is called on batches of one example.
    argnums: 0 differentiates the weights, 1 the architecture parameters.
    clip_norm: per-example L2 bound C (the sensitivity of the sum).
    nan_safe: see the module docstring.

  Returns:
    A callable `(weights, arch, x, y, is_padding_example=mask) -> sum` with
    `.sensitivity()` == C under add/remove adjacency.
  """
  return jax_privacy.clipped_grad(
      loss_fn, argnums=argnums, l2_clip_norm=clip_norm, batch_argnums=(2, 3),
      nan_safe=nan_safe)


def private_optimizer(stddev: float, key, expected_batch_size,
                      optimizer: optax.GradientTransformation
                      ) -> optax.GradientTransformation:
  """Noise on the clipped sum, then the mean over the expected batch, then `optimizer`."""
  return optax.chain(
      noise_addition.gaussian_privatizer(stddev=stddev, prng_key=key),
      optax.scale(1.0 / expected_batch_size),
      optimizer,
  )
