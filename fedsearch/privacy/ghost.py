"""Per-example clipping without per-example gradients (ghost norms, book-keeping).

The plain backend (`dp_grad.clipped_grad_sum`, jax-privacy's `vmap(grad)`)
materialises every example's full gradient: B copies of the parameters, and
weight-gradient contractions run as B small products instead of one large
one. Here instead (Bu et al. 2023, "book-keeping"):

1. One batched forward pass. Every parametrised layer (`search_space.layers`)
   runs through a `custom_vjp` op that also takes a zero "tape" input; the
   backward rule returns as the tape's cotangent the layer's input x and its
   output cotangent g. Pulling back the per-example losses with cotangent
   ones yields every layer's (x, g) and no weight gradient (XLA drops the
   weight-gradient products: nothing uses them).
2. Per-example squared norms from (x, g) layer by layer (`Rule.sq_norm`),
   summed; clip factors c_i = min(1, C/‖g_i‖) (flat) or automatic
   C/(‖g_i‖ + γ) then flat (HyFreeDP).
3. The clipped sum by book-keeping: example i's cotangents under the
   weighted seed c are exactly c_i times those under seed 1 (the pullback is
   linear in its seed, example by example), so Σ_i c_i ∇ℓ_i is, per layer,
   the weight gradient of the layer for cotangent c·g: one large product
   over batch and positions, with no second backward pass.

A layer's `Rule` is a hashable dataclass (its static shape parameters) with
`apply(x, params)`, linear in params, and `sq_norm(x, g)`, each example's
squared norm of ∇_params for output cotangent g. For a dense or im2col conv
layer with T output positions, I inputs and O outputs per position the
per-example gradient is AᵀG (A: T×I, G: T×O); its squared norm is either
Σ_{t,s} (AAᵀ)_{ts}(GGᵀ)_{ts} ("ghost", T²(I+O) per example) or ‖AᵀG‖²
materialised (T·I·O): `matmul_sq_norm` picks the cheaper from the static
shapes. Depthwise and GroupNorm-affine gradients are small (k²·C, 2C):
materialised.

Non-finite examples: a non-finite entry of x or g meets a product in every
norm form here (the centre tap, the diagonal of the Gram matrix), so such an
example's norm is non-finite by itself; it gets factor 0 and its rows are
zeroed before the weighted products, so it adds exactly nothing, as
jax-privacy's `nan_safe`, at the cost of elementwise selects rather than a
pass over B gradient copies: always on.

Every weight must belong to a probed layer, else its gradient would escape
the norm and the sensitivity bound: that is an error.
"""

import dataclasses
import functools
from collections.abc import Callable
from typing import Any, Protocol

import flax.linen as nn
import jax
import jax.numpy as jnp
import jax_privacy
from flax import traverse_util

from fedsearch.privacy import dp_grad

PROBES = "norm_probes"
_TAPE = "tape"


class Rule(Protocol):
  """A layer's parametrised part: `apply` is linear in `params`."""

  def apply(self, x: jax.Array, params: dict) -> jax.Array: ...

  def sq_norm(self, x: jax.Array, g: jax.Array) -> jax.Array: ...


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class Tape:
  """A layer's input and output cotangent; `rule` is static (pytree aux)."""

  x: jax.Array
  g: jax.Array
  rule: Any = dataclasses.field(metadata={"static": True})


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _taped(rule, x, params, tape):
  del tape
  return rule.apply(x, params)


def _taped_fwd(rule, x, params, tape):
  del tape
  return rule.apply(x, params), (x, params)


def _taped_bwd(rule, saved, g):
  x, params = saved
  dx, dparams = jax.vjp(rule.apply, x, params)[1](g)
  return dx, dparams, Tape(x, g, rule)


_taped.defvjp(_taped_fwd, _taped_bwd)


def probed(module: nn.Module, rule: Rule, x: jax.Array, params: dict
           ) -> jax.Array:
  """`rule.apply(x, params)`, taped when the model is applied with probes.

  `params` must be all of `module`'s own parameters. A probed apply passes
  the `norm_probes` collection, or marks it mutable to create zero tapes
  (whose shapes the backend differentiates); otherwise this is the plain
  expression.
  """
  if module.is_initializing():
    return rule.apply(x, params)
  if module.has_variable(PROBES, _TAPE):
    return _taped(rule, x, params, module.get_variable(PROBES, _TAPE))
  if module.is_mutable_collection(PROBES):
    y = rule.apply(x, params)
    # Through the scope: a setup-style layer (flax's Embed) may not create
    # variables in its __call__, but its scope may.
    tape = module.scope.variable(PROBES, _TAPE, lambda: Tape(
        jnp.zeros_like(x), jnp.zeros_like(y), rule)).value
    return _taped(rule, x, params, tape)
  return rule.apply(x, params)


def use_ghost_form(positions: int, inputs: int, outputs: int) -> bool:
  """Whether T²(I+O) (ghost) is cheaper than T·I·O (materialised)."""
  return positions * (inputs + outputs) < inputs * outputs


