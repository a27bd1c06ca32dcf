"""Partitioners: no example lost or duplicated, determinism, label skew."""

import numpy as np
import pytest

from fedsearch import data
from fedsearch.errors import ConfigError


def _labels(n=2000, classes=10, seed=0):
  return np.random.default_rng(seed).integers(0, classes, n)


@pytest.mark.parametrize("scheme", ["iid", "dirichlet", "shards"])
@pytest.mark.parametrize("clients", [1, 7, 20])
def test_partition_loses_and_duplicates_nothing(scheme, clients):
  labels = _labels()
  parts = data.partition(labels, scheme, clients, seed=1)
  assert len(parts) == clients
  joined = np.concatenate(parts)
  np.testing.assert_array_equal(np.sort(joined), np.arange(len(labels)))
  assert all(len(p) > 0 for p in parts)


def test_partition_is_deterministic():
  labels = _labels()
  a = data.partition(labels, "dirichlet", 10, seed=3)
  b = data.partition(labels, "dirichlet", 10, seed=3)
  assert all(np.array_equal(x, y) for x, y in zip(a, b))


def test_iid_sizes_are_equal_up_to_one():
  sizes = [len(p) for p in data.partition(_labels(), "iid", 7, seed=0)]
  assert max(sizes) - min(sizes) <= 1


def test_shards_give_few_labels_per_client():
  labels = _labels()
  parts = data.partition(labels, "shards", 10, seed=0, shards_per_client=2)
  # Two label-sorted shards touch at most two labels each.
  assert all(len(np.unique(labels[p])) <= 4 for p in parts)
  assert np.mean([len(np.unique(labels[p])) for p in parts]) <= 3


def _skew(labels, parts):
  """Mean total-variation distance of client label histograms from global."""
  glob = np.bincount(labels, minlength=10) / len(labels)
  return np.mean([0.5 * np.abs(np.bincount(labels[p], minlength=10) / len(p)
                               - glob).sum() for p in parts])


def test_dirichlet_skew_grows_as_alpha_shrinks():
  labels = _labels(5000)
  skews = [_skew(labels, data.partition(labels, "dirichlet", 10, seed=0,
                                        dirichlet_alpha=a))
           for a in (100.0, 1.0, 0.1)]
  assert skews[0] < 0.1 < skews[1] < skews[2]
  assert _skew(labels, data.partition(labels, "iid", 10, seed=0)) < 0.1


def test_bad_partition_names_the_field():
  with pytest.raises(ConfigError, match="federated.partition"):
    data.partition(_labels(), "round_robin", 4, seed=0)


def test_carve_is_disjoint_and_deterministic():
  rest, carved = data.carve(100, 0.2, seed=5)
  assert len(carved) == 20 and not set(rest) & set(carved)
  np.testing.assert_array_equal(carved, data.carve(100, 0.2, seed=5)[1])
