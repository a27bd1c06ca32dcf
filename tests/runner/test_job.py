"""Building the job: every bad configuration value is one ConfigError naming
its field, before any round; the plan charges what the config implies."""

import re

import jax.numpy as jnp
import numpy as np
import pytest

from experiments.configs import default
from fedsearch import nas
from fedsearch.errors import ConfigError, DataFileError
from fedsearch.privacy import client_sizes, mechanisms
from fedsearch.privacy.plan import NoiseMultipliers
from fedsearch.runner import job as job_lib
from fedsearch.runner import loop


def small_config(**overrides):
  config = default.get_config()
  config.space.channels = 4
  config.space.nodes = 1
  config.federated.search_rounds = 2
  config.federated.train_rounds = 2
  config.federated.local_steps = 2
  # Two local steps: per-client noise (tests of aggregate trust set it).
  config.privacy.trust = "local"
  # Reproducible draws, so that separate workdirs can be compared.
  config.privacy.randomness = "seeded"
  for key, value in overrides.items():
    node = config
    *path, leaf = key.split(".")
    for part in path:
      node = node[part]
    node[leaf] = value
  return config


@pytest.mark.parametrize("field,value,named", [
    ("federated.partition", "round_robin", "federated.partition"),
    ("space.op_set", "resnet", "space.op_set"),
    ("dataset", "imagenet", "dataset="),
    ("privacy.accountant", "moments", "privacy.accountant"),
    ("privacy.trust", "server", "privacy.trust"),
    ("privacy.unit", "household", "privacy.unit"),
    ("federated.server_momentum", 1.5, "federated.server_momentum"),
    ("federated.server_optimizer", "lamb", "federated.server_optimizer"),
    ("hpo.strategy", "grid", "hpo.strategy"),
    ("hpo.reward", "model", "hpo.reward"),
    ("client.optimizer", "adamw", "client.optimizer"),
    ("privacy.dp_backend", "opacus", "privacy.dp_backend"),
    ("nas.strategy", "enas", "nas.strategy"),
    ("monitor_fraction", 1.0, "monitor_fraction"),
    ("federated.val_fraction", 0.0, "federated.val_fraction"),
    ("federated.search_rounds", -1, "federated.search_rounds"),
    ("federated.clients_per_round", 11, "federated.clients_per_round"),
    ("federated.sampling_rate", 0.0, "federated.sampling_rate"),
    ("privacy.epsilon", 0.0, "privacy.epsilon"),
    ("privacy.truncation_delta_fraction", 1.0,
     "privacy.truncation_delta_fraction"),
    ("client.arch_learning_rate", -1.0, "client.arch_learning_rate"),
    ("nas.cost_metric", "energy", "nas.cost_metric"),
    ("nas.cost_penalty", -0.1, "nas.cost_penalty"),
    ("federated.num_devices", 99, "federated.num_devices"),
    ("nas.controller_warmup_rounds", 1, "nas.controller_warmup_rounds"),
    ("privacy.randomness", "urandom", "privacy.randomness"),
    ("privacy.size_noise_multiplier", 0.0, "privacy.size_noise_multiplier"),
    ("model", "vgg", "model='vgg'"),
    ("privacy.clip_norm", -1.0, "privacy.clip_norm"),
    ("privacy.arch_clip_norm", 0.0, "privacy.arch_clip_norm"),
    ("client.learning_rate", float("inf"), "client.learning_rate"),
    ("client.momentum", 1.0, "client.momentum"),
    ("federated.local_steps", 0, "federated.local_steps"),
    ("hpo.feedback_clip", float("nan"), "hpo.feedback_clip"),
    ("checkpoint_every", 0, "checkpoint_every"),
    ("model", "tanh_cnn", "federated.search_rounds=0"),
    ("features", "wavelets", "features='wavelets'"),
    ("features", "scatter", "space.stem='conv3x3'"),
    ("space.stem", "scatter", "features='pixels'"),
])
def test_bad_values_are_named(field, value, named):
  with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
    job_lib.build_job(small_config(**{field: value}))


def test_warmup_longer_than_the_search_is_refused():
  config = small_config(**{"nas.strategy": "reinforce",
                           "nas.controller_warmup_rounds": 3})
  with pytest.raises(ConfigError, match="controller_warmup_rounds"):
    job_lib.build_job(config)


