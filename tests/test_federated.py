"""FedAvg weights, the vectorised round on 1 vs 4 devices, jit vs eager."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from fedsearch import data
from fedsearch import federated as fed
from fedsearch import search_space as ss
from fedsearch.privacy import auto_lr
from fedsearch.privacy.auto_lr import AutoLRConfig


def test_weighted_average_on_hand_numbers():
  stacked = {"a": jnp.array([[1.0, 2.0], [3.0, 4.0], [10.0, 0.0]]),
             "b": jnp.array([1.0, 2.0, 4.0])}
  avg = fed.weighted_average(stacked, jnp.array([1.0, 3.0, 0.0]))
  chex.assert_trees_all_close(avg, {"a": jnp.array([2.5, 3.5]),
                                    "b": jnp.array(1.75)})


def test_fedavg_server_step_with_sgd_one_is_the_weighted_mean_model():
  params = {"w": jnp.array([0.0, 0.0])}
  clients = jnp.array([[2.0, 4.0], [6.0, 8.0]])
  deltas = {"w": clients - params["w"]}
  opt = optax.sgd(1.0)
  state = fed.server_init(params, opt)
  mean = fed.weighted_average(deltas, jnp.array([3.0, 1.0]))
  state = fed.server_update(state, mean, opt)
  chex.assert_trees_all_close(state.params["w"], jnp.array([3.0, 5.0]))


@functools.lru_cache(maxsize=None)
def _setup(optimizer="dpsgd", dp_backend="vmap"):
  ds = data.load_dataset("digits")
  x = jnp.asarray(data.normalize("digits", ds.train_x, ds.pixel_max))
  y = jnp.asarray(ds.train_y)
  parts = data.partition(ds.train_y, "dirichlet", 8, seed=0)
  splits = fed.split_clients(parts, 0.3, seed=0)
  space = ss.SearchSpace(channels=4, nodes=1, cells=1)
  params = {"weights": ss.init_supernet(space, jax.random.key(0), (8, 8, 1)),
            "arch": ss.init_arch_params(space, key=jax.random.key(1))}
  config = fed.ClientConfig(noise_multiplier=1.0, optimizer=optimizer,
                           auto_lr=AutoLRConfig(probe_every=2),
                           dp_backend=dp_backend)
  if optimizer == "hyfree":
    params["carried"] = auto_lr.init_carried(config.auto_lr)
  local = fed.make_local_update(ss.supernet_apply(space), config, True)
  return x, y, splits, params, local


def _inputs(splits, clients, multiple, feedback=False):
  inputs = fed.round_inputs(
      splits, np.asarray(clients), seed=0, round_=3, steps=2,
      sampling_rate=0.2, batch_sizes=(24, 12), train_arch=True,
      train_on_all_local_data=False, client_multiple=multiple,
      feedback_size=max(map(len, splits.val)) if feedback else 0)
  if feedback:  # And per-client hyperparameters, as a search sets them.
    ids = inputs.client_ids.astype(np.float32)  # -1 for padding clients.
    inputs = inputs._replace(hparams={
        "learning_rate": 0.02 * (2.0 + ids), "momentum": 0.6 + 0.03 * ids})
  return inputs


@pytest.mark.parametrize("optimizer,dp_backend", [
    ("dpsgd", "vmap"), ("hyfree", "vmap"), ("dpsgd", "ghost")])
def test_four_devices_equal_one_device(optimizer, dp_backend):
  assert len(jax.devices()) == 4
  x, y, splits, params, local = _setup(optimizer, dp_backend)
  clients = [0, 2, 3, 5, 6]  # 5 clients: padded to 8 on 4 devices.
  opt = optax.sgd(1.0)
  state = fed.server_init(params, opt)
  key = jax.random.key(7)
  # DP-SGD also carries hyperparameter feedback and per-client hparams.
  feedback = optimizer == "dpsgd"
  one, gains_one = fed.make_round(local, opt)(
      state, x, y, _inputs(splits, clients, 1, feedback), key, 3)
  mesh = fed.client_mesh(4)
  four, gains_four = fed.make_round(local, opt, mesh)(
      state, x, y, _inputs(splits, clients, 4, feedback), key, 3)
  chex.assert_trees_all_close(one.params, four.params, rtol=1e-5, atol=1e-6)
  if feedback:
    assert gains_one.shape == (5,) and gains_four.shape == (8,)
    chex.assert_trees_all_close(gains_one, gains_four[:5], rtol=1e-4, atol=1e-5)
  # And the round did move the parameters.
  moved = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()),
                       one.params, params)
  assert max(jax.tree.leaves(moved)) > 1e-4


def test_one_stage_round_maps_clients_in_sequence_and_shards_them():
  # Each client samples its own child, so the round maps clients in
  # sequence (lax.map); it must equal the vmapped round (which computes
  # every branch and selects) and its 4-device form.
  x, y, splits, params, _ = _setup()
  space = ss.SearchSpace(channels=4, nodes=1, cells=1)
  strategy = ss.make_strategy("one_stage", space)
  params = dict(params, arch=strategy.init(None))
  local = fed.make_local_update(strategy.apply, fed.ClientConfig(), True,
                                one_stage=True)
  clients = [0, 2, 3, 5, 6]
  opt = optax.sgd(1.0)
  state = fed.server_init(params, opt)
  key = jax.random.key(3)

  def inputs(multiple):
    return fed.round_inputs(
        splits, np.asarray(clients), seed=0, round_=1, steps=2,
        sampling_rate=0.2, batch_sizes=(24, 1), train_arch=False,
        train_on_all_local_data=True, client_multiple=multiple)

  vectorised, _ = fed.make_round(local, opt)(state, x, y, inputs(1), key, 1)
  in_sequence, _ = fed.make_round(local, opt, shared_program=False)(
      state, x, y, inputs(1), key, 1)
  sharded, _ = fed.make_round(local, opt, fed.client_mesh(4),
                              shared_program=False)(
      state, x, y, inputs(4), key, 1)
  chex.assert_trees_all_close(in_sequence.params, vectorised.params,
                              rtol=1e-5, atol=1e-6)
  chex.assert_trees_all_close(sharded.params, vectorised.params,
                              rtol=1e-5, atol=1e-6)
  # The joint step moved the architecture too.
  assert float(jnp.abs(in_sequence.params["arch"]["normal"]
                       - params["arch"]["normal"]).max()) > 1e-4


def test_searched_local_steps_and_rates_equal_rounds_of_that_shape():
  # Clients drawing fewer local steps than the static count take exactly
  # the round they would take with that count: the extra steps change
  # nothing (and release nothing).
  x, y, splits, params, local = _setup()
  opt = optax.sgd(1.0)
  state = fed.server_init(params, opt)
  round_fn = fed.make_round(local, opt)

  def inputs(steps, **per_client):
    return fed.round_inputs(
        splits, np.asarray([1, 4]), seed=0, round_=2, steps=steps,
        sampling_rate=0.3, batch_sizes=(24, 12), train_arch=True,
        train_on_all_local_data=False, **per_client)

  searched = inputs(3, client_steps=np.array([1, 1]),
                    client_rates=np.array([0.3, 0.3]))
  assert searched.active_steps.tolist() == [[True, False, False]] * 2
  one_step, _ = round_fn(state, x, y, inputs(1), jax.random.key(0), 2)
  padded, _ = round_fn(state, x, y, searched, jax.random.key(0), 2)
  chex.assert_trees_all_close(padded.params, one_step.params, rtol=1e-6,
                              atol=1e-7)
  # Per-client rates set each client's expected batch (the DP normaliser).
  rates = inputs(2, client_steps=np.array([2, 1]),
                 client_rates=np.array([0.5, 0.25]))
  np.testing.assert_allclose(
      rates.expected_batch[:, 0],
      [0.5 * len(splits.train[1]), 0.25 * len(splits.train[4])], rtol=1e-6)

  assert rates.train_padding[1, 1].all()


@pytest.mark.parametrize("optimizer", ["dpsgd", "hyfree"])
def test_local_update_jit_equals_eager(optimizer):
  x, y, splits, params, local = _setup(optimizer)
  inputs = _inputs(splits, [1], 1)
  batches = fed.ClientBatches(
      fed.Batches(x[inputs.train_idx[0]], y[inputs.train_idx[0]],
                  jnp.asarray(inputs.train_padding[0])),
      fed.Batches(x[inputs.val_idx[0]], y[inputs.val_idx[0]],
                  jnp.asarray(inputs.val_padding[0])))
  # first_step 6: with probe_every 2, HyFreeDP probes on the first step.
  args = (params, batches, jax.random.key(0), inputs.expected_batch[0], 6)
  # (new params, gain): no feedback batch here, so the gain is None.
  with jax.disable_jit():
    eager = local(*args)
  chex.assert_trees_all_close(jax.jit(local)(*args), eager, rtol=1e-4,
                              atol=1e-5)


def test_round_inputs_are_reproducible_and_poisson():
  _, _, splits, _, _ = _setup()
  a = _inputs(splits, [0, 1], 1)
  b = _inputs(splits, [0, 1], 1)
  chex.assert_trees_all_equal(a, b)
  for slot, k in enumerate([0, 1]):
    real = a.train_idx[slot][~a.train_padding[slot]]
    assert set(real) <= set(splits.train[k])  # Only the client's own rows.
    assert set(a.val_idx[slot][~a.val_padding[slot]]) <= set(splits.val[k])
  np.testing.assert_allclose(a.expected_batch[:, 0],
                             [0.2 * len(splits.train[k]) for k in (0, 1)])


def test_client_schedule_draws_distinct_clients():
  sched = fed.client_schedule(10, 4, 50, seed=0)
  assert sched.shape == (50, 4)
  assert all(len(set(r)) == 4 for r in sched)
  counts = np.bincount(sched.ravel(), minlength=10)
  assert counts.min() > 5  # Every client takes part now and then.


def _reinforce_step(noise_multiplier, steps=1):
  """One client's local update under the reinforce strategy, per key."""
  x, y, splits, params, _ = _setup()
  space = ss.SearchSpace(channels=4, nodes=1, cells=1)
  strategy = ss.make_strategy("reinforce", space)
  params = dict(params, arch=strategy.init(None),
                carried={"reward_baseline": fed.init_reward_baseline()})
  local = fed.make_local_update(
      strategy.apply, fed.ClientConfig(noise_multiplier=noise_multiplier),
      True, active_weights=strategy.active_weights,
      reinforce=strategy.reinforce)
  inputs = fed.round_inputs(
      splits, np.asarray([0]), seed=0, round_=0, steps=steps,
      sampling_rate=0.5, batch_sizes=(24, 32), train_arch=True,
      train_on_all_local_data=False)
  batches = fed.ClientBatches(
      fed.Batches(x[inputs.train_idx[0]], y[inputs.train_idx[0]],
                  inputs.train_padding[0]),
      fed.Batches(x[inputs.val_idx[0]], y[inputs.val_idx[0]],
                  inputs.val_padding[0]))
  expected = jnp.asarray(inputs.expected_batch[0])
  real_val = int((~inputs.val_padding[0]).sum())
  # Keys in sequence: each key's child is its own program (see round.py).
  run = jax.jit(lambda keys: jax.lax.map(
      lambda key: local(params, batches, key, expected, 0)[0], keys))
  return params, run, float(expected[1]), real_val


