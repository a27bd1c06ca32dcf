"""The population-scale preset: 1,000 clients, client-level DP, valid plan."""

import numpy as np
import pytest

from experiments.configs import federated
from fedsearch.runner import job as job_lib


@pytest.mark.parametrize("clipping,quantile", [("adaptive", 0.5),
                                               ("fixed", 0.0)])
def test_preset_is_client_level_dp_fedavg_over_a_thousand_clients(
    clipping, quantile):
  config = federated.get_config(f"mnist,{clipping}")
  f, p = config.federated, config.privacy
  assert (f.num_clients, f.clients_per_round) == (1000, 100)
  assert (p.unit, p.trust, p.adaptive_clip_quantile) == (
      "client", "aggregate", quantile)
  # Chunks bound the memory of 100+ clients per round.
  assert 0 < f.client_chunk < f.clients_per_round
  plan = job_lib.privacy_plan(config)
  assert plan.client_sampling_rate == pytest.approx(0.1)
  assert plan.counts(f.train_rounds) == {"client_updates": f.train_rounds}


def test_example_level_presets_differ_only_in_who_adds_the_noise():
  plans = {}
  for trust in federated.TRUSTS:
    config = federated.get_config(f"fashion_mnist,{trust}")
    f, p = config.federated, config.privacy
    assert (f.num_clients, f.clients_per_round) == (100, 10)
    assert (p.unit, p.trust, f.local_steps) == ("example", trust, 1)
    plans[trust] = job_lib.privacy_plan(config)
  local, aggregate = plans["local"], plans["aggregate"]
  # A balanced schedule: every client takes part in exactly 20 rounds,
  # and the plan charges the most exposed client 20 weight steps.
  taken = np.bincount(aggregate.schedule.ravel(), minlength=100)
  assert taken.min() == taken.max() == 20
  assert aggregate.counts(200)["weight_steps_train"] == 20
  np.testing.assert_array_equal(local.schedule, aggregate.schedule)
  assert local.noise_multipliers(0.0) == aggregate.noise_multipliers(0.0)


def test_client_level_search_presets_sweep_clients_and_have_a_ceiling():
  sigmas = {}
  for setting in federated.SEARCHES:
    config = federated.get_config(f"mnist,{setting}")
    f, p = config.federated, config.privacy
    assert (config.nas.strategy, p.unit, p.trust) == ("one_stage", "client",
                                                      "aggregate")
    assert f.num_clients == 1000 and f.search_rounds > 0
    plan = job_lib.privacy_plan(config)
    sigmas[f.clients_per_round, plan.private] = plan.noise_multipliers(
        0.0).gradient
  assert sorted(sigmas) == [(50, True), (100, False), (100, True),
                            (200, True)]
  assert sigmas[100, False] == 0.0
  # More clients a round: more noise per round, the same ε.
  assert sigmas[50, True] < sigmas[100, True] < sigmas[200, True]


@pytest.mark.parametrize("arg", ["cifar10", "mnist,clipped", "mnist,a,b"])
def test_bad_preset_argument_is_named(arg):
  with pytest.raises(ValueError, match="DATASET"):
    federated.get_config(arg)


def _noise_per_progress(config) -> float:
  """σ/(B·√T): the noise a run leaves per unit of progress (the preset's
  docstring, "Matched centralised"), from the plan alone."""
  plan = job_lib.privacy_plan(config)
  f = config.federated
  population = 60_000 * (1 - config.monitor_fraction)  # MNIST's train split
  examples_per_step = (population * plan.sampling_rate
                       * f.clients_per_round / f.num_clients)
  steps = f.train_rounds * plan.local_steps
  return plan.noise_multipliers(0.0).gradient / (
      examples_per_step * np.sqrt(steps))


def test_matched_centralised_carries_the_aggregate_federations_noise():
  aggregate = federated.get_config("mnist,aggregate")
  matched = federated.get_config(f"mnist,{federated.MATCHED}")
  assert matched.federated.num_clients == 1
  assert matched.privacy.epsilon == federated.MATCHED_EPSILON < 3.0
  assert _noise_per_progress(matched) == pytest.approx(
      _noise_per_progress(aggregate), rel=0.01)
  # More participations at q = 1: more steps, the same noise per progress.
  for setting, (trust, participations) in federated.LONG_SCHEDULES.items():
    longer = federated.get_config(f"mnist,{setting}")
    assert longer.privacy.trust == trust
    assert longer.federated.train_rounds == (
        participations // federated.EXAMPLE_PARTICIPATIONS
        * aggregate.federated.train_rounds)
    assert _noise_per_progress(longer) == pytest.approx(
        _noise_per_progress(aggregate), rel=0.01)
  # At ε = 3 the same recipe carries ~2.9 times less.
  matched.privacy.epsilon = 3.0
  assert _noise_per_progress(aggregate) / _noise_per_progress(
      matched) == pytest.approx(2.85, rel=0.05)
