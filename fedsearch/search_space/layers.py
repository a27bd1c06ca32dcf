"""Convolution and pooling written as shifted slices and einsums.

XLA:CPU lowers grouped (depthwise) convolutions, and the per-example weight
gradients that `vmap(grad)` turns every convolution into, to slow generic
kernels: on 8x8 inputs a depthwise conv's per-example gradient ran 17x slower
as `lax.conv_general_dilated` than as the sum of shifted slices used here
(see benchmarks/README.md). Layers are NHWC and, unless given a stride and
an explicit padding (the fixed reference models' convolutions), stride 1
and 'SAME'-padded.

Every parametrised layer computes its parametrised part through
`privacy.ghost` (a plain expression unless the model is applied with norm
probes), so the ghost DP backend can bound each example's gradient without
materialising it. Parameter names and initialisers are Flax's (`kernel`,
`bias`, `scale`), so the models keep their parameter trees.
"""

from collections.abc import Callable
import dataclasses

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


def _im2col(x: jax.Array, kernel: int, stride: int = 1,
            padding: int | None = None) -> jax.Array:
  """(..., H', W', k·k·C): each output position's kxk window, taps in
  row-major order (the layout of a (k, k, C, F) kernel reshaped to
  (k·k·C, F)). padding None: 'SAME' at stride 1; an int: that many zeros on
  every side, then windows every `stride` pixels."""
  if padding is None:
    if stride != 1:
      raise ValueError("a strided convolution needs an explicit padding")
    if kernel == 1:
      return x
    return jnp.concatenate([s for _, _, s in _shifts(x, kernel, 1)], axis=-1)
  padded = jnp.pad(x, [(0, 0)] * (x.ndim - 3) + [(padding, padding)] * 2
                   + [(0, 0)])
  h_out = (padded.shape[-3] - kernel) // stride + 1
  w_out = (padded.shape[-2] - kernel) // stride + 1
  return jnp.concatenate([
      padded[..., i:i + stride * (h_out - 1) + 1:stride,
             j:j + stride * (w_out - 1) + 1:stride, :]
      for i in range(kernel) for j in range(kernel)], axis=-1)


def _per_example_sum(a: jax.Array) -> jax.Array:
  """(B, ..., C) -> (B, C): sum over the positions of each example."""
  return a.reshape(a.shape[0], -1, a.shape[-1]).sum(axis=1)


@dataclasses.dataclass(frozen=True)
class AffineRule:
  """im2col(x) @ kernel (+ bias): Dense (kernel 1) and Conv."""

  kernel: int = 1
  bias: bool = True
  stride: int = 1
  padding: int | None = None  # None: 'SAME' (stride 1)

  def _patches(self, x):
    return _im2col(x, self.kernel, self.stride, self.padding)

  def apply(self, x, params):
    k = params["kernel"]
    y = self._patches(x) @ k.reshape(-1, k.shape[-1])
    return y + params["bias"] if self.bias else y

  def sq_norm(self, x, g):
    norm = ghost.matmul_sq_norm(self._patches(x), g)
    return norm + ghost.summed_sq_norm(g) if self.bias else norm


@dataclasses.dataclass(frozen=True)
class DepthwiseRule:
  """Σ_taps shift_tap(x) * kernel[tap], per channel."""

  kernel: int
  dilation: int

  def apply(self, x, params):
    k = params["kernel"]
    return sum(s * k[i, j, 0]
               for i, j, s in _shifts(x, self.kernel, self.dilation))

  def sq_norm(self, x, g):
    total = 0.0
    for _, _, s in _shifts(x, self.kernel, self.dilation):
      d_tap = _per_example_sum(s * g)
      total = total + jnp.sum(d_tap * d_tap, axis=1)
    return total


@dataclasses.dataclass(frozen=True)
class ScaleShiftRule:
  """x * scale + bias per channel (GroupNorm's affine part)."""

  def apply(self, x, params):
    return x * params["scale"] + params["bias"]

  def sq_norm(self, x, g):
    d_scale = _per_example_sum(x * g)
    return jnp.sum(d_scale * d_scale, axis=1) + ghost.summed_sq_norm(g)


