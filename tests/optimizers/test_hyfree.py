"""HyFreeDP's client optimiser: η applied on the client, loss probes
reported on probe steps, and the server's refit of η on the averaged report."""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from fedsearch.errors import ConfigError
from fedsearch.optimizers import (HyFreeState, OPTIMIZERS, StepProbe, hyfree,
                                  make_client_optimizer)
from fedsearch.privacy import auto_lr, mechanisms


def _state(eta, losses, probed, loss_clip=1.0):
  return HyFreeState(
      auto_lr.init(auto_lr.AutoLRConfig())._replace(
          log_learning_rate=jnp.log(jnp.float32(eta)),
          loss_clip=jnp.float32(loss_clip)),
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


def _shared_config(**overrides):
  return _config(shared_noise=True, reporting_clients=4, **overrides)


def test_under_shared_noise_the_probes_follow_the_released_direction():
  # The client's own update carries a share of the noise only: the probes
  # read the direction the server carries, never `updates`.
  opt = hyfree(_shared_config())
  weights = {"w": jnp.zeros(2), "b": jnp.float32(0.0)}
  state = opt.init(weights)
  chex.assert_trees_all_equal(state.direction, weights)
  direction = {"w": jnp.array([0.5, 0.25]), "b": jnp.float32(-1.0)}
  state = state._replace(direction=direction)
  seen = []

  def loss_at(step, along=None):
    seen.append(along)
    return _loss_at(step)

  opt.update(_UPDATES, state, StepProbe(loss_at, jnp.int32(0),
                                         jax.random.key(0)))
  assert len(seen) == 3
  for along in seen:
    chex.assert_trees_all_equal(along, direction)


def test_under_shared_noise_the_server_keeps_the_released_update_over_eta():
  opt = hyfree(_shared_config())
  state = opt.init({"w": jnp.zeros(2)})
  applied = {"w": jnp.array([0.1, -0.2])}
  new = opt.server_update(state, applied)
  # η0 = 0.5 was the rate of the released step: direction = applied / 0.5.
  chex.assert_trees_all_close(new.direction, {"w": jnp.array([0.2, -0.4])})
  # Unshared: nothing carried, whatever the server applied.
  assert hyfree(_config()).server_update(hyfree(_config()).init(),
                                         applied).direction is None


def test_shared_noise_needs_the_weights_to_shape_the_direction():
  with pytest.raises(ValueError, match="init\\(weights\\)"):
    hyfree(_shared_config()).init()


@pytest.mark.parametrize("shared", [False, True])
def test_the_reported_noise_is_that_of_the_servers_average(shared):
  # m clients of different sizes probe a zero loss with the mechanism's
  # noise; the server averages their reports with FedAvg weights
  # proportional to their expected batches. The std of that average must
  # be the averaged `noise_std`, under local noise (each client's whole)
  # and shared noise (each a 1/√m share).
  m, sigma, clip = 4, 2.0, 3.0
  expected = jnp.array([10.0, 20.0, 40.0, 80.0])
  config = _config(loss_noise_multiplier=sigma, initial_loss_clip=clip,
                   reporting_clients=m, shared_noise=shared)
  mechanism = (mechanisms.aggregate(clients_per_round=m) if shared
               else mechanisms.local())
  state = auto_lr.init(config)

  def report(key, n):
    loss_at = lambda step: (jnp.zeros(3), jnp.zeros(3, bool), n)
    return auto_lr.probe_losses(loss_at, state, config, key,
                                mechanism.noised_sum)

  keys = jax.random.split(jax.random.key(0), 20000 * m).reshape(20000, m)
  reports = jax.vmap(jax.vmap(report))(keys, jnp.broadcast_to(expected,
                                                              (20000, m)))
  weights = expected / expected.sum()
  averaged = jnp.einsum("k,tkp->tp", weights, reports.losses)
  noise_std = jnp.einsum("k,tk->t", weights, reports.noise_std)
  np.testing.assert_allclose(jnp.std(averaged, axis=0), noise_std[0],
                             rtol=0.03)
  want = sigma * clip * (1.0 if shared else math.sqrt(m)) / expected.sum()
  np.testing.assert_allclose(noise_std[0], want, rtol=1e-5)
