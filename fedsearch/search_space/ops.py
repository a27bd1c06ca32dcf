"""Candidate operations and the op sets of the search spaces.

Every op maps an NHWC tensor with `channels` channels to one of the same shape
(stride 1): reduction happens between cells, by pooling, as in DPNAS. Norm
layers are GroupNorm, never BatchNorm, because BatchNorm mixes examples of a
batch and so breaks per-example gradient clipping.
"""

from collections.abc import Callable, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from fedsearch.search_space import layers

ACTIVATIONS: Mapping[str, Callable[[jax.Array], jax.Array]] = {
    "relu": jax.nn.relu,
    "elu": jax.nn.elu,
    "tanh": jnp.tanh,
    "linear": lambda x: x,
    "hardtanh": lambda x: jnp.clip(x, -1.0, 1.0),
    "sigmoid": jax.nn.sigmoid,
    "selu": jax.nn.selu,
}


class Zero(nn.Module):
  """The `none` op: contributes nothing, lets the search drop an edge."""

  @nn.compact
  def __call__(self, x):
    return jnp.zeros_like(x)


class Identity(nn.Module):

  @nn.compact
  def __call__(self, x):
    return x


class Pool(nn.Module):
  kind: str  # "max" or "avg"

  @nn.compact
  def __call__(self, x):
    if self.kind == "max":
      return layers.max_pool_3x3(x)
    return layers.avg_pool_3x3(x)


class ActConvNorm(nn.Module):
  """activation -> depthwise kxk (dilated) -> pointwise 1x1 -> GroupNorm
  (groups == 0: no norm, the pointwise convolution has a bias)."""

  channels: int
  kernel: int
  dilation: int
  activation: str
  groups: int

  @nn.compact
  def __call__(self, x):
    use_bias, norm = layers.norm_or_bias(self.groups)
    x = ACTIVATIONS[self.activation](x)
    x = layers.DepthwiseConv(self.kernel, self.dilation, name="depthwise")(x)
    x = layers.Conv(self.channels, use_bias=use_bias, name="pointwise")(x)
    return norm(x, "norm")


class SepConv(nn.Module):
  """Separable convolution; DARTS stacks two, DPNAS uses one."""

  channels: int
  kernel: int
  activation: str
  groups: int
  repeats: int = 1

  @nn.compact
  def __call__(self, x):
    for i in range(self.repeats):
      x = ActConvNorm(
          self.channels, self.kernel, 1, self.activation, self.groups,
          name=f"layer{i}",
      )(x)
    return x


def _sep(kernel, activation, repeats):
  return lambda c, g, act, name: SepConv(
      c, kernel, activation or act, g, repeats, name=name
  )


def _dil(kernel):
  return lambda c, g, act, name: ActConvNorm(c, kernel, 2, act, g, name=name)


# An op factory takes (channels, groups, default activation, module name) and
# returns a Flax module. The default activation is the space's, for ops that do
# not fix their own. The name is the parameter path of the op, shared by the
# supernet and every model derived from it, so weights transfer by path.
OpFactory = Callable[[int, int, str, str], nn.Module]

_COMMON: dict[str, OpFactory] = {
    "none": lambda c, g, act, name: Zero(name=name),
    "max_pool_3x3": lambda c, g, act, name: Pool("max", name=name),
    "avg_pool_3x3": lambda c, g, act, name: Pool("avg", name=name),
    "skip_connect": lambda c, g, act, name: Identity(name=name),
}

# DPNAS (Cheng et al., AAAI 2022), PRIV_PRIMITIVES: separable convolutions
# whose activation is itself searched, because bounded, smooth activations
# train better under DP-SGD.
DPNAS_OPS: dict[str, OpFactory] = {
    **_COMMON,
    **{
        f"sep_conv_3x3_{act}": _sep(3, act, 1)
        for act in ("relu", "elu", "tanh", "linear", "hardtanh", "sigmoid")
    },
}

# DARTS as used by FEATHERS (Seng et al.).
DARTS_OPS: dict[str, OpFactory] = {
    **_COMMON,
    "sep_conv_3x3": _sep(3, None, 2),
    "sep_conv_1x1": _sep(1, None, 2),
    "dil_conv_3x3": _dil(3),
    "dil_conv_5x5": _dil(5),
}

OP_SETS: Mapping[str, Mapping[str, OpFactory]] = {
    "dpnas": DPNAS_OPS,
    "darts": DARTS_OPS,
}


def op_names(op_set: str) -> tuple[str, ...]:
  """Names of the ops of `op_set`, in the order of the architecture logits."""
  return tuple(OP_SETS[op_set])