class Conv(nn.Module):
  """Dense kxk convolution via im2col: concatenated shifts @ kernel.

  stride 1 and padding None: 'SAME'; otherwise `padding` zeros each side and
  windows every `stride` pixels (as PyTorch's Conv2d(stride, padding)).
  """

  features: int
  kernel: int = 1
  use_bias: bool = False
  stride: int = 1
  padding: int | None = None

  @nn.compact
  def __call__(self, x):
    cin = x.shape[-1]
    params = {"kernel": self.param(
        "kernel", nn.initializers.lecun_normal(),
        (self.kernel, self.kernel, cin, self.features))}
    if self.use_bias:
      params["bias"] = self.param("bias", nn.initializers.zeros,
                                  (self.features,))
    return ghost.probed(self, AffineRule(self.kernel, self.use_bias,
                                         self.stride, self.padding), x, params)


class Dense(nn.Module):
  features: int

  @nn.compact
  def __call__(self, x):
    params = {
        "kernel": self.param("kernel", nn.initializers.lecun_normal(),
                             (x.shape[-1], self.features)),
        "bias": self.param("bias", nn.initializers.zeros, (self.features,)),
    }
    return ghost.probed(self, AffineRule(), x, params)


class GroupNorm(nn.Module):
  """Flax's GroupNorm, with its affine part as a probed layer."""

  num_groups: int

  @nn.compact
  def __call__(self, x):
    normalised = nn.GroupNorm(num_groups=self.num_groups, use_bias=False,
                              use_scale=False)(x)
    c = x.shape[-1]
    params = {"scale": self.param("scale", nn.initializers.ones, (c,)),
              "bias": self.param("bias", nn.initializers.zeros, (c,))}
    return ghost.probed(self, ScaleShiftRule(), normalised, params)


def norm_or_bias(groups: int) -> tuple[bool, Callable]:
  """(use_bias, norm) for a convolution followed by a norm layer: GroupNorm
  with `groups` groups, or, with groups == 0, no norm and a bias on the
  convolution instead (what a norm's shift would have learnt)."""
  if groups:
    return False, lambda x, name: GroupNorm(groups, name=name)(x)
  return True, lambda x, name: x


class DepthwiseConv(nn.Module):
  """Per-channel kxk convolution, optionally dilated."""

  kernel: int
  dilation: int = 1

  @nn.compact
  def __call__(self, x):
    c = x.shape[-1]
    k = self.param("kernel", nn.initializers.lecun_normal(
        in_axis=(0, 1), out_axis=3), (self.kernel, self.kernel, 1, c))
    return ghost.probed(self, DepthwiseRule(self.kernel, self.dilation), x,
                        {"kernel": k})


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
  """2x2 max-pool, stride 2 (odd trailing rows/columns dropped).

  Written as the maximum of four strided slices, not as a reshape and a
  max-reduction: on XLA:CPU (jax 0.10.2) the jitted gradient of the reshape
  form after Flax's GroupNorm came out wrong (up to 100 % off against finite
  differences and the eager gradient; right with the `cse` or `algsimp` HLO
  pass disabled). tests/test_search_space.py checks jitted against eager
  gradients for every op.
  """
  h, w = x.shape[-3] // 2 * 2, x.shape[-2] // 2 * 2
  corner = lambda i, j: x[..., i:h:2, j:w:2, :]
  return jnp.maximum(jnp.maximum(corner(0, 0), corner(1, 0)),
                     jnp.maximum(corner(0, 1), corner(1, 1)))


def max_pool_2x2_stride_1(x):
  """2x2 max-pool at stride 1, no padding: (H, W) -> (H − 1, W − 1)."""
  h, w = x.shape[-3] - 1, x.shape[-2] - 1
  corner = lambda i, j: x[..., i:i + h, j:j + w, :]
  return jnp.maximum(jnp.maximum(corner(0, 0), corner(1, 0)),
                     jnp.maximum(corner(0, 1), corner(1, 1)))
