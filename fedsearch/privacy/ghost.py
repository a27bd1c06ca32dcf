"""Per-example clipping without per-example gradients ("ghost" backend).

The plain backend (`dp_grad.clipped_grad_sum`, jax-privacy's `vmap(grad)`)
materialises every example's full gradient: B copies of the model's
parameters, and per-example weight-gradient contractions that run as B
small products instead of one large one. Here instead:

1. One batched forward pass; every parametrised layer of
   `fedsearch.search_space.layers` runs through a `custom_vjp` op that also
   takes a zero "norm probe" of shape (B,). Its backward rule computes, from
   the layer's saved input and its output cotangent, each example's squared
   norm of that layer's parameter gradient, and returns it as the probe's
   cotangent. Pulling back the vector of per-example losses with cotangent
   ones therefore yields, in the probes' gradient, the per-layer per-example
   squared norms; the weight-gradient products are dead code there and XLA
   drops them.
2. Clip factors from the summed norms: min(1, C/‖g_i‖) (flat) or the
   automatic C/(‖g_i‖ + γ) followed by the flat clip (HyFreeDP).
3. The clipped sum Σ_i c_i ∇ℓ_i is the same pullback with cotangent c: a
   second, weighted backward pass over the saved forward pass.

Per layer the norm takes the cheapest exact form. A dense or im2col conv
layer with T output positions, I inputs and O outputs per position has
per-example gradient AᵀG (A: T×I, G: T×O); its squared Frobenius norm is
either Σ_{t,s} (AAᵀ)_{ts}(GGᵀ)_{ts} ("ghost", T²(I+O) per example) or
‖AᵀG‖² materialised (T·I·O); the smaller is chosen from the static shapes.
Depthwise (dilated) kernels and GroupNorm's scale/bias have per-example
gradients of k²·C and C entries: materialised directly.

Non-finite examples: an example whose input or cotangent at any layer is not
finite gets squared norm +inf (clip factor 0) and its rows are zeroed in
every layer's backward rule, so it adds exactly nothing to the sum, as
jax-privacy's `nan_safe`; here that costs one elementwise pass over the
activations, not over B gradient copies, so it is always on.

Every weight must belong to a probed layer; otherwise its gradient would
escape the norm and the sensitivity bound, so that is an error.
"""

from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import jax_privacy
from flax import traverse_util

from fedsearch.privacy import dp_grad

PROBES = "norm_probes"
_PROBE = "sq_norm"


def norm_probe(module: nn.Module, batch_size: int) -> jax.Array | None:
  """The layer's norm probe in a probed apply, else None (a plain layer).

  A probed apply passes the `norm_probes` collection, or marks it mutable to
  create zero probes (their shapes are what the backend differentiates).
  """
  if module.is_initializing():
    return None
  if module.has_variable(PROBES, _PROBE):
    return module.get_variable(PROBES, _PROBE)
  if module.is_mutable_collection(PROBES):
    return module.variable(PROBES, _PROBE, jnp.zeros, (batch_size,)).value
  return None


def _rows_finite(tree) -> jax.Array:
  leaves = jax.tree.leaves(tree)
  return jnp.stack([jnp.isfinite(a).reshape(a.shape[0], -1).all(axis=1)
                    for a in leaves]).all(axis=0)


def _zero_rows(tree, keep):
  return jax.tree.map(
      lambda a: jnp.where(keep.reshape((-1,) + (1,) * (a.ndim - 1)), a, 0),
      tree)


def probed_op(fn: Callable, per_example_sq_norm: Callable) -> Callable:
  """`fn(x, params)` (linear in params) as `op(x, params, probe)`.

  The op's value is `fn(x, params)`; its backward rule also returns, as the
  probe's cotangent, `per_example_sq_norm(x, g)`: each example's squared norm
  of the gradient w.r.t. `params` given output cotangent g.
  """
  @jax.custom_vjp
  def op(x, params, probe):
    del probe
    return fn(x, params)

  def fwd(x, params, probe):
    del probe
    return fn(x, params), (x, params)

  def bwd(saved, g):
    x, params = saved
    # A non-finite input or cotangent makes that example's norm non-finite
    # by itself (it meets a product in every form below), so the norms need
    # no masking. The parameter cotangent, only used by the weighted pass
    # (XLA drops it from the norm pass), is summed over the finite rows.
    sq_norm = per_example_sq_norm(x, g)
    dx = jax.vjp(lambda x: fn(x, params), x)[1](g)[0]
    finite = _rows_finite(x) & _rows_finite(g)
    masked_x, masked_g = _zero_rows(x, finite), _zero_rows(g, finite)
    dparams = jax.vjp(lambda p: fn(masked_x, p), params)[1](masked_g)[0]
    return dx, dparams, sq_norm

  op.defvjp(fwd, bwd)
  return op


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