def test_a_noise_multiplier_that_overspends_is_refused():
  with pytest.raises(ConfigError, match="refusing to start"):
    job_lib.build_job(small_config(**{"privacy.noise_multiplier": 0.3}))


@pytest.mark.parametrize("overrides,named", [
    ({"nas.genotype": "/nonexistent", "federated.search_rounds": 0},
     "nas.genotype='/nonexistent'"),
    ({"nas.genotype": "/nonexistent"}, "federated.search_rounds=0"),
    ({"nas.cost_penalty": 0.1, "nas.cost_table": "/nonexistent/costs.json"},
     "nas.cost_table"),
])
def test_unreadable_files_named_by_fields_are_named(overrides, named):
  with pytest.raises(ConfigError, match=named):
    job_lib.build_job(small_config(**overrides))


def test_missing_data_file_is_named(tmp_path):
  config = small_config(**{"dataset": "fashion_mnist",
                           "data_dir": str(tmp_path)})
  with pytest.raises(DataFileError,
                     match="fashion-mnist/train-images-idx3-ubyte.gz"):
    job_lib.build_job(config)


@pytest.mark.parametrize("space,named", [
    ({"local_steps": {"scale": "uniform", "low": 1, "high": 3}},
     "hpo.space.local_steps must draw integers"),
    # Heavy-ball diverges at momentum 1 (and its step lr/(1 − m) is
    # undefined there).
    ({"momentum": {"scale": "categorical", "choices": [0.5, 1.0]}},
     "hpo.space.momentum must lie in [0, 1)")])
def test_searched_values_outside_their_domain_are_named(space, named):
  # Pool size 0: every combination of the choices, so the bad one is in.
  config = small_config(**{"hpo.strategy": "random", "hpo.pool_size": (
      0 if all(h["scale"] == "categorical" for h in space.values()) else 4)})
  config.hpo.space = space
  with pytest.raises(ConfigError, match=re.escape(named)):
    job_lib.build_job(config)


def test_plan_charges_the_pools_largest_steps_and_rate():
  config = small_config(**{"hpo.strategy": "random", "hpo.pool_size": 4})
  config.hpo.space = {
      "local_steps": {"scale": "categorical", "choices": [1, 3]},
      "sampling_rate": {"scale": "uniform", "low": 0.4, "high": 0.8},
  }
  job = job_lib.build_job(config)
  assert job.plan.local_steps == int(max(job.hpo.pool["local_steps"]))
  assert job.plan.sampling_rate == max(job.hpo.pool["sampling_rate"])
  assert job.plan.feedback


@pytest.mark.parametrize("strategy", sorted(nas.STRATEGIES))
def test_each_strategy_gets_its_plan_and_learning_rate(strategy):
  job = job_lib.build_job(small_config(**{"nas.strategy": strategy}))
  traits = nas.traits(strategy)
  assert job.nas.name == strategy and job.nas.traits == traits
  assert job.plan.arch_steps == (not traits.one_stage)
  assert job.client_config.arch_learning_rate == traits.arch_learning_rate
  counts = job.plan.counts(2)
  assert counts["arch_steps_search"] == (0 if traits.one_stage else 4)
  assert job.sigmas.gradient > 0
  assert job.plan.spent(job.sigmas, 4) == pytest.approx(3.0, rel=1e-3)


@pytest.mark.parametrize("field,value,named", [
    ("federated.local_steps", 2, "federated.local_steps=1"),
    ("hpo.strategy", "feathers", "hpo.strategy='none'"),
])
def test_aggregate_trust_refuses_releases_of_a_clients_own_update(
    field, value, named):
  config = default.get_config()
  config.privacy.trust = "aggregate"
  config.federated.search_rounds = 0
  config.model = "tanh_cnn_small"
  section, name = field.split(".")
  config[section][name] = value
  with pytest.raises(ConfigError, match=named) as error:
    job_lib.privacy_plan(config)
  assert "\n" not in str(error.value)