def test_reinforce_reward_is_an_accuracy_noised_with_sigma():
  keys = jax.random.split(jax.random.key(0), 128)
  # σ = 0: the released reward is a count of correct rows over the
  # expected batch size (the baseline's first entry is 0.01·R̃).
  _, run, expected, real_val = _reinforce_step(0.0)
  rewards = np.asarray(run(keys)["carried"]["reward_baseline"]["sum"]) / 0.01
  counts = rewards * expected
  np.testing.assert_allclose(counts, np.round(counts), atol=1e-3)
  assert 0 <= counts.min() and counts.max() <= real_val
  # σ = 40: the spread is σ / expected batch (the Gaussian mechanism on a
  # sum of {0, 1} values), the accuracy's own spread being ≤ 0.5.
  _, run, expected, _ = _reinforce_step(40.0)
  rewards = np.asarray(run(keys)["carried"]["reward_baseline"]["sum"]) / 0.01
  assert np.std(rewards) == pytest.approx(40.0 / expected, rel=0.2)


def test_reinforce_first_step_follows_no_advantage_then_the_policy_moves():
  params, run, _, _ = _reinforce_step(1.0)
  one = run(jax.random.split(jax.random.key(1), 2))
  # Bias-corrected baseline: step one's advantage is 0, and the entropy
  # bonus has no gradient at the uniform policy.
  chex.assert_trees_all_close(one["arch"], jax.tree.map(
      lambda a: jnp.stack([a, a]), params["arch"]))
  moved = jax.tree.map(lambda new, old: float(jnp.abs(new - old).max()),
                       one["weights"], params["weights"])
  assert max(jax.tree.leaves(moved)) > 0
  _, run, _, _ = _reinforce_step(1.0, steps=3)
  three = run(jax.random.split(jax.random.key(1), 2))
  assert float(jnp.abs(three["arch"]["normal"]).max()) > 1e-3
  np.testing.assert_allclose(three["carried"]["reward_baseline"]["weight"],
                             1 - 0.99**3, rtol=1e-5)