def matmul_sq_norm(a: jax.Array, g: jax.Array, ghost: bool | None = None
                   ) -> jax.Array:
  """Per-example ‖AᵢᵀGᵢ‖²_F for a (B, ..., I), g (B, ..., O)."""
  b = a.shape[0]
  a = a.reshape(b, -1, a.shape[-1])
  g = g.reshape(b, -1, g.shape[-1])
  if ghost is None:
    ghost = use_ghost_form(a.shape[1], a.shape[2], g.shape[2])
  if a.shape[1] == 1:
    return jnp.sum(a * a, axis=(1, 2)) * jnp.sum(g * g, axis=(1, 2))
  if ghost:
    gram_a = jnp.einsum("bti,bsi->bts", a, a)
    gram_g = jnp.einsum("bto,bso->bts", g, g)
    return jnp.sum(gram_a * gram_g, axis=(1, 2))
  per_example = jnp.einsum("bti,bto->bio", a, g)
  return jnp.sum(per_example * per_example, axis=(1, 2))


def summed_sq_norm(g: jax.Array) -> jax.Array:
  """Per-example ‖Σ_t g_t‖² (a bias added at every position)."""
  total = g.reshape(g.shape[0], -1, g.shape[-1]).sum(axis=1)
  return jnp.sum(total * total, axis=1)


def _params_by_module(weights, tapes) -> dict:
  """{module path: its parameters}, refusing weights of unprobed modules."""
  by_module = {}
  for path, value in traverse_util.flatten_dict(weights).items():
    by_module.setdefault(path[:-1], {})[path[-1]] = value
  probed_modules = {path[:-1] for path in tapes}
  missing = sorted("/".join(module + (name,))
                   for module, params in by_module.items()
                   if module not in probed_modules for name in params)
  if missing:
    raise ValueError(
        "privacy.dp_backend='ghost' cannot bound the per-example gradient of"
        f" {missing}: these parameters do not belong to a probed layer"
        " (fedsearch.search_space.layers Dense, Conv, DepthwiseConv,"
        " GroupNorm); use privacy.dp_backend='vmap' for this model")
  return by_module


def clip_factors(sq_norm: jax.Array, clip_norm: float, clipping: str,
                 gamma: float) -> jax.Array:
  """Per-example multipliers: flat min(1, C/‖g‖) or automatic, then flat.

  A non-finite norm gets 0.
  """
  norm = jnp.sqrt(sq_norm)
  factor = jnp.ones_like(norm)
  if clipping == "auto":
    factor = clip_norm / (norm + gamma)
  clipped = factor * norm
  factor = factor * jnp.minimum(1.0, clip_norm / jnp.maximum(clipped, 1e-30))
  return jnp.where(jnp.isfinite(norm), factor, 0.0)


def _rows(mask: jax.Array, a: jax.Array) -> jax.Array:
  return mask.reshape((-1,) + (1,) * (a.ndim - 1))


def clipped_grad_sum(probed_losses: Callable, clip_norm: float,
                     clipping: str = "flat", gamma: float = 0.01
                     ) -> jax_privacy.clipping.BoundedSensitivityCallable:
  """Sum of per-example weight gradients clipped to C, by book-keeping.

  Args:
    probed_losses: `(weights, probes, arch, x, y, *rest) -> (losses (B,),
      probes)`: per-example losses of a batch computed by a probed apply;
      with `probes=None` it creates zero tapes and returns them.
    clip_norm, clipping, gamma: as `dp_grad.clipped_grad_sum`.

  Returns:
    `(weights, arch, x, y, *rest, is_padding_example=None) -> sum`, the same
    clipped sum as `dp_grad.clipped_grad_sum(loss, 0, ...)` (to float
    rounding), with `.sensitivity()` == C.
  """
  if clipping not in dp_grad.CLIPPING:
    raise ValueError(f"clipping={clipping!r}; choose one of {dp_grad.CLIPPING}")
  if gamma <= 0:
    raise ValueError(f"gamma must be > 0, got {gamma}")

  def grad_sum(weights, arch, x, y, *rest, is_padding_example=None):
    shapes = jax.eval_shape(
        lambda: probed_losses(weights, None, arch, x, y, *rest)[1])
    # Zeros that vary over the same mesh axes as the data and weights (under
    # shard_map a tape's cotangent has their axis types, and must match).
    anchor = jnp.zeros_like(x, shape=()) + sum(
        jnp.zeros_like(w, shape=()) for w in jax.tree.leaves(weights)[:1])
    zero_tapes = jax.tree.map(
        lambda s: jnp.zeros_like(anchor, s.dtype, shape=s.shape), shapes)
    params_by_module = _params_by_module(
        weights, traverse_util.flatten_dict(zero_tapes))
    losses, pull = jax.vjp(
        lambda tapes: probed_losses(weights, tapes, arch, x, y, *rest)[0],
        zero_tapes)
    tapes = traverse_util.flatten_dict(pull(jnp.ones_like(losses))[0])
    sq_norm = sum(t.rule.sq_norm(t.x, t.g) for t in tapes.values())
    factor = clip_factors(sq_norm, clip_norm, clipping, gamma)
    if is_padding_example is not None:
      factor = jnp.where(is_padding_example, 0.0, factor)
    finite = jnp.isfinite(sq_norm)
    grads = {}
    for path, t in tapes.items():
      module = path[:-1]
      x_kept = jnp.where(_rows(finite, t.x), t.x, 0)
      g_weighted = jnp.where(_rows(finite, t.g),
                             t.g * _rows(factor, t.g).astype(t.g.dtype), 0)
      d = jax.vjp(lambda p: t.rule.apply(x_kept, p),
                  params_by_module[module])[1](g_weighted)[0]
      grads.update({module + (name,): v for name, v in d.items()})
    return traverse_util.unflatten_dict(grads)

  return jax_privacy.clipping.BoundedSensitivityCallable(
      grad_sum, l2_norm_bound=clip_norm, has_aux=False)
