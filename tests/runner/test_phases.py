"""Phases: which batches each phase draws and what its algorithm trains."""

import jax
import jax.numpy as jnp
import pytest

from fedsearch import nas
from fedsearch import search_space as ss
from fedsearch.runner import build_job, build_phase, states
from fedsearch.runner import job as job_lib
from tests.runner.test_job import small_config


@pytest.mark.parametrize("strategy", sorted(nas.STRATEGIES))
def test_search_phase_follows_the_strategys_traits(strategy):
  job = build_job(small_config(**{"nas.strategy": strategy}))
  phase = build_phase(job)
  traits = nas.traits(strategy)
  assert phase.name == "search" and phase.searching
  assert phase.validation_batches == traits.reads_validation
  # Without validation batches the validation split is free for weights.
  assert phase.all_local_data == (not traits.reads_validation)
  # Validation batches are padded to the largest validation split (+1).
  largest_val = max(map(len, job.federation.splits.val))
  assert (phase.batch_sizes[1] > largest_val) == traits.reads_validation
  warmup = build_phase(job, searching=False)
  assert warmup.name == "warmup" and not warmup.searching
  assert not warmup.validation_batches and warmup.all_local_data


def test_hyperparameter_feedback_keeps_the_validation_split_out_of_training():
  job = build_job(small_config(**{"nas.strategy": "one_stage",
                                  "hpo.strategy": "random",
                                  "hpo.pool_size": 2}))
  assert not build_phase(job).all_local_data


def test_training_phase_runs_the_derived_model_on_all_local_data():
  job = build_job(small_config())
  genotype = ss.Genotype("dpnas", 1, ((1, 0, "skip_connect"),))
  phase = build_phase(job, genotype)
  assert phase.name == "train" and not phase.searching
  assert phase.all_local_data and not phase.validation_batches
  sizes = job.federation.splits.sizes()
  # Full-batch steps (q = 1): the padded batch holds the largest client + 1.
  assert phase.batch_sizes[0] >= max(sizes) + 1


def test_a_fixed_network_is_trained_in_place_of_a_genotype():
  job = build_job(small_config(**{"model": "tanh_cnn",
                                  "federated.search_rounds": 0}))
  assert job.retrained == job_lib.FixedNetwork("tanh_cnn")
  phase = build_phase(job, job.retrained)
  assert phase.name == "train" and not phase.searching
  assert phase.all_local_data and phase.batch_sizes[1] == 1
  weights = states.retrain_state(job, phase, job.retrained).params.weights
  assert set(weights) == {"conv0", "conv1", "conv2", "conv3", "conv4",
                          "conv5", "hidden", "classifier"}
  x = jnp.zeros((2, *job.federation.input_shape))
  assert jax.eval_shape(phase.predict, weights, {}, x).shape == (2, 10)