@pytest.mark.parametrize("strategy", sorted(nas.STRATEGIES))
def test_aggregate_trust_accepts_one_step_searches(strategy):
  # Their releases are computed from the round-start state and the
  # architecture's optimiser runs on the server (federated.algorithm).
  job = job_lib.build_job(small_config(**{
      "privacy.trust": "aggregate", "federated.local_steps": 1,
      "nas.strategy": strategy}))
  assert job.mechanism.shares_noise
  assert job.plan.spent(job.sigmas, 4) == pytest.approx(3.0, rel=1e-3)


def test_aggregate_trust_runs_hyfree_with_probes_along_the_released_update():
  job = job_lib.build_job(small_config(**{
      "privacy.trust": "aggregate", "federated.local_steps": 1,
      "client.optimizer": "hyfree"}))
  assert job.mechanism.shares_noise
  state = job.client_optimizer.init({"w": jnp.zeros(3)})
  assert state.direction is not None
  assert job.plan.spent(job.sigmas, 4) == pytest.approx(3.0, rel=1e-3)


@pytest.mark.parametrize("initial,cap,want", [
    (0.0, 0.0, 0.7),  # DP-SGD's rate: client.learning_rate ...
    (0.0, 1e-4, None),  # ... after the round-noise cap;
    (0.05, 0.0, 0.05),  # or the one given.
])
def test_hyfree_starts_where_dpsgd_would(initial, cap, want):
  job = job_lib.build_job(small_config(**{
      "client.optimizer": "hyfree", "client.learning_rate": 0.7,
      "client.max_round_noise": cap,
      "hyfree.initial_learning_rate": initial}))
  eta = float(job.client_optimizer.init().learning_rate.learning_rate)
  want = job.client_config.learning_rate if want is None else want
  assert eta == pytest.approx(want, rel=1e-6)
  if cap:
    assert want < 0.7  # The cap binds.


def test_aggregate_trust_accepts_one_step_training_and_is_recorded():
  config = default.get_config()
  config.privacy.trust, config.model = "aggregate", "tanh_cnn_small"
  config.federated.search_rounds = 0
  job_lib.privacy_plan(config)
  assert job_lib.build_mechanism(config).name == "aggregate"


@pytest.mark.parametrize("field,value,named", [
    ("privacy.trust", "local", "client-level local DP"),
    ("hpo.strategy", "feathers", "hpo.strategy='none'"),
    ("client.optimizer", "hyfree", "client.optimizer='dpsgd'"),
    ("privacy.stage_share", 0.5, "privacy.stage_share=1"),
])
def test_client_level_refuses_what_it_cannot_bound(field, value, named):
  config = small_config(**{"privacy.unit": "client",
                           "privacy.trust": "aggregate", field: value})
  with pytest.raises(ConfigError, match=named) as error:
    job_lib.privacy_plan(config)
  assert "\n" not in str(error.value)


def test_client_level_reinforce_needs_two_local_steps():
  # Its baseline restarts each round: one step gives no advantage.
  config = small_config(**{"privacy.unit": "client",
                           "privacy.trust": "aggregate",
                           "nas.strategy": "reinforce",
                           "federated.local_steps": 1})
  with pytest.raises(ConfigError, match="federated.local_steps >= 2"):
    job_lib.privacy_plan(config)
  config.federated.local_steps = 2
  job_lib.privacy_plan(config)


def test_aggregate_with_one_client_a_round_is_local():
  one = mechanisms.make_mechanism("aggregate", clients_per_round=1)
  assert one.name == "aggregate" and not one.shares_noise
  job_lib.privacy_plan(small_config(**{  # Two local steps: not refused.
      "privacy.trust": "aggregate", "federated.num_clients": 1,
      "federated.clients_per_round": 1}))


def test_client_level_job_samples_clients_secretly_and_releases_no_sizes():
  config = small_config(**{
      "privacy.unit": "client", "privacy.trust": "aggregate",
      "federated.num_clients": 100, "federated.clients_per_round": 10,
      "federated.partition": "iid", "privacy.randomness": "secret"})
  plan = job_lib.privacy_plan(config)
  assert plan.unit == "client" and plan.client_sampling_rate == 0.1
  assert plan.schedule.shape == (4, 0)  # Nobody is drawn before the run.
  first, second = (job_lib.build_job(config) for _ in range(2))
  slots = first.plan.client_slots()
  assert first.plan.schedule.shape == (4, slots)
  # Drawn from each run's own secret: two runs of one config differ.
  assert not np.array_equal(first.plan.schedule, second.plan.schedule)
  assert first.mechanism.unit == "client"
  # No size release: the accountant holds the client stream alone.
  assert [s.name for s in first.plan.own_streams(first.sigmas, 4)] == [
      "client_updates"]
  assert first.plan.spent(first.sigmas, 4) == pytest.approx(3.0, rel=1e-3)


