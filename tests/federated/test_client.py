"""A client's local update: jit vs eager, either DP backend, and local steps
that are not taken."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fedsearch import data
from fedsearch import federated as fed
from fedsearch import nas
from fedsearch import search_space as ss
from fedsearch.federated.client import client_keys
from fedsearch.optimizers import dpsgd, hyfree
from fedsearch.privacy import mechanisms
from fedsearch.privacy.auto_lr import AutoLRConfig


def _client_optimizer(name, probe_every):
  if name == "hyfree":
    return hyfree(AutoLRConfig(probe_every=probe_every))
  return dpsgd()


def _darts_update(space, config, optimizer, dp_backend="vmap"):
  """A DARTS search step's local update on the supernet of `space`."""
  strategy = nas.make_strategy("darts", space)
  return fed.make_local_update(
      strategy.model, config,
      mechanism=mechanisms.local(dp_backend=dp_backend), optimizer=optimizer,
      arch_step=strategy.arch_step,
      reads_validation=strategy.traits.reads_validation,
      active_weights=strategy.active_weights)


def _start(space, input_shape, optimizer) -> fed.ClientState:
  return fed.ClientState(
      fed.ModelParams(ss.init_supernet(space, jax.random.key(0), input_shape),
                      ss.init_arch_params(space, key=jax.random.key(1))),
      optimizer.init(), None)


@functools.lru_cache(maxsize=None)
def _digits_client():
  """Client 1's Poisson batches of one 2-step round on 8 digits clients."""
  ds = data.load_dataset("digits")
  x = jnp.asarray(data.normalize("digits", ds.train_x, ds.pixel_max))
  y = jnp.asarray(ds.train_y)
  splits = fed.split_clients(
      data.partition(ds.train_y, "dirichlet", 8, seed=0), 0.3, seed=0)
  inputs = fed.round_inputs(
      splits, np.asarray([1]), seed=0, round_=3, steps=2, sampling_rate=0.2,
      batch_sizes=(24, 12), validation_batches=True,
      train_on_all_local_data=False)
  batches = fed.ClientBatches(
      fed.Batches(x[inputs.train_idx[0]], y[inputs.train_idx[0]],
                  jnp.asarray(inputs.train_padding[0])),
      fed.Batches(x[inputs.val_idx[0]], y[inputs.val_idx[0]],
                  jnp.asarray(inputs.val_padding[0])))
  return batches, jnp.asarray(inputs.expected_batch[0])


# Eager execution of a whole local update takes a minute: slow suite. The
# privacy modules' own jit-vs-eager checks run by default
# (tests/privacy/test_dp_grad.py, test_ghost.py, test_mechanisms.py,
# test_auto_lr.py).
@pytest.mark.slow
@pytest.mark.parametrize("optimizer", ["dpsgd", "hyfree"])
def test_local_update_jit_equals_eager(optimizer):
  space = ss.SearchSpace(channels=4, nodes=1, cells=1)
  opt = _client_optimizer(optimizer, probe_every=2)
  local = _darts_update(space, fed.ClientConfig(noise_multiplier=1.0), opt)
  batches, expected = _digits_client()
  start = _start(space, (8, 8, 1), opt)
  # first_step 6: with probe_every 2, HyFreeDP probes on the first step.
  args = (start, batches, jax.random.key(0), expected, 6)
  # (new state, gain): no feedback batch here, so the gain is None.
  with jax.disable_jit():
    eager = local(*args)
  jitted = jax.jit(local)(*args)
  chex.assert_trees_all_close(jitted, eager, rtol=1e-4, atol=1e-5)
  assert eager[1] is None
  if optimizer == "hyfree":  # The probe was taken, and reported.
    assert float(jitted[0].optimizer.report.probed) == 1.0
    assert bool(jnp.all(jnp.isfinite(jitted[0].optimizer.report.losses)))


def _batch(n=6, shape=(6, 6, 1), seed=3):
  x = jax.random.normal(jax.random.key(seed), (n, *shape))
  # Examples of very different scales, so some are clipped and some not.
  x = x * jnp.logspace(-2, 1, n).reshape(-1, 1, 1, 1)
  return x, jnp.arange(n) % 3