def affine(module: nn.Module, x: jax.Array, kernel: jax.Array,
           bias: jax.Array | None, expand: Callable = lambda x: x
           ) -> jax.Array:
  """expand(x) @ kernel (+ bias), kernel (I, O): dense, and conv by im2col.

  `expand` (e.g. im2col) is applied inside the op, so the backward rule
  saves and checks x rather than the k²-times larger patches.
  """
  def fn(x, params):
    kernel, bias = params
    y = expand(x) @ kernel
    return y if bias is None else y + bias

  probe = norm_probe(module, x.shape[0])
  if probe is None:
    return fn(x, (kernel, bias))

  def sq_norm(x, g):
    norm = matmul_sq_norm(expand(x), g)
    return norm if bias is None else norm + summed_sq_norm(g)

  return probed_op(fn, sq_norm)(x, (kernel, bias), probe)


def scale_shift(module: nn.Module, x: jax.Array, scale: jax.Array,
                bias: jax.Array) -> jax.Array:
  """x * scale + bias per channel (GroupNorm's affine part)."""
  def fn(x, params):
    return x * params[0] + params[1]

  probe = norm_probe(module, x.shape[0])
  if probe is None:
    return fn(x, (scale, bias))

  def sq_norm(x, g):
    d_scale = (x * g).reshape(x.shape[0], -1, x.shape[-1]).sum(axis=1)
    return jnp.sum(d_scale * d_scale, axis=1) + summed_sq_norm(g)

  return probed_op(fn, sq_norm)(x, (scale, bias), probe)


def taps(module: nn.Module, x: jax.Array, kernel: jax.Array,
         shifts: Callable) -> jax.Array:
  """Σ_taps shift_tap(x) * kernel[tap] per channel (depthwise convolution).

  `shifts(x)` yields (i, j, shifted x) for the kernel taps; kernel is
  (k, k, 1, C).
  """
  def fn(x, kernel):
    return sum(s * kernel[i, j, 0] for i, j, s in shifts(x))

  probe = norm_probe(module, x.shape[0])
  if probe is None:
    return fn(x, kernel)

  def sq_norm(x, g):
    total = 0.0
    for _, _, s in shifts(x):
      d_tap = (s * g).reshape(x.shape[0], -1, x.shape[-1]).sum(axis=1)
      total = total + jnp.sum(d_tap * d_tap, axis=1)
    return total

  return probed_op(fn, sq_norm)(x, kernel, probe)


def _check_covered(weights, probes) -> None:
  probed_modules = {path[:-1] for path in
                    traverse_util.flatten_dict(probes)}
  missing = ["/".join(path) for path in traverse_util.flatten_dict(weights)
             if path[:-1] not in probed_modules]
  if missing:
    raise ValueError(
        "client.dp_backend='ghost' cannot bound the per-example gradient of"
        f" {missing}: these parameters do not belong to a norm-probed layer"
        " (fedsearch.search_space.layers Dense, Conv, DepthwiseConv,"
        " GroupNorm); use client.dp_backend='vmap' for this model")


def clip_factors(sq_norm: jax.Array, clip_norm: float, clipping: str,
                 gamma: float) -> jax.Array:
  """Per-example multipliers: flat min(1, C/‖g‖) or automatic, then flat."""
  norm = jnp.sqrt(sq_norm)
  factor = jnp.ones_like(norm)
  if clipping == "auto":
    factor = clip_norm / (norm + gamma)
  clipped = factor * norm
  factor = factor * jnp.minimum(1.0, clip_norm / jnp.maximum(clipped, 1e-30))
  return jnp.where(jnp.isfinite(norm), factor, 0.0)


def clipped_grad_sum(probed_losses: Callable, clip_norm: float,
                     clipping: str = "flat", gamma: float = 0.01
                     ) -> jax_privacy.clipping.BoundedSensitivityCallable:
  """Sum of per-example weight gradients clipped to C, by ghost norms.

  Args:
    probed_losses: `(weights, probes, arch, x, y, *rest) -> (losses (B,),
      probes)`: per-example losses of a batch computed by a probed apply;
      with `probes=None` it creates zero probes and returns them.
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
    probe_shapes = jax.eval_shape(
        lambda: probed_losses(weights, None, arch, x, y, *rest)[1])
    probes = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), probe_shapes)
    _check_covered(weights, probes)
    losses, pull = jax.vjp(
        lambda w, p: probed_losses(w, p, arch, x, y, *rest)[0], weights,
        probes)
    _, sq_norms = pull(jnp.ones_like(losses))
    sq_norm = sum(jax.tree.leaves(sq_norms))
    factor = clip_factors(sq_norm, clip_norm, clipping, gamma)
    if is_padding_example is not None:
      factor = jnp.where(is_padding_example, 0.0, factor)
    clipped_sum, _ = pull(factor.astype(losses.dtype))
    return clipped_sum

  return jax_privacy.clipping.BoundedSensitivityCallable(
      grad_sum, l2_norm_bound=clip_norm, has_aux=False)
