"""Per-example clipping (flat, joint, automatic), padding, NaN safety, masked noise."""

import chex
import dp_accounting
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from fedsearch import privacy
from fedsearch.privacy import dp_grad

_ADD_REMOVE = dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE


def _linear_loss(w, arch, x, y):
  del arch
  return jnp.mean((x @ w - y) ** 2)


def _raw_grads(w, x, y):
  """Per-example gradients of `_linear_loss`, unclipped, shape (B, 5)."""
  return jax.vmap(jax.grad(_linear_loss), (None, None, 0, 0))(
      w, None, x[:, None], y[:, None])


@pytest.mark.parametrize("clip_norm", [0.1, 1.0, 10.0])
def test_clipped_per_example_norms_are_bounded(clip_norm):
  x = jax.random.normal(jax.random.key(0), (16, 5)) * 10
  y = jax.random.normal(jax.random.key(1), (16,))
  w = jnp.ones(5)
  grad_sum = privacy.clipped_grad_sum(_linear_loss, 0, clip_norm)
  per_example = [grad_sum(w, None, x[i:i + 1], y[i:i + 1]) for i in range(16)]
  norms = np.array([float(jnp.linalg.norm(g)) for g in per_example])
  assert np.all(norms <= clip_norm * (1 + 1e-5))
  # The sum is the sum of the clipped per-example gradients...
  chex.assert_trees_all_close(grad_sum(w, None, x, y), sum(per_example),
                              rtol=1e-5, atol=1e-6)
  # ...which are the raw gradients scaled by min(1, C / ||g||).
  raw = _raw_grads(w, x, y)
  scale = np.minimum(1.0, clip_norm / np.linalg.norm(raw, axis=1))
  chex.assert_trees_all_close(per_example, list(raw * scale[:, None]),
                              rtol=1e-5, atol=1e-6)
  assert grad_sum.sensitivity(_ADD_REMOVE) == clip_norm