_SMALL = ss.SearchSpace(channels=4, nodes=1, cells=1, num_classes=3,
                        head="flatten")


@pytest.mark.slow  # Each backend against vmap: tests/privacy/test_ghost.py.
@pytest.mark.parametrize("optimizer", ["dpsgd", "hyfree"])
def test_a_client_update_is_the_same_with_either_backend(optimizer):
  # Search phase on the supernet: architecture steps (always vmap) and weight
  # steps (the backend under test), same keys, so the same noise.
  x, y = _batch()
  steps = 2
  train = fed.Batches(jnp.stack([x] * steps), jnp.stack([y] * steps),
                      jnp.zeros((steps, 6), bool).at[:, -1].set(True))
  batches = fed.ClientBatches(train, train)
  opt = _client_optimizer(optimizer, probe_every=1)
  start = _start(_SMALL, (6, 6, 1), opt)
  config = fed.ClientConfig(noise_multiplier=0.5, clip_norm=0.1)
  results = []
  for backend in ("vmap", "ghost"):
    local = jax.jit(_darts_update(_SMALL, config, opt, backend))
    results.append(local(start, batches, jax.random.key(4),
                         jnp.array([5.0, 5.0, 5.0]), 0)[0])
  chex.assert_trees_all_close(results[1], results[0], rtol=1e-4, atol=1e-6)
  assert not np.allclose(results[0].params.weights["classifier"]["kernel"],
                         start.params.weights["classifier"]["kernel"])


@pytest.mark.parametrize("optimizer,taken", [
    ("dpsgd", 1), pytest.param("dpsgd", 2, marks=pytest.mark.slow),
    pytest.param("hyfree", 1, marks=pytest.mark.slow),
    pytest.param("hyfree", 2, marks=pytest.mark.slow)])
def test_steps_not_taken_change_nothing(optimizer, taken):
  # A client with `active_steps` False from step k on ends where a client
  # given only its first k batches ends: same params, same reports.
  steps = 3
  keys = jax.random.split(jax.random.key(8), steps)
  xs, ys = zip(*[_batch(seed=int(jax.random.randint(k, (), 0, 1000)))
                 for k in keys])
  train = fed.Batches(jnp.stack(xs), jnp.stack(ys),
                      jnp.zeros((steps, 6), bool).at[:, -1].set(True))
  val = jax.tree.map(lambda a: a[::-1], train)  # Other rows than train's.
  # HyFreeDP probes every 2 global steps from global step 1: on local step
  # 1, which is taken only when `taken` is 2.
  opt = _client_optimizer(optimizer, probe_every=2)
  local = jax.jit(_darts_update(_SMALL, fed.ClientConfig(noise_multiplier=0.5),
                                opt))
  start = _start(_SMALL, (6, 6, 1), opt)
  args = (jax.random.key(4), jnp.array([5.0, 4.0, 5.0]), 1)
  active = jnp.arange(steps) < taken
  masked, _ = local(start, fed.ClientBatches(train, val, None, active), *args)
  prefix = jax.tree.map(lambda a: a[:taken], (train, val))
  short, _ = local(start, fed.ClientBatches(*prefix), *args)
  chex.assert_trees_all_close(masked, short, rtol=1e-6, atol=1e-7)
  # The steps taken did move the model.
  assert not np.allclose(masked.params.weights["classifier"]["kernel"],
                         start.params.weights["classifier"]["kernel"])
  if optimizer == "hyfree":
    assert float(masked.optimizer.report.probed) == float(taken == 2)


def test_a_clients_random_streams_are_distinct_and_named():
  keys = client_keys(jax.random.key(7))
  assert keys._fields == ("weight", "arch", "probe", "feedback", "model",
                          "feedback_model")
  streams = [tuple(np.asarray(jax.random.key_data(k)).ravel()) for k in keys]
  assert len(set(streams)) == len(streams)
  chex.assert_trees_all_equal(
      jax.random.key_data(client_keys(jax.random.key(7)).feedback),
      jax.random.key_data(keys.feedback))