def test_adaptive_clipping_refuses_a_count_noise_that_leaves_nothing():
  config = small_config(**{
      "privacy.unit": "client", "privacy.trust": "aggregate",
      "federated.num_clients": 100, "federated.clients_per_round": 10,
      "federated.partition": "iid", "privacy.epsilon": 0.5,
      "privacy.adaptive_clip_quantile": 0.5})
  with pytest.raises(ConfigError, match="federated.clients_per_round"):
    job_lib.build_job(config)


@pytest.mark.parametrize("trust,per_unit_rate", [("local", 0.1),
                                                 ("aggregate", 0.05)])
def test_round_noise_rule_on_hand_numbers(trust, per_unit_rate):
  config = small_config(**{
      "privacy.trust": trust, "privacy.clip_norm": 1.0,
      "federated.sampling_rate": 0.5, "federated.local_steps": 4,
      "federated.clients_per_round": 4, "federated.server_momentum": 0.5,
      "federated.val_fraction": 0.2, "client.max_round_noise": 0.06})
  sizes = client_sizes.PublicSizes(np.full(10, 100.0), np.full(10, 110.0),
                                   0.2)
  sigmas = NoiseMultipliers(2.0)
  # σC/b = 2/(0.5·80) per step, × √4 steps, ÷ √4 (local) or 4 (aggregate)
  # clients, × 1/(1 − 0.5) through the server momentum.
  assert job_lib.round_noise_per_unit_rate(config, sigmas, sizes) == (
      pytest.approx(per_unit_rate))
  assert job_lib.client_learning_rate(config, sigmas, sizes) == (
      pytest.approx(min(1.0, 0.06 / per_unit_rate)))
  config.client.max_round_noise = 0.0  # Off: the rate as given.
  assert job_lib.client_learning_rate(config, sigmas, sizes) == 1.0


def test_incumbent_steps_need_heavy_ball():
  # HyFreeDP sets its own η: lr / (1 − momentum) is not its step.
  config = small_config(**{"hpo.strategy": "fedex", "hpo.pool_size": 4,
                           "hpo.exploration_step": "incumbent",
                           "client.optimizer": "hyfree"})
  with pytest.raises(ConfigError, match=re.escape(
      "set client.optimizer='dpsgd' (got 'hyfree')")):
    job_lib.build_job(config)


def test_exploring_clients_are_rescaled_to_the_default_then_the_best():
  config = small_config(**{"hpo.strategy": "fedex", "hpo.pool_size": 0,
                           "hpo.exploration_step": "incumbent",
                           "client.max_round_noise": 0.0,
                           "client.learning_rate": 2.0,
                           "client.momentum": 0.9})
  config.hpo.space = {
      "learning_rate": {"scale": "categorical", "choices": [1.0, 4.0]},
      "momentum": {"scale": "categorical", "choices": [0.5, 0.9]}}
  job = job_lib.build_job(config)
  pool = job.hpo.pool
  ids = np.arange(len(pool["learning_rate"]))
  steps = pool["learning_rate"] / (1 - pool["momentum"])
  state = job.hpo.strategy.init(len(ids))
  progress = loop.Progress(None, state, None, None, [])
  # No feedback yet: the configured default's step, 2 / (1 − 0.9) = 20.
  np.testing.assert_allclose(loop.incumbent_scales(job, progress, ids),
                             20.0 / steps, rtol=1e-6)
  # After feedback, the strategy's best.
  state = job.hpo.strategy.update(state, ids, np.where(ids == 1, 1.0, -1.0),
                                  np.ones(len(ids)), True)
  progress = loop.Progress(None, state, None, None, [{"hp_mean_gain": 0.0}])
  assert int(job.hpo.strategy.best(state)) == 1
  np.testing.assert_allclose(loop.incumbent_scales(job, progress, ids),
                             steps[1] / steps, rtol=1e-6)
