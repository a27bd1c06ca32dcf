"""HyFreeDP's client optimiser: η applied on the client, loss probes
reported on probe steps, and the server's refit of η on the averaged report."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from fedsearch.errors import ConfigError
from fedsearch.optimizers import (HyFreeState, OPTIMIZERS, StepProbe, hyfree,
                                  make_client_optimizer)
from fedsearch.privacy import auto_lr


def _state(eta, losses, probed, loss_clip=1.0):
  return HyFreeState(
      auto_lr.AutoLRState(jnp.log(jnp.float32(eta)), jnp.float32(loss_clip)),
      auto_lr.ProbeReport(jnp.asarray(losses, jnp.float32),
                          jnp.float32(probed)))


@pytest.mark.parametrize("eta,a,b", [(0.1, 4.0, 1.0), (1.0, 0.5, 0.4),
                                     (0.01, 100.0, 2.0)])
@pytest.mark.parametrize("probed", [1.0, 0.0])
def test_server_update_refits_eta_only_on_a_probed_report(eta, a, b, probed):
  config = auto_lr.AutoLRConfig(max_change=10.0)
  # A noiseless quadratic loss along the update, minimum at η* = b/a.
  scales = np.asarray(config.probe_scales)
  losses = 2.0 - b * scales * eta + 0.5 * a * (scales * eta) ** 2
  state = _state(eta, losses, probed)
  new = hyfree(config).server_update(state)
  if probed:
    want = np.clip(b / a, eta / 10, eta * 10)
    assert float(new.learning_rate.learning_rate) == pytest.approx(want,
                                                                   rel=1e-3)
    # R_l follows the loss at η = 0 (times the factor 2).
    assert float(new.learning_rate.loss_clip) == pytest.approx(4.0)
    chex.assert_trees_all_close(
        new.learning_rate,
        auto_lr.update(state.learning_rate, jnp.asarray(losses), config))
  else:  # No client probed this round: nothing to fit.
    chex.assert_trees_all_equal(new.learning_rate, state.learning_rate)
  # The report is consumed: next round starts from an empty one.
  chex.assert_trees_all_equal(
      new.report, auto_lr.ProbeReport(jnp.zeros(3), jnp.float32(0.0),
                                      jnp.float32(0.0)))


def _config(**overrides):
  return auto_lr.AutoLRConfig(**{
      "probe_every": 4, "initial_learning_rate": 0.5,
      "initial_loss_clip": 10.0, "loss_noise_multiplier": 0.0, **overrides})


def _loss_at(step):
  """Per-example losses at θ + step·u: three real rows, one padding row;
  the third exceeds R_l = 10 and is clipped; normaliser 2 (public)."""
  losses = jnp.array([1.0, 2.0, 30.0, 1e6]) + step ** 2
  return losses, jnp.array([False, False, False, True]), jnp.float32(2.0)


_UPDATES = {"w": jnp.array([1.0, -2.0]), "b": jnp.array(3.0)}
_SENTINEL = auto_lr.ProbeReport(jnp.array([7.0, 8.0, 9.0]), jnp.float32(0.0))


@pytest.mark.parametrize("global_step", [0, 3, 4, 8, 9])
def test_update_scales_by_eta_and_reports_only_on_probe_steps(global_step):
  opt = hyfree(_config())
  state = opt.init()._replace(report=_SENTINEL)
  updates, new = opt.update(_UPDATES, state, StepProbe(
      _loss_at, jnp.int32(global_step), jax.random.key(0)))
  chex.assert_trees_all_close(updates,
                              jax.tree.map(lambda u: 0.5 * u, _UPDATES))
  chex.assert_trees_all_equal(new.learning_rate, state.learning_rate)
  if global_step % 4 == 0:
    # Probes at steps s·η = 0, 0.5, 1: (1 + 2 + 10 + 2·step²) / 2.
    chex.assert_trees_all_close(
        new.report, auto_lr.ProbeReport(jnp.array([6.5, 6.75, 7.5]),
                                        jnp.float32(1.0)))
  else:  # Not a probe step: the report stays as it was.
    chex.assert_trees_all_equal(new.report, _SENTINEL)


@pytest.mark.parametrize("global_step", [4, 5])
def test_update_jit_equals_eager(global_step):
  # With loss noise, so the probe keys must agree too.
  opt = hyfree(_config(loss_noise_multiplier=1.0))
  state = opt.init()

  def update(updates, state, step, key):
    return opt.update(updates, state, StepProbe(_loss_at, step, key))

  args = (_UPDATES, state, jnp.int32(global_step), jax.random.key(3))
  with jax.disable_jit():
    eager = update(*args)
  chex.assert_trees_all_close(jax.jit(update)(*args), eager, rtol=1e-6)


def test_probe_noise_differs_between_probe_steps():
  # Each probe step draws its own noise from the step index.
  opt = hyfree(_config(loss_noise_multiplier=1.0))
  reports = [opt.update(_UPDATES, opt.init(), StepProbe(
      _loss_at, jnp.int32(step), jax.random.key(3)))[1].report.losses
             for step in (4, 8)]
  assert not np.allclose(reports[0], reports[1])


def test_transform_is_unit_rate_sgd_with_momentum_and_weight_decay():
  # η is applied in `update`; the base transform runs at rate 1.
  transform = hyfree(_config()).transform(
      {"learning_rate": 0.1, "momentum": 0.9, "weight_decay": 0.01})
  p = jnp.array([1.0, -2.0])
  g = jnp.array([0.5, 0.5])
  state = transform.init(p)
  u1, state = transform.update(g, state, p)
  chex.assert_trees_all_close(u1, -(g + 0.01 * p))
  u2, _ = transform.update(g, state, p + u1)
  chex.assert_trees_all_close(u2, -(g + 0.01 * (p + u1) + 0.9 * (g + 0.01 * p)),
                              rtol=1e-6)


def test_hyfree_declares_its_clipping_releases_and_metrics():
  config = _config(probe_every=3)
  opt = hyfree(config)
  assert (opt.name, opt.clipping, opt.probe_every, opt.releases_per_probe) == (
      "hyfree", "auto", 3, 3)
  state = opt.init()
  assert float(state.report.probed) == 0.0 and state.report.losses.shape == (3,)
  assert opt.metrics(state) == pytest.approx(
      {"learning_rate": 0.5, "loss_clip": 10.0})


def test_the_registry_builds_hyfree_from_the_lr_config_and_checks_names():
  assert set(OPTIMIZERS) == {"dpsgd", "hyfree"}
  opt = make_client_optimizer("hyfree", _config(probe_every=7))
  assert opt.probe_every == 7
  # Without a config: HyFreeDP's defaults.
  assert make_client_optimizer("hyfree").probe_every == (
      auto_lr.AutoLRConfig().probe_every)
  with pytest.raises(ConfigError,
                     match=r"client.optimizer='adam'.*\['dpsgd', 'hyfree'\]"):
    make_client_optimizer("adam")
