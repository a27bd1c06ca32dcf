"""Client sizes released once with Gaussian noise, and what is computed
from them: estimates per split, public bounds, the round's weights and
normalisers, and the release's place in the accountant."""

import dp_accounting
import numpy as np
import pytest
from scipy import stats

from fedsearch import data
from fedsearch import federated as fed
from fedsearch.privacy import client_sizes


def test_the_release_is_the_size_plus_gaussian_noise_of_std_sigma():
  true = np.full(20000, 500)
  sizes = client_sizes.release(true, 10.0, np.random.default_rng(0), 1e-9,
                               0.2)
  noise = sizes.released - true
  assert np.std(noise) == pytest.approx(10.0, rel=0.03)
  assert abs(np.mean(noise)) < 0.3
  # The public bound holds but with probability Φ(−z) = tail.
  z = client_sizes.upper_bound_z(1e-9)
  assert stats.norm.sf(z) == pytest.approx(1e-9, rel=1e-6)
  np.testing.assert_allclose(sizes.bounds, sizes.released + z * 10.0)
  assert np.all(sizes.bounds >= true)


def test_estimates_and_bounds_per_split_on_hand_numbers():
  sizes = client_sizes.PublicSizes(released=np.array([101.0, -3.0]),
                                   bounds=np.array([151.0, 40.0]),
                                   val_fraction=0.2)
  np.testing.assert_allclose(sizes.estimate(), [101.0, 1.0])
  np.testing.assert_allclose(sizes.estimate("train"), [80.8, 0.8])
  np.testing.assert_allclose(sizes.estimate("val"), [20.2, 0.2])
  # Each normaliser is its split's fraction of the FedAvg weight.
  np.testing.assert_allclose(sizes.estimate("val") / sizes.estimate(), 0.2)
  np.testing.assert_array_equal(sizes.bound(), [151, 40])
  # A split of round(0.2·n) rows holds at most 0.2·n + 1/2 of them.
  np.testing.assert_array_equal(sizes.bound("val"), [31, 9])
  np.testing.assert_array_equal(sizes.bound("train"), [122, 33])
  for n in range(1, 152):
    val = fed.split_clients([np.arange(n)], 0.2, seed=0).val[0]
    assert len(val) <= np.ceil(0.2 * 151 + 0.5)
    assert n - len(val) <= np.ceil(0.8 * 151 + 0.5)


def test_round_inputs_take_weights_and_normalisers_from_the_release():
  ds = data.load_dataset("digits")
  splits = fed.split_clients(data.partition(ds.train_y, "iid", 3, seed=0),
                             0.25, seed=0)
  sizes = client_sizes.PublicSizes(np.array([100.0, 200.0, 400.0]),
                                   np.array([700.0, 700.0, 700.0]), 0.25)
  inputs = fed.round_inputs(
      splits, np.asarray([0, 2]), seed=0, round_=0, steps=1,
      sampling_rate=0.1, batch_sizes=(100, 40), validation_batches=True,
      train_on_all_local_data=False, feedback_size=200, sizes=sizes)
  np.testing.assert_allclose(inputs.client_weights, [100.0, 400.0])
  np.testing.assert_allclose(inputs.expected_batch, [
      [0.1 * 75.0, 0.1 * 25.0, 25.0], [0.1 * 300.0, 0.1 * 100.0, 100.0]])
  # Without a release the true sizes are used (sizes declared public).
  public = fed.round_inputs(
      splits, np.asarray([0]), seed=0, round_=0, steps=1, sampling_rate=0.1,
      batch_sizes=(100, 40), validation_batches=False,
      train_on_all_local_data=True)
  assert public.client_weights[0] == splits.sizes()[0]
  assert public.expected_batch[0, 0] == pytest.approx(0.1 * splits.sizes()[0])


def test_feedback_rows_beyond_a_failed_bound_are_truncated_not_fatal():
  splits = fed.ClientSplits((np.arange(10),), (np.arange(10, 30),))
  inputs = fed.round_inputs(
      splits, np.asarray([0]), seed=0, round_=0, steps=1, sampling_rate=0.5,
      batch_sizes=(10, 1), validation_batches=False,
      train_on_all_local_data=False, feedback_size=8)
  np.testing.assert_array_equal(inputs.feedback_idx[0], np.arange(10, 18))
  assert not inputs.feedback_padding.any()
