"""Convolution and pooling written as shifted slices and einsums.

XLA:CPU lowers grouped (depthwise) convolutions, and the per-example weight
gradients that `vmap(grad)` turns every convolution into, to slow generic
kernels: on 8x8 inputs a depthwise conv's per-example gradient ran 17x slower
as `lax.conv_general_dilated` than as the sum of shifted slices used here
(see benchmarks/README.md). All layers are stride 1, 'SAME'-padded, NHWC.

Every parametrised layer computes its parametrised part through
`privacy.ghost` (a plain expression unless the model is applied with norm
probes), so the ghost DP backend can bound each example's gradient without
materialising it. Parameter names and initialisers are Flax's (`kernel`,
`bias`, `scale`), so the models keep their parameter trees.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from fedsearch.privacy import ghost


def _shifts(x: jax.Array, kernel: int, dilation: int, pad_value: float = 0.0):
  """Yields (i, j, x shifted by the kernel tap (i, j)), zero/`pad_value` padded."""
  reach = dilation * (kernel - 1)
  lo = reach // 2
  h, w = x.shape[-3], x.shape[-2]
  padded = jnp.pad(x, [(0, 0)] * (x.ndim - 3) + [(lo, reach - lo)] * 2 + [(0, 0)],
                   constant_values=pad_value)
  for i in range(kernel):
    for j in range(kernel):
      yield i, j, padded[..., i * dilation:i * dilation + h,
                         j * dilation:j * dilation + w, :]


def _im2col(x: jax.Array, kernel: int) -> jax.Array:
  if kernel == 1:
    return x
  return jnp.concatenate([s for _, _, s in _shifts(x, kernel, 1)], axis=-1)


class Conv(nn.Module):
  """Dense kxk convolution via im2col: concatenated shifts @ kernel."""

  features: int
  kernel: int = 1
  use_bias: bool = False

  @nn.compact
  def __call__(self, x):
    cin = x.shape[-1]
    k = self.param("kernel", nn.initializers.lecun_normal(),
                   (self.kernel, self.kernel, cin, self.features))
    bias = (self.param("bias", nn.initializers.zeros, (self.features,))
            if self.use_bias else None)
    return ghost.affine(self, x, k.reshape(-1, self.features), bias,
                        functools.partial(_im2col, kernel=self.kernel))


class Dense(nn.Module):
  features: int

  @nn.compact
  def __call__(self, x):
    k = self.param("kernel", nn.initializers.lecun_normal(),
                   (x.shape[-1], self.features))
    b = self.param("bias", nn.initializers.zeros, (self.features,))
    return ghost.affine(self, x, k, b)


class GroupNorm(nn.Module):
  """Flax's GroupNorm, with its affine part as a probed layer."""

  num_groups: int

  @nn.compact
  def __call__(self, x):
    normalised = nn.GroupNorm(num_groups=self.num_groups, use_bias=False,
                              use_scale=False)(x)
    c = x.shape[-1]
    scale = self.param("scale", nn.initializers.ones, (c,))
    bias = self.param("bias", nn.initializers.zeros, (c,))
    return ghost.scale_shift(self, normalised, scale, bias)


class DepthwiseConv(nn.Module):
  """Per-channel kxk convolution, optionally dilated."""

  kernel: int
  dilation: int = 1

  @nn.compact
  def __call__(self, x):
    c = x.shape[-1]
    k = self.param("kernel", nn.initializers.lecun_normal(
        in_axis=(0, 1), out_axis=3), (self.kernel, self.kernel, 1, c))
    shifts = functools.partial(_shifts, kernel=self.kernel,
                               dilation=self.dilation)
    return ghost.taps(self, x, k, shifts)


def max_pool_3x3(x):
  out = None
  for _, _, s in _shifts(x, 3, 1, pad_value=-jnp.inf):
    out = s if out is None else jnp.maximum(out, s)
  return out


def avg_pool_3x3(x):
  """Average over the in-image part of each 3x3 window (no padding counted)."""
  total = sum(s for _, _, s in _shifts(x, 3, 1))
  ones = jnp.ones(x.shape[-3:-1] + (1,), x.dtype)
  count = sum(s for _, _, s in _shifts(ones, 3, 1))
  return total / count


def max_pool_2x2(x):
  """2x2 max-pool, stride 2 (odd trailing rows/columns dropped)."""
  h, w = x.shape[-3] // 2 * 2, x.shape[-2] // 2 * 2
  x = x[..., :h, :w, :]
  x = x.reshape(x.shape[:-3] + (h // 2, 2, w // 2, 2, x.shape[-1]))
  return x.max(axis=(-4, -2))
