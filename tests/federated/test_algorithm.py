"""The federated algorithm's jitted round (`federated_algorithm(...).apply`):
1 vs 4 devices, clients in sequence vs vectorised, searched local steps and
rates, and rounds that only measure gains."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from fedsearch import federated as fed
from fedsearch import nas
from fedsearch import search_space as ss
from fedsearch.hyperparameters import feedback
from fedsearch.optimizers import dpsgd, hyfree
from fedsearch.privacy import mechanisms
from fedsearch.privacy.auto_lr import AutoLRConfig
from tests import digits

_SPACE = ss.SearchSpace(channels=4, nodes=1, cells=1)


_data = digits.federation


def _supernet_params() -> fed.ModelParams:
  return fed.ModelParams(
      ss.init_supernet(_SPACE, jax.random.key(0), (8, 8, 1)),
      ss.init_arch_params(_SPACE, key=jax.random.key(1)))


def _client_optimizer(name):
  # HyFreeDP probes every 2 global steps: round 3 of 2 steps starts at
  # global step 6, a probe step, so the server refits η after it.
  # significance 0: η refitted on every probe, so the round must move it.
  return (hyfree(AutoLRConfig(probe_every=2, significance=0.0))
          if name == "hyfree" else dpsgd())


@functools.lru_cache(maxsize=None)
def _darts_algorithm(optimizer="dpsgd", dp_backend="vmap", devices=None,
                     client_chunk=0):
  """A DARTS search round on the supernet, FedAvg on the server; with
  `devices`, clients are sharded over that many devices. Cached: tests that
  run the same round reuse its compiled program."""
  strategy = nas.make_strategy("darts", _SPACE)
  mesh = fed.client_mesh(devices) if devices else None
  return fed.federated_algorithm(
      strategy.model, fed.ClientConfig(noise_multiplier=1.0), optax.sgd(1.0),
      client_optimizer=_client_optimizer(optimizer),
      mechanism=mechanisms.local(dp_backend=dp_backend),
      arch_step=strategy.arch_step,
      reads_validation=strategy.traits.reads_validation,
      active_weights=strategy.active_weights, mesh=mesh,
      shared_program=strategy.traits.shared_program,
      client_chunk=client_chunk)


def _inputs(splits, clients, multiple, feedback=False):
  inputs = fed.round_inputs(
      splits, np.asarray(clients), seed=0, round_=3, steps=2,
      sampling_rate=0.2, batch_sizes=(24, 12), validation_batches=True,
      train_on_all_local_data=False, client_multiple=multiple,
      feedback_size=max(map(len, splits.val)) if feedback else 0)
  if feedback:  # And per-client hyperparameters, as a search sets them.
    ids = inputs.client_ids.astype(np.float32)  # -1 for padding clients.
    inputs = inputs._replace(hparams={
        "learning_rate": 0.02 * (2.0 + ids), "momentum": 0.6 + 0.03 * ids})
  return inputs


def _max_change(new, old) -> float:
  moved = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), new, old)
  return max(jax.tree.leaves(moved))


@pytest.mark.parametrize("optimizer,dp_backend", [
    ("dpsgd", "vmap"),
    pytest.param("hyfree", "vmap", marks=pytest.mark.slow),
    pytest.param("dpsgd", "ghost", marks=pytest.mark.slow)])
def test_four_devices_equal_one_device(optimizer, dp_backend):
  assert len(jax.devices()) == 4
  x, y, splits = _data()
  params = _supernet_params()
  clients = [0, 2, 3, 5, 6]  # 5 clients: padded to 8 on 4 devices.
  key = jax.random.key(7)
  # DP-SGD also carries hyperparameter feedback and per-client hparams.
  feedback = optimizer == "dpsgd"
  single = _darts_algorithm(optimizer, dp_backend)
  state = single.init(params)
  one, gains_one = single.apply(state, x, y,
                                _inputs(splits, clients, 1, feedback), key, 3)
  four, gains_four = _darts_algorithm(optimizer, dp_backend, 4).apply(
          state, x, y, _inputs(splits, clients, 4, feedback), key, 3)
  chex.assert_trees_all_close(one.params, four.params, rtol=1e-5, atol=1e-6)
  # The server-carried states too (HyFreeDP: the η refitted on probes
  # averaged over the clients, padding clients weighing nothing).
  chex.assert_trees_all_close(one.client_optimizer, four.client_optimizer,
                              rtol=1e-5, atol=1e-6)
  if feedback:
    assert gains_one.shape == (5,) and gains_four.shape == (8,)
    chex.assert_trees_all_close(gains_one, gains_four[:5], rtol=1e-4,
                                atol=1e-5)
  else:
    assert gains_one is None and gains_four is None
  # And the round did move the parameters ...
  assert _max_change(one.params, params) > 1e-4
  if optimizer == "hyfree":  # ... and η, fitted on this round's probes.
    assert _max_change(one.client_optimizer.learning_rate,
                       state.client_optimizer.learning_rate) > 1e-4
    # The report is consumed by the fit.
    assert float(one.client_optimizer.report.probed) == 0.0


@pytest.mark.slow
def test_one_stage_round_maps_clients_in_sequence_and_shards_them():
  # Each client samples its own child, so the round maps clients in
  # sequence (lax.map); it must equal the vmapped round (which computes
  # every branch and selects) and its 4-device form.
  x, y, splits = _data()
  strategy = nas.make_strategy("one_stage", _SPACE)
  assert not strategy.traits.shared_program
  params = _supernet_params()._replace(arch=strategy.init(None))
  clients = [0, 2, 3, 5, 6]
  key = jax.random.key(3)

  def algorithm(mesh=None, shared_program=True):
    return fed.federated_algorithm(
        strategy.model, fed.ClientConfig(), optax.sgd(1.0),
        arch_step=strategy.arch_step,
        reads_validation=strategy.traits.reads_validation,
        active_weights=strategy.active_weights, mesh=mesh,
        shared_program=shared_program)

  def inputs(multiple):
    return fed.round_inputs(
        splits, np.asarray(clients), seed=0, round_=1, steps=2,
        sampling_rate=0.2, batch_sizes=(24, 1), validation_batches=False,
        train_on_all_local_data=True, client_multiple=multiple)

  vectorised_alg = algorithm()
  state = vectorised_alg.init(params)
  vectorised, _ = vectorised_alg.apply(state, x, y, inputs(1), key, 1)
  in_sequence, _ = algorithm(shared_program=False).apply(
      state, x, y, inputs(1), key, 1)
  sharded, _ = algorithm(fed.client_mesh(4), shared_program=False).apply(
      state, x, y, inputs(4), key, 1)
  chex.assert_trees_all_close(in_sequence.params, vectorised.params,
                              rtol=1e-5, atol=1e-6)
  chex.assert_trees_all_close(sharded.params, vectorised.params,
                              rtol=1e-5, atol=1e-6)
  # The joint step moved the architecture too.
  assert float(jnp.abs(in_sequence.params.arch["normal"]
                       - params.arch["normal"]).max()) > 1e-4


@pytest.mark.slow
def test_searched_local_steps_and_rates_equal_rounds_of_that_shape():
  # Clients drawing fewer local steps than the static count take exactly
  # the round they would take with that count: the extra steps change
  # nothing (and release nothing).
  x, y, splits = _data()
  algorithm = _darts_algorithm()
  state = algorithm.init(_supernet_params())

  def inputs(steps, **per_client):
    return fed.round_inputs(
        splits, np.asarray([1, 4]), seed=0, round_=2, steps=steps,
        sampling_rate=0.3, batch_sizes=(24, 12), validation_batches=True,
        train_on_all_local_data=False, **per_client)

  searched = inputs(3, client_steps=np.array([1, 1]),
                    client_rates=np.array([0.3, 0.3]))
  assert searched.active_steps.tolist() == [[True, False, False]] * 2
  one_step, _ = algorithm.apply(state, x, y, inputs(1), jax.random.key(0), 2)
  padded, _ = algorithm.apply(state, x, y, searched, jax.random.key(0), 2)
  chex.assert_trees_all_close(padded.params, one_step.params, rtol=1e-6,
                              atol=1e-7)
  # Per-client rates set each client's expected batch (the DP normaliser).
  rates = inputs(2, client_steps=np.array([2, 1]),
                 client_rates=np.array([0.5, 0.25]))
  np.testing.assert_allclose(
      rates.expected_batch[:, 0],
      [0.5 * len(splits.train[1]), 0.25 * len(splits.train[4])], rtol=1e-6)
  # Client 4's second step is not taken: nothing is drawn for it.
  assert rates.train_padding[1, 1].all()


@pytest.mark.slow
def test_a_round_without_aggregation_keeps_the_state_and_measures_gains():
  # FEATHERS's exploration rounds: the clients train and report their
  # privatised gains, but the server keeps what it stored.
  x, y, splits = _data()
  algorithm = _darts_algorithm()
  state = algorithm.init(_supernet_params())
  # The round of test_four_devices_equal_one_device (its compiled program).
  inputs = _inputs(splits, [0, 2, 3, 5, 6], 1, feedback=True)
  key = jax.random.key(7)
  kept, gains = algorithm.apply(state, x, y, inputs, key, 3, aggregate=False)
  moved, gains_moved = algorithm.apply(state, x, y, inputs, key, 3)
  chex.assert_trees_all_equal(kept, state)
  # The same clients trained: the same gains as an aggregated round.
  assert gains.shape == (5,)
  chex.assert_trees_all_close(gains, gains_moved, rtol=1e-6)
  assert bool(jnp.all(jnp.isfinite(gains)))
  assert _max_change(moved.params, state.params) > 1e-4


_GENOTYPE = ss.Genotype("dpnas", 1, ((1, 0, "sep_conv_3x3_tanh"),))


@functools.lru_cache(maxsize=None)
def _fixed_algorithm(trust, clients_per_round, noise_multiplier):
  """One local DP-SGD step of a fixed network, FedAvg with server SGD(1)."""
  return fed.federated_algorithm(
      ss.derived_model(_SPACE, _GENOTYPE),
      fed.ClientConfig(noise_multiplier=noise_multiplier, clip_norm=0.5,
                       learning_rate=0.5, momentum=0.9),
      optax.sgd(1.0), mechanism=mechanisms.make_mechanism(
          trust, clients_per_round=clients_per_round))


def _one_step_inputs(splits, clients):
  return fed.round_inputs(
      splits, np.asarray(clients), seed=0, round_=1, steps=1,
      sampling_rate=0.3, batch_sizes=(48, 1), validation_batches=False,
      train_on_all_local_data=True, client_multiple=1)


def _union(inputs):
  """The round's batches as one centralised client: every client's sampled
  rows in one batch, normalised by the sum of their expected sizes."""
  take = lambda a: a.reshape(1, 1, -1)
  return inputs._replace(
      train_idx=take(inputs.train_idx), train_padding=take(inputs.train_padding),
      expected_batch=inputs.expected_batch.sum(0, keepdims=True),
      client_weights=np.ones(1, np.float32), client_ids=np.zeros(1, np.int32))


def _weights():
  return ss.derived_network(_SPACE, _GENOTYPE).init(
      jax.random.key(0), jnp.zeros((1, 8, 8, 1)))["params"]


def test_aggregate_noise_is_centralised_dp_sgd_on_the_union():
  """Full participation, one local step, FedAvg weights: the aggregate
  trust model's round is one DP-SGD step on the union of the clients'
  batches, and its noise is the centralised σ·C / (q·N), not √m times it."""
  x, y, splits = _data()
  clients = list(range(8))
  inputs = _one_step_inputs(splits, clients)
  # The FedAvg weight of a client over its normaliser is the same for all:
  # the shares add up with equal weight.
  ratio = inputs.client_weights / inputs.expected_batch[:, 0]
  np.testing.assert_allclose(ratio, ratio[0], rtol=1e-6)
  params = fed.ModelParams(_weights(), {})

  def run(trust, sigma, inp, m, key=jax.random.key(3)):
    algorithm = _fixed_algorithm(trust, m, sigma)
    return algorithm.apply(algorithm.init(params), x, y, inp, key, 1)[0]


  # Noise off: exactly the centralised step on the union of the batches.
  federated = run("aggregate", 0.0, inputs, len(clients))
  centralised = run("local", 0.0, _union(inputs), 1)
  chex.assert_trees_all_close(federated.params, centralised.params,
                              rtol=1e-4, atol=1e-6)
  assert _max_change(federated.params, params) > 1e-4
  # Noise on: the noise of the average is the centralised one (the model's
  # 238 coordinates over 16 keys: the sample std is within ~1 %).
  sigma, clip, lr = 2.0, 0.5, 0.5
  want = lr * sigma * clip / inputs.expected_batch[:, 0].sum()
  for trust, factor in (("aggregate", 1.0), ("local", len(clients) ** 0.5)):
    noise = np.concatenate([
        np.ravel(a - b)
        for seed in range(16)
        for a, b in zip(
            jax.tree.leaves(run(trust, sigma, inputs, len(clients),
                                jax.random.key(seed)).params),
            jax.tree.leaves(federated.params))])
    assert noise.std() == pytest.approx(factor * want, rel=0.05), trust


def test_update_scales_multiply_each_clients_weight_delta_in_the_mean():
  # `hpo.exploration_step='incumbent'`: each client's noised update times
  # its factor, then the FedAvg mean as before (server SGD(1): the round's
  # step is the mean).
  x, y, splits = _data()
  inputs = _one_step_inputs(splits, [0, 1, 2])
  params = fed.ModelParams(_weights(), {})
  algorithm = _fixed_algorithm("local", 3, 1.0)
  state = algorithm.init(params)

  def round_with(scale):
    if scale is not None:
      inputs_ = inputs._replace(update_scale=np.asarray(scale, np.float32))
    new = algorithm.apply(state, x, y, inputs if scale is None else inputs_,
                          jax.random.key(3), 1)[0]
    return new, jax.tree.map(jnp.subtract, new.params.weights,
                             params.weights)

  plain, plain_step = round_with(None)
  shares = [round_with(np.eye(3)[k])[1] for k in range(3)]
  scaled, scaled_step = round_with([2.0, 0.5, 3.0])
  combine = lambda coefficients: jax.tree.map(
      lambda *s: sum(c * a for c, a in zip(coefficients, s)), *shares)
  chex.assert_trees_all_close(combine([1.0, 1.0, 1.0]), plain_step,
                              rtol=1e-5, atol=1e-6)
  chex.assert_trees_all_close(combine([2.0, 0.5, 3.0]), scaled_step,
                              rtol=1e-5, atol=1e-6)
  assert _max_change(scaled.params, plain.params) > 1e-4
  # The client optimiser's carried state is averaged as it was.
  chex.assert_trees_all_close(scaled.client_optimizer, plain.client_optimizer)


@functools.lru_cache(maxsize=None)
def _aggregate_search(strategy_name, clients_per_round, noise_multiplier,
                      arch_clip_norm=0.1, server_arch_sgd=False):
  """One aggregate-noise search round of `strategy_name`, FedAvg weights."""
  strategy = nas.make_strategy(strategy_name, _SPACE)
  return fed.federated_algorithm(
      strategy.model,
      fed.ClientConfig(noise_multiplier=noise_multiplier, clip_norm=0.5,
                       arch_clip_norm=arch_clip_norm, learning_rate=0.5,
                       arch_learning_rate=0.1),
      optax.sgd(1.0), mechanism=mechanisms.make_mechanism(
          "aggregate", clients_per_round=clients_per_round),
      arch_step=strategy.arch_step,
      reads_validation=strategy.traits.reads_validation,
      active_weights=strategy.active_weights,
      shared_program=strategy.traits.shared_program,
      server_arch_optimizer=optax.sgd(1.0) if server_arch_sgd else None)


def _search_inputs(splits, clients):
  inputs = fed.round_inputs(
      splits, np.asarray(clients), seed=0, round_=1, steps=1,
      sampling_rate=0.3, batch_sizes=(48, 24), validation_batches=True,
      train_on_all_local_data=False, client_multiple=1)
  # The job's normalisers are q·f·(a client's public size), f the split's
  # public fraction, so each is proportional to the FedAvg weight (here the
  # splits' own sizes are used, which round f·n).
  weights = inputs.client_weights
  expected = inputs.expected_batch
  for part in (0, 1):
    expected[:, part] = weights * expected[:, part].sum() / weights.sum()
  return inputs._replace(expected_batch=expected)


def _search_union(inputs):
  """`_union` of the train and the validation batches."""
  take = lambda a: a.reshape(1, 1, -1)
  return _union(inputs)._replace(val_idx=take(inputs.val_idx),
                                 val_padding=take(inputs.val_padding))


def _search_start(strategy_name):
  strategy = nas.make_strategy(strategy_name, _SPACE)
  params = _supernet_params()._replace(arch=strategy.init(jax.random.key(1)))
  # A REINFORCE baseline with history, so the advantage is not zero.
  nas_state = (nas.RewardBaseline(jnp.float32(0.2), jnp.float32(0.5))
               if strategy_name == "reinforce" else strategy.init_state())
  return params, nas_state


@pytest.mark.parametrize("strategy_name", sorted(nas.STRATEGIES))
def test_aggregate_search_round_is_the_centralised_round_on_the_union(
    strategy_name):
  """Under aggregate noise a search round releases only linear functions
  of the round-start state (gradients at the round-start weights and
  architecture, one child for all clients, the architecture's Adam on the
  server): with full participation and FedAvg weights it is the same round
  run by one client holding the union of the batches."""
  x, y, splits = _data()
  clients = list(range(8))
  inputs = _search_inputs(splits, clients)
  params, nas_state = _search_start(strategy_name)
  key = jax.random.key(4)

  def run(inp, m):
    algorithm = _aggregate_search(strategy_name, m, 0.0)
    return algorithm.apply(algorithm.init(params, nas_state), x, y, inp,
                           key, 1)[0]

  federated = run(inputs, len(clients))
  # The same mechanism (with one client a round `aggregate` is `local`, whose
  # clients run Adam themselves); noise is off, so the share is moot.
  centralised = run(_search_union(inputs), len(clients))
  chex.assert_trees_all_close(federated.params, centralised.params,
                              rtol=1e-4, atol=1e-6)
  chex.assert_trees_all_close(federated.nas, centralised.nas, rtol=1e-5)
  assert _max_change(federated.params.weights, params.weights) > 1e-4
  assert _max_change(federated.params.arch, params.arch) > 1e-4
  # The server carries the architecture's Adam moments.
  assert _max_change(federated.opt_state.arch, jax.tree.map(
      jnp.zeros_like, federated.opt_state.arch)) > 0


@pytest.mark.parametrize("strategy_name", ["darts", "one_stage"])
def test_aggregate_architecture_noise_is_the_centralised_noise(
    strategy_name):
  """The released mean architecture gradient carries N(0, (σ·C_a)²) over
  the round's expected batch, not √m times it (server step SGD(1), so the
  architecture moves by the released mean itself)."""
  x, y, splits = _data()
  clients = list(range(8))
  inputs = _search_inputs(splits, clients)
  params, nas_state = _search_start(strategy_name)
  sigma, arch_clip = 2.0, 0.1

  def arch_after(noise, key):
    algorithm = _aggregate_search(strategy_name, len(clients), noise,
                                  server_arch_sgd=True)
    return algorithm.apply(algorithm.init(params, nas_state), x, y, inputs,
                           key, 1)[0].params.arch["normal"]

  # DARTS reads validation batches, one-stage the train batches.
  part = 1 if strategy_name == "darts" else 0
  want = sigma * arch_clip / inputs.expected_batch[:, part].sum()
  # Same keys with and without noise: the same child each round.
  noise = np.concatenate([
      np.ravel(arch_after(sigma, jax.random.key(seed))
               - arch_after(0.0, jax.random.key(seed)))
      for seed in range(24)])
  assert noise.size >= 150
  assert noise.std() == pytest.approx(want, rel=0.15)


def test_aggregate_darts_weight_step_reads_the_round_start_architecture():
  """The weights' release may not depend on the client's share-noised
  architecture step: changing only that step's bound (hence its noise)
  leaves the weights exactly as they were."""
  x, y, splits = _data()
  inputs = _search_inputs(splits, [0, 1, 2, 3])
  params, nas_state = _search_start("darts")
  weights = [
      _aggregate_search("darts", 4, 1.0, arch_clip_norm=bound).apply(
          _aggregate_search("darts", 4, 1.0).init(params, nas_state), x, y,
          inputs, jax.random.key(2), 1)[0].params.weights
      for bound in (0.1, 10.0)]
  chex.assert_trees_all_equal(*weights)


@pytest.mark.parametrize("chunk,devices", [(2, None), (4, 4)])
def test_clients_in_chunks_equal_all_at_once(chunk, devices):
  """A scan over chunks of clients (memory bounded by the chunk) gives the
  round of all clients at once: the same state and the same gains, an
  all-padding chunk weighing nothing."""
  x, y, splits = _data()
  params = _supernet_params()
  clients = [0, 2, 3, 5, 6]  # Padded to 8: the last chunk of 2 is padding.
  key = jax.random.key(5)
  inputs = _inputs(splits, clients, 8, feedback=True)
  whole = _darts_algorithm()
  state = whole.init(params)
  one, gains_one = whole.apply(state, x, y, inputs, key, 3)
  chunked, gains_chunked = _darts_algorithm(
      devices=devices, client_chunk=chunk).apply(state, x, y, inputs, key, 3)
  chex.assert_trees_all_close(one.params, chunked.params, rtol=1e-5,
                              atol=1e-6)
  chex.assert_trees_all_close(gains_one, gains_chunked, rtol=1e-4, atol=1e-5)
  assert _max_change(chunked.params, params) > 1e-4


@functools.lru_cache(maxsize=None)
def _client_level_darts(client_chunk=0, sigma=1.0):
  """A DARTS search round under client-level DP (plain local steps)."""
  strategy = nas.make_strategy("darts", _SPACE)
  return fed.federated_algorithm(
      strategy.model, fed.ClientConfig(noise_multiplier=sigma),
      optax.sgd(1.0),
      mechanism=mechanisms.make_mechanism(
          "aggregate", "client", clients_per_round=4, clip_norm=0.5,
          arch_clip_norm=0.05),
      arch_step=strategy.arch_step,
      reads_validation=strategy.traits.reads_validation,
      client_chunk=client_chunk)


def test_client_level_round_clips_sums_and_noises_once_whatever_the_chunks():
  x, y, splits = _data()
  params = _supernet_params()
  inputs = _inputs(splits, [0, 2, 3, 5, 6], 8)
  key = jax.random.key(5)
  state = _client_level_darts().init(params)
  whole = _client_level_darts().apply(state, x, y, inputs, key, 3)[0]
  chunked = _client_level_darts(client_chunk=2).apply(state, x, y, inputs,
                                                      key, 3)[0]
  # One release of the round's sum: chunks change memory, not the result.
  chex.assert_trees_all_close(whole.params, chunked.params, rtol=1e-5,
                              atol=1e-6)
  # Noise off, each client's scaled delta has norm ≤ 1, so the server's
  # step (÷ the 4 expected clients) is at most 5/4 in the scaled norm.
  quiet = _client_level_darts(sigma=0.0).apply(state, x, y, inputs, key, 3)[0]
  scaled = jnp.sqrt(
      sum(jnp.sum((a - b) ** 2) for a, b in zip(
          jax.tree.leaves(quiet.params.weights),
          jax.tree.leaves(params.weights))) / 0.5**2
      + sum(jnp.sum((a - b) ** 2) for a, b in zip(
          jax.tree.leaves(quiet.params.arch),
          jax.tree.leaves(params.arch))) / 0.05**2)
  assert 0.0 < float(scaled) <= 5 / 4 + 1e-5
  assert _max_change(whole.params, quiet.params) > 1e-3  # The noise.


@functools.lru_cache(maxsize=None)
def _released_model_feedback_algorithm(feedback_noise_multiplier,
                                       client_chunk=0, measure="loss"):
  return fed.federated_algorithm(
      ss.derived_model(_SPACE, _GENOTYPE),
      fed.ClientConfig(noise_multiplier=1.0, clip_norm=0.5, learning_rate=0.5,
                       feedback_clip=0.5,
                       feedback_noise_multiplier=feedback_noise_multiplier,
                       feedback_measure=measure),
      optax.sgd(1.0), feedback_after_round=True, client_chunk=client_chunk)


@pytest.mark.parametrize("client_chunk,measure", [
    (0, "loss"), (0, "error"), (0, "soft_error"),
    pytest.param(3, "loss", marks=pytest.mark.slow)])
def test_released_model_gain_is_the_round_start_to_released_loss_decrease(
    client_chunk, measure):
  x, y, splits = _data()
  algorithm = _released_model_feedback_algorithm(0.0, client_chunk, measure)
  state = algorithm.init(fed.ModelParams(_weights(), {}))
  clients = [0, 2, 3]
  inputs = fed.round_inputs(
      splits, np.asarray(clients), seed=0, round_=1, steps=2,
      sampling_rate=0.3, batch_sizes=(48, 1), validation_batches=False,
      train_on_all_local_data=False, client_multiple=1,
      feedback_size=max(map(len, splits.val)))
  new, gains = algorithm.apply(state, x, y, inputs, jax.random.key(3), 1)
  losses = mechanisms.example_losses(
      ss.derived_model(_SPACE, _GENOTYPE),
      feedback.measure(measure, mechanisms.softmax_cross_entropy))
  for k, client in enumerate(clients):
    val = np.asarray(splits.val[client])
    decrease = (losses(state.params.weights, {}, x[val], y[val], None)
                - losses(new.params.weights, {}, x[val], y[val], None))
    # Bounded per example, summed, over the public split size (σ_f = 0).
    expected = np.clip(decrease, -0.5, 0.5).sum() / len(val)
    np.testing.assert_allclose(gains[k], expected, rtol=1e-4, atol=1e-6)
  assert _max_change(new.params, state.params) > 1e-4
  # Nothing released, nothing to measure.
  _, kept_gains = algorithm.apply(state, x, y, inputs, jax.random.key(3), 1,
                                  aggregate=False)
  np.testing.assert_allclose(kept_gains, 0.0, atol=1e-7)
  if measure == "error":  # The measure is read: not the loss's gains.
    _, loss_gains = _released_model_feedback_algorithm(0.0).apply(
        state, x, y, inputs, jax.random.key(3), 1)
    assert not np.allclose(gains, loss_gains, atol=1e-4)
  # Feedback noise of std σ_f·clip / |split| on each client's gain.
  noisy = _released_model_feedback_algorithm(50.0, client_chunk, measure)
  _, noisy_gains = noisy.apply(state, x, y, inputs, jax.random.key(3), 1)
  scale = 50.0 * 0.5 / np.asarray([len(splits.val[c]) for c in clients])
  z = (np.asarray(noisy_gains) - np.asarray(gains)) / scale
  assert 0.05 < np.max(np.abs(z)) < 5.0
