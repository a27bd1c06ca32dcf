"""The ghost backend on models written with stock `flax.linen` layers.

fedsearch's own layers (`search_space.layers`) carry the ghost backend's
norm probes. A user's model does not: `flax_model(module)` runs it under
flax's method interception (`nn.intercept_methods`), which replaces, at
apply time, each stock layer's `__call__` by the same computation written as
a probed op (`ghost.probed`) with the layer's per-example norm rule:

- `nn.Dense` (kernel, bias) on inputs of any rank;
- `nn.Conv` of any rank, stride, padding ('SAME', 'VALID' or explicit),
  input / kernel dilation and feature groups: per-example norms from the
  patches (`lax.conv_general_dilated_patches`), group by group;
- `nn.Embed`: ‖Σ_t e(idx_t) ⊗ g_t‖² from which positions share an index;
- `nn.LayerNorm`, `nn.GroupNorm`: their scale and bias (the normalisation
  itself has no parameter).

Anything else is refused before any step: `nn.BatchNorm` (its statistics mix
the examples of a batch, so no per-example bound holds), norms that average
across devices (`axis_name`), masked or circular convolutions, `Embed.attend`,
and any parameter of a layer this module does not know (the ghost backend
names those).
"""

import contextvars
import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from fedsearch.privacy import ghost
from fedsearch.privacy.mechanisms import Model

# Set while a rule computes a stock layer, so that the layer it calls is not
# intercepted again.
_IN_RULE = contextvars.ContextVar("fedsearch_in_rule", default=False)


class UnsupportedLayerError(ValueError):
  """A layer whose per-example gradient norm cannot be bounded here."""


@dataclasses.dataclass(frozen=True)
class DenseRule:
  use_bias: bool

  def apply(self, x, params):
    y = jnp.tensordot(x, params["kernel"], axes=1)
    return y + params["bias"] if self.use_bias else y

  def sq_norm(self, x, g):
    total = ghost.matmul_sq_norm(x, g)
    return total + ghost.summed_sq_norm(g) if self.use_bias else total


def _specs(rank: int) -> tuple[str, str, str]:
  """Channel-last dimension numbers, flax's layout, for `rank` spatial axes."""
  spatial = "HWD"[:rank]
  return f"N{spatial}C", f"{spatial}IO", f"N{spatial}C"


