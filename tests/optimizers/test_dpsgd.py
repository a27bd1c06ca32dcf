"""DP-SGD's client optimiser: flat clipping, SGD with momentum and weight
decay at the client's learning rate, nothing carried between rounds."""

import chex
import jax.numpy as jnp
import optax
import pytest

from fedsearch.optimizers import StepProbe, dpsgd, make_client_optimizer

_H = {"learning_rate": 0.1, "momentum": 0.9, "weight_decay": 0.01}


def _two_steps(transform, params, grads):
  state = transform.init(params)
  out = []
  for g in grads:
    updates, state = transform.update(g, state, params)
    params = optax.apply_updates(params, updates)
    out.append(updates)
  return out


def test_transform_is_sgd_with_momentum_and_weight_decay_on_hand_numbers():
  p0 = jnp.array([1.0, -2.0])
  g1, g2 = jnp.array([0.5, 0.5]), jnp.array([-1.0, 2.0])
  u1, u2 = _two_steps(dpsgd().transform(_H), p0, [g1, g2])
  # Step 1: trace t1 = g1 + wd·p0 = (0.51, 0.48); u1 = −lr·t1.
  chex.assert_trees_all_close(u1, jnp.array([-0.051, -0.048]), atol=1e-7)
  # Step 2: p1 = p0 + u1 = (0.949, −2.048); t2 = g2 + wd·p1 + 0.9·t1.
  t2 = jnp.array([-1.0 + 0.00949 + 0.459, 2.0 - 0.02048 + 0.432])
  chex.assert_trees_all_close(u2, -0.1 * t2, atol=1e-7)
  # Which is optax's chain of the two.
  reference = optax.chain(optax.add_decayed_weights(0.01),
                          optax.sgd(0.1, 0.9))
  chex.assert_trees_all_close([u1, u2], _two_steps(reference, p0, [g1, g2]),
                              atol=1e-7)


def _no_loss_probe(step_size):
  raise AssertionError(f"DP-SGD probed the loss at {step_size}")


@pytest.mark.parametrize("global_step", [0, 7])
def test_update_passes_the_step_through_and_carries_nothing(global_step):
  opt = dpsgd()
  updates = {"w": jnp.array([0.3, -0.2])}
  # DP-SGD releases nothing but the gradient: it never reads the loss.
  probe = StepProbe(_no_loss_probe, jnp.int32(global_step), None)
  out, state = opt.update(updates, opt.init(), probe)
  chex.assert_trees_all_equal(out, updates)
  assert state is None and opt.init() is None
  assert opt.server_update(None) is None and opt.metrics(None) == {}
  # Flat clipping, and no releases besides gradients for the accountant.
  assert (opt.name, opt.clipping, opt.probe_every,
          opt.releases_per_probe) == ("dpsgd", "flat", 0, 0)


def test_the_registry_builds_dpsgd():
  assert make_client_optimizer("dpsgd").name == "dpsgd"
