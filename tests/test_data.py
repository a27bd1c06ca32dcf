"""Loaders and partitioners: shapes, errors, no example lost or duplicated."""

import gzip
import pathlib
import shutil
import time

import numpy as np
import pytest

from fedsearch import data
from fedsearch.errors import ConfigError, DataFileError


def test_digits_is_embedded_and_split():
  ds = data.load_dataset("digits")
  assert ds.train_x.shape[1:] == (8, 8, 1) and ds.train_x.dtype == np.uint8
  assert len(ds.train_x) + len(ds.test_x) == 1797
  assert len(ds.test_x) == 359
  assert set(np.unique(ds.train_y)) == set(range(10))
  x = data.normalize("digits", ds.train_x, ds.pixel_max)
  assert x.dtype == np.float32 and abs(float(x.mean())) < 0.1


SHARED_DATA = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"
needs_shared_data = pytest.mark.skipif(
    not SHARED_DATA.is_dir(),
    reason=f"real datasets not found at {SHARED_DATA} (see README: Data)")


@needs_shared_data
@pytest.mark.parametrize("name,train_counts,test_counts", [
    # Per-class counts of the published files.
    ("mnist", [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949],
     [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]),
    ("fashion_mnist", [6000] * 10, [1000] * 10),
])
def test_idx_datasets_load_with_their_shapes_and_label_counts(
    name, train_counts, test_counts):
  ds = data.load_dataset(name, SHARED_DATA)
  assert ds.train_x.shape == (60000, 28, 28, 1)
  assert ds.test_x.shape == (10000, 28, 28, 1)
  assert ds.train_x.dtype == np.uint8 and ds.train_y.dtype == np.int32
  assert np.bincount(ds.train_y).tolist() == train_counts
  assert np.bincount(ds.test_y).tolist() == test_counts
  # The published statistics standardise the training images.
  x = data.normalize(name, ds.train_x[:10000], ds.pixel_max)
  assert abs(float(x.mean())) < 0.02 and abs(float(x.std()) - 1) < 0.05


@needs_shared_data
def test_cifar10_jpeg_decodes_once_then_loads_from_its_cache(tmp_path):
  start = time.perf_counter()
  ds = data.load_dataset("cifar10", SHARED_DATA, cache_dir=tmp_path)
  decode_s = time.perf_counter() - start
  assert ds.train_x.shape == (50000, 32, 32, 3)
  assert ds.test_x.shape == (10000, 32, 32, 3) and ds.train_x.dtype == np.uint8
  assert np.bincount(ds.train_y).tolist() == [5000] * 10
  assert np.bincount(ds.test_y).tolist() == [1000] * 10
  # Shuffled once (the archive is sorted by class), deterministically.
  assert len(np.unique(ds.train_y[:100])) == 10
  assert list(tmp_path.glob("cifar10_q75_*.npz"))
  start = time.perf_counter()
  again = data.load_dataset("cifar10", SHARED_DATA, cache_dir=tmp_path)
  assert time.perf_counter() - start < decode_s
  np.testing.assert_array_equal(again.train_x, ds.train_x)
  np.testing.assert_array_equal(again.train_y, ds.train_y)
  x = data.normalize("cifar10", ds.train_x[:5000], ds.pixel_max)
  np.testing.assert_allclose(x.mean(axis=(0, 1, 2)), 0, atol=0.05)


def test_missing_file_names_the_file(tmp_path):
  with pytest.raises(DataFileError, match="train-images-idx3-ubyte.gz"):
    data.load_dataset("mnist", tmp_path)


def test_corrupt_file_fails_its_checksum(tmp_path):
  folder = tmp_path / "mnist"
  folder.mkdir()
  for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
               "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
    with gzip.open(folder / name, "wb") as f:
      f.write(b"\x00\x00\x08\x01\x00\x00\x00\x00")
  with pytest.raises(DataFileError, match="sha256"):
    data.load_dataset("mnist", tmp_path)


def test_unknown_dataset_lists_the_choices():
  with pytest.raises(ConfigError, match="digits"):
    data.load_dataset("imagenet")


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