def test_joint_clipping_bounds_weights_and_architecture_together():
  # One-stage steps release (weights, architecture) gradients of the same
  # example as one vector: its joint norm, not each part's, is at most C.
  def loss(w, arch, x, y):
    return jnp.mean((x @ w + arch * x.sum(-1) - y) ** 2)
  x = jax.random.normal(jax.random.key(0), (12, 5)) * 10
  y = jax.random.normal(jax.random.key(1), (12,))
  grad_sum = privacy.clipped_grad_sum(loss, (0, 1), 1.0)
  for i in range(12):
    g_w, g_a = grad_sum(jnp.ones(5), jnp.array(0.5), x[i:i + 1], y[i:i + 1])
    raw_w, raw_a = jax.grad(loss, (0, 1))(jnp.ones(5), jnp.array(0.5),
                                          x[i:i + 1], y[i:i + 1])
    joint = float(jnp.sqrt(jnp.sum(g_w ** 2) + g_a ** 2))
    assert joint <= 1.0 + 1e-5
    # Both parts scaled by the same factor: the direction is kept.
    factor = min(1.0, 1.0 / float(jnp.sqrt(jnp.sum(raw_w ** 2) + raw_a ** 2)))
    chex.assert_trees_all_close((g_w, g_a), (raw_w * factor, raw_a * factor),
                                rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("clip_norm,gamma", [(1.0, 0.01), (0.5, 1.0)])
def test_auto_clipping_normalises_below_the_bound(clip_norm, gamma):
  # Scales from 1e-3 to 1e3: tiny gradients too are normalised (no min(1, .)).
  x = (jax.random.normal(jax.random.key(0), (8, 5))
       * jnp.logspace(-3, 3, 8)[:, None])
  y = jnp.zeros(8)
  w = jnp.ones(5)
  grad_sum = privacy.clipped_grad_sum(_linear_loss, 0, clip_norm,
                                      clipping="auto", gamma=gamma)
  per_example = jnp.stack([grad_sum(w, None, x[i:i + 1], y[i:i + 1])
                           for i in range(8)])
  raw = _raw_grads(w, x, y)
  raw_norms = jnp.linalg.norm(raw, axis=1)
  chex.assert_trees_all_close(
      per_example, raw * (clip_norm / (raw_norms + gamma))[:, None],
      rtol=1e-5, atol=1e-7)
  assert jnp.all(jnp.linalg.norm(per_example, axis=1) < clip_norm)
  assert grad_sum.sensitivity(_ADD_REMOVE) == clip_norm


@pytest.mark.parametrize("clipping,gamma", [("bilinear", 0.01), ("auto", 0.0),
                                            ("flat", -1.0)])
def test_bad_clipping_options_are_refused(clipping, gamma):
  # γ ≤ 0 would divide a zero gradient by zero under automatic clipping.
  with pytest.raises(ValueError, match="clipping|gamma"):
    privacy.clipped_grad_sum(_linear_loss, 0, 1.0, clipping=clipping,
                             gamma=gamma)


def test_padding_and_non_finite_examples_contribute_nothing():
  x = jnp.ones((4, 3)).at[1].set(jnp.nan)
  y = jnp.ones(4)
  grad_sum = privacy.clipped_grad_sum(_linear_loss, 0, 1.0, nan_safe=True)
  padding = jnp.array([False, False, False, True])
  total = grad_sum(jnp.zeros(3), None, x, y, is_padding_example=padding)
  only_first = grad_sum(jnp.zeros(3), None, x[:1], y[:1])
  chex.assert_tree_all_finite(total)
  # Examples 0 and 2 are identical; 1 is NaN (zeroed), 3 is padding.
  chex.assert_trees_all_close(total, 2 * only_first, rtol=1e-6)
  assert float(jnp.linalg.norm(total)) <= 2.0 + 1e-6
  # The padding row is a real example: unflagged, it adds its gradient.
  unpadded = grad_sum(jnp.zeros(3), None, x, y)
  chex.assert_trees_all_close(unpadded, 3 * only_first, rtol=1e-6)


def test_noise_goes_only_where_the_mask_allows():
  opt = privacy.private_optimizer(2.0, jax.random.key(0), 1.0,
                                  optax.identity())
  grads = {"used": jnp.ones(20000), "unused": jnp.zeros(20000)}
  state = opt.init(grads)
  noised, _ = opt.update(grads, state, grads,
                         noise_mask={"used": True, "unused": False})
  np.testing.assert_array_equal(noised["unused"], 0.0)
  assert float(jnp.std(noised["used"])) == pytest.approx(2.0, rel=0.03)
  everywhere, _ = opt.update(grads, state, grads)
  assert float(jnp.std(everywhere["unused"])) == pytest.approx(2.0, rel=0.03)
  # The mask selects, it does not redraw: the noised leaf is the same noise.
  chex.assert_trees_all_equal(noised["used"], everywhere["used"])


def test_masked_noise_takes_a_traced_mask():
  # A sampled child's mask is computed from a key inside the jitted step.
  opt = privacy.private_optimizer(1.0, jax.random.key(0), 1.0,
                                  optax.identity())
  grads = {"a": jnp.zeros(100), "b": jnp.zeros(100)}

  @jax.jit
  def step(keep_a):
    return opt.update(grads, opt.init(grads), grads,
                      noise_mask={"a": keep_a, "b": ~keep_a})[0]

  on, off = step(jnp.bool_(True)), step(jnp.bool_(False))
  assert float(jnp.abs(on["a"]).sum()) > 0
  np.testing.assert_array_equal(on["b"], 0.0)
  np.testing.assert_array_equal(off["a"], 0.0)
  assert float(jnp.abs(off["b"]).sum()) > 0


def _adversarial_batch():
  # Rows of very different scales, one NaN row and one padding row.
  x = (jax.random.normal(jax.random.key(2), (6, 5))
       * jnp.logspace(-2, 2, 6)[:, None]).at[3].set(jnp.nan)
  y = jax.random.normal(jax.random.key(3), (6,))
  padding = jnp.array([False] * 5 + [True])
  return x, y, padding


@pytest.mark.parametrize("clipping", ["flat", "auto"])
@pytest.mark.parametrize("argnums", [0, (0, 1)])
def test_clipped_grad_sum_jit_equals_eager(clipping, argnums):
  def loss(w, arch, x, y):
    return jnp.mean((x @ w + arch * x.sum(-1) - y) ** 2)
  x, y, padding = _adversarial_batch()
  grad_sum = privacy.clipped_grad_sum(loss, argnums, 0.5, clipping=clipping)
  args = (jnp.ones(5), jnp.array(0.3), x, y)
  with jax.disable_jit():
    eager = grad_sum(*args, is_padding_example=padding)
  jitted = jax.jit(grad_sum)(*args, is_padding_example=padding)
  chex.assert_tree_all_finite(jitted)
  chex.assert_trees_all_close(jitted, eager, rtol=1e-5, atol=1e-6)


def test_auto_clip_transform_on_hand_numbers():
  # g = (3, 4): ‖g‖ = 5, so C·g/(‖g‖ + γ) = 2·(3, 4)/5.5.
  transform = dp_grad.auto_clip_transform(2.0, 0.5)
  chex.assert_trees_all_close(
      transform({"a": jnp.array([3.0]), "b": jnp.array([4.0])}),
      {"a": jnp.array([6.0 / 5.5]), "b": jnp.array([8.0 / 5.5])}, rtol=1e-6)
