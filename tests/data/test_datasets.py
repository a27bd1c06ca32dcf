"""Dataset loaders: shapes, label counts, caching, checksums, named errors."""

import gzip
import pathlib
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


# tests/data/this_file -> the checkout -> its parent, which holds shared/.
SHARED_DATA = pathlib.Path(__file__).resolve().parents[3] / "shared" / "data"
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