@dataclasses.dataclass(frozen=True)
class ConvRule:
  """A stock convolution, channel-last, with its static settings."""

  kernel_size: tuple[int, ...]
  strides: tuple[int, ...]
  padding: str | tuple[tuple[int, int], ...]
  input_dilation: tuple[int, ...]
  kernel_dilation: tuple[int, ...]
  groups: int
  use_bias: bool

  def apply(self, x, params):
    y = lax.conv_general_dilated(
        x, params["kernel"], self.strides, self.padding,
        lhs_dilation=self.input_dilation, rhs_dilation=self.kernel_dilation,
        dimension_numbers=_specs(len(self.kernel_size)),
        feature_group_count=self.groups)
    return y + params["bias"] if self.use_bias else y

  def sq_norm(self, x, g):
    patches = lax.conv_general_dilated_patches(
        x, self.kernel_size, self.strides, self.padding,
        lhs_dilation=self.input_dilation, rhs_dilation=self.kernel_dilation,
        dimension_numbers=_specs(len(self.kernel_size)))
    b = x.shape[0]
    # Patch features are ordered (input channel, kernel offset): a group's
    # input channels are one contiguous block.
    patches = patches.reshape(b, -1, self.groups, patches.shape[-1]
                              // self.groups)
    outputs = g.reshape(b, -1, self.groups, g.shape[-1] // self.groups)
    total = sum(ghost.matmul_sq_norm(patches[:, :, k], outputs[:, :, k])
                for k in range(self.groups))
    return total + ghost.summed_sq_norm(g) if self.use_bias else total


@dataclasses.dataclass(frozen=True)
class EmbedRule:
  """Rows of the table at indices carried as floats (a tape holds values of
  the input's dtype, and integer inputs have no cotangent)."""

  def apply(self, x, params):
    return jnp.take(params["embedding"], x.astype(jnp.int32), axis=0)

  def sq_norm(self, x, g):
    b = x.shape[0]
    idx = x.reshape(b, -1)
    g = g.reshape(b, idx.shape[1], -1)
    same = (idx[:, :, None] == idx[:, None, :]).astype(g.dtype)
    return jnp.sum(same * jnp.einsum("btd,bsd->bts", g, g), axis=(1, 2))


@dataclasses.dataclass(frozen=True)
class NormAffineRule:
  """A norm layer's scale and bias on its (parameter-free) normalised input."""

  use_scale: bool
  use_bias: bool

  def apply(self, x, params):
    y = x * params["scale"] if self.use_scale else x
    return y + params["bias"] if self.use_bias else y

  def sq_norm(self, x, g):
    b = x.shape[0]
    total = jnp.zeros((b,), g.dtype)
    if self.use_scale:
      d_scale = (x * g).reshape(b, -1, g.shape[-1]).sum(axis=1)
      total += jnp.sum(d_scale * d_scale, axis=1)
    if self.use_bias:
      total += ghost.summed_sq_norm(g)
    return total


def _conv_rule(module: nn.Conv, x) -> ConvRule:
  rank = x.ndim - 2
  as_tuple = lambda v: (v,) * rank if isinstance(v, int) else tuple(
      v or (1,) * rank)
  if module.mask is not None:
    raise UnsupportedLayerError(f"nn.Conv {module.name!r}: masked kernels are"
                                " not supported by the ghost backend")
  padding = module.padding
  if isinstance(padding, str):
    if padding.upper() not in ("SAME", "VALID"):
      raise UnsupportedLayerError(
          f"nn.Conv {module.name!r}: padding={padding!r}; the ghost backend"
          " takes 'SAME', 'VALID' or explicit padding")
    padding = padding.upper()
  else:
    padding = tuple(nn.linear.canonicalize_padding(padding, rank))
  return ConvRule(as_tuple(module.kernel_size), as_tuple(module.strides),
                  padding, as_tuple(module.input_dilation),
                  as_tuple(module.kernel_dilation),
                  module.feature_group_count, module.use_bias)


def _refuse_cross_example(module) -> None:
  if isinstance(module, nn.BatchNorm):
    raise UnsupportedLayerError(
        f"nn.BatchNorm {module.name!r}: its batch statistics mix the"
        " examples, so no per-example gradient bound holds; use GroupNorm or"
        " LayerNorm")
  if getattr(module, "axis_name", None) is not None:
    raise UnsupportedLayerError(
        f"{type(module).__name__} {module.name!r}: axis_name averages across"
        " devices, mixing examples")


def _interceptor(next_fun, args, kwargs, context):
  module = context.module
  if _IN_RULE.get():
    return next_fun(*args, **kwargs)
  _refuse_cross_example(module)
  if isinstance(module, nn.Embed) and context.method_name == "attend":
    raise UnsupportedLayerError(
        f"nn.Embed {module.name!r}: attend() reuses the table outside the"
        " probed lookup; tie weights with a separate nn.Dense instead")
  known = (nn.Dense, nn.Conv, nn.Embed, nn.LayerNorm, nn.GroupNorm)
  if (context.method_name != "__call__" or type(module) not in known
      or module.is_initializing()):
    return next_fun(*args, **kwargs)
  params = dict(module.variables.get("params", {}))
  if not params:  # A norm without scale or bias.
    return next_fun(*args, **kwargs)
  x = args[0]
  if isinstance(module, nn.Dense):
    return ghost.probed(module, DenseRule(module.use_bias), x, params)
  if isinstance(module, nn.Conv):
    return ghost.probed(module, _conv_rule(module, x), x, params)
  if isinstance(module, nn.Embed):
    return ghost.probed(module, EmbedRule(), x.astype(jnp.float32), params)
  if getattr(module, "feature_axes", -1) not in (-1, (-1,)):
    raise UnsupportedLayerError(
        f"nn.LayerNorm {module.name!r}: feature_axes={module.feature_axes};"
        " the ghost backend takes the default (-1)")
  token = _IN_RULE.set(True)
  try:
    bare = module.clone(parent=None, use_scale=False, use_bias=False)
    normalised = bare.apply({}, x)
  finally:
    _IN_RULE.reset(token)
  return ghost.probed(module, NormAffineRule(module.use_scale,
                                             module.use_bias),
                      normalised, params)


def flax_model(module: nn.Module) -> Model:
  """A model written with stock flax layers, `module(x) -> logits`, as the
  DP code's `Model`, with norm probes for `privacy.dp_backend='ghost'`."""

  def apply(weights, arch_params=None, x=None, key=None):
    del arch_params, key
    return module.apply({"params": weights}, x)

  def probed(weights, probes, arch_params, x, key=None):
    del arch_params, key
    with nn.intercept_methods(_interceptor):
      if probes is None:
        logits, variables = module.apply({"params": weights}, x,
                                         mutable=[ghost.PROBES])
        return logits, variables.get(ghost.PROBES, {})
      return module.apply({"params": weights, ghost.PROBES: probes}, x), probes

  return Model(apply, probed)
