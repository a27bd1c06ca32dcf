"""Dataset loaders: scikit-learn digits (embedded) and files from a data directory.

Nothing is downloaded. MNIST and Fashion-MNIST are read from the four standard
gzipped IDX files, CIFAR-10 from the JPEG (quality 75) archive described in
`../shared/data/README.md`; every file is checked against its sha256. Images
come back as uint8 NHWC; `normalize` maps them to float32 with the dataset's
published per-channel statistics (no statistic is computed from private data).
"""

import gzip
import hashlib
import io
import os
import pathlib
from typing import NamedTuple

import numpy as np

from fedsearch.errors import ConfigError, DataFileError

DATASETS = ("digits", "mnist", "fashion_mnist", "cifar10")

_IDX_FILES = {
    "train_x": "train-images-idx3-ubyte.gz",
    "train_y": "train-labels-idx1-ubyte.gz",
    "test_x": "t10k-images-idx3-ubyte.gz",
    "test_y": "t10k-labels-idx1-ubyte.gz",
}
_FOLDERS = {"mnist": "mnist", "fashion_mnist": "fashion-mnist",
            "cifar10": "cifar10-jpeg"}
_CIFAR_FILE = "cifar10_jpeg_q75.npz"

SHA256 = {
    "cifar10-jpeg/cifar10_jpeg_q75.npz":
        "a04e5bfc645b3eb3b4fd8ddbd152438b2f41e8d178c4a1ff27682bbfa52b21a8",
    "fashion-mnist/t10k-images-idx3-ubyte.gz":
        "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",
    "fashion-mnist/t10k-labels-idx1-ubyte.gz":
        "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05",
    "fashion-mnist/train-images-idx3-ubyte.gz":
        "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
    "fashion-mnist/train-labels-idx1-ubyte.gz":
        "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",
    "mnist/t10k-images-idx3-ubyte.gz":
        "cfeddb84311ecf044fc6a5b0f6ee8a24d265d4e83e388400186eb114082f4209",
    "mnist/t10k-labels-idx1-ubyte.gz":
        "e41c74e484045d39b462a7790a4af51301bd9b0b24f0154798d713ec68c45920",
    "mnist/train-images-idx3-ubyte.gz":
        "db8f937d487057fb14a9f0fbe97f0bc8d311ab41b750d41e1ff37c43b9e55e19",
    "mnist/train-labels-idx1-ubyte.gz":
        "51fc562b6747b666fbf6e84ce29d43c3cb5f9c388c664d43b33f02095313405a",
}

# Published per-channel statistics of the [0, 1]-scaled pixels.
_STATS = {
    "digits": ((0.3053,), (0.3760,)),
    "mnist": ((0.1307,), (0.3081,)),
    "fashion_mnist": ((0.2860,), (0.3530,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
}
# The largest pixel value of each dataset's own images (uint8).
PIXEL_MAX = {"digits": 16.0, "mnist": 255.0, "fashion_mnist": 255.0,
             "cifar10": 255.0}
IMAGE_SHAPES = {"digits": (8, 8, 1), "mnist": (28, 28, 1),
                "fashion_mnist": (28, 28, 1), "cifar10": (32, 32, 3)}
_DIGITS_TEST_FRACTION = 0.2
_DIGITS_SPLIT_SEED = 0


class Dataset(NamedTuple):
  """uint8 NHWC images in [0, scale] and int32 labels."""

  name: str
  train_x: np.ndarray
  train_y: np.ndarray
  test_x: np.ndarray
  test_y: np.ndarray
  num_classes: int
  pixel_max: float


def normalize(name: str, images: np.ndarray, pixel_max: float) -> np.ndarray:
  mean, std = (np.asarray(s, np.float32) for s in _STATS[name])
  return ((images.astype(np.float32) / pixel_max) - mean) / std


def load_dataset(name: str, data_dir: str | os.PathLike = "../shared/data",
                 cache_dir: str | os.PathLike | None = None) -> Dataset:
  """Loads a dataset by name; files are looked up under `data_dir`."""
  if name not in DATASETS:
    raise ConfigError(
        f"dataset={name!r} is not allowed; choose one of {list(DATASETS)}")
  if name == "digits":
    return _load_digits()
  if name == "cifar10":
    return _load_cifar10(pathlib.Path(data_dir), cache_dir)
  return _load_idx_dataset(name, pathlib.Path(data_dir))


def _load_digits() -> Dataset:
  # Imported here: scikit-learn is only needed for this dataset.
  from sklearn.datasets import load_digits  # pylint: disable=g-import-not-at-top
  digits = load_digits()
  images = digits.images.astype(np.uint8)[..., None]  # values 0..16
  labels = digits.target.astype(np.int32)
  order = np.random.default_rng(_DIGITS_SPLIT_SEED).permutation(len(labels))
  n_test = int(round(_DIGITS_TEST_FRACTION * len(labels)))
  test, train = order[:n_test], order[n_test:]
  return Dataset("digits", images[train], labels[train], images[test],
                 labels[test], 10, PIXEL_MAX["digits"])


def _checked_path(data_dir: pathlib.Path, relative: str) -> pathlib.Path:
  path = data_dir / relative
  how = (f"copy the file there (see ../shared/data/README.md for its source) or"
         f" point --config.data_dir at a folder holding {relative}")
  if not path.is_file():
    raise DataFileError(f"missing data file {path}: {how}")
  digest = hashlib.sha256(path.read_bytes()).hexdigest()
  if digest != SHA256[relative]:
    raise DataFileError(
        f"data file {path} has sha256 {digest}, expected {SHA256[relative]}:"
        f" the file is corrupt or another version; {how}")
  return path


def _read_idx(path: pathlib.Path) -> np.ndarray:
  with gzip.open(path, "rb") as f:
    raw = f.read()
  ndim = raw[3]
  dims = np.frombuffer(raw, ">u4", count=ndim, offset=4)
  return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _load_idx_dataset(name: str, data_dir: pathlib.Path) -> Dataset:
  arrays = {
      key: _read_idx(_checked_path(data_dir, f"{_FOLDERS[name]}/{fname}"))
      for key, fname in _IDX_FILES.items()
  }
  return Dataset(name, arrays["train_x"][..., None],
                 arrays["train_y"].astype(np.int32),
                 arrays["test_x"][..., None],
                 arrays["test_y"].astype(np.int32), 10, PIXEL_MAX[name])


def default_cache_dir() -> pathlib.Path:
  root = os.environ.get("XDG_CACHE_HOME", pathlib.Path.home() / ".cache")
  return pathlib.Path(root) / "fedsearch"


def _load_cifar10(data_dir: pathlib.Path, cache_dir) -> Dataset:
  relative = f"{_FOLDERS['cifar10']}/{_CIFAR_FILE}"
  cache = pathlib.Path(cache_dir or default_cache_dir())
  cached = cache / f"cifar10_q75_{SHA256[relative][:16]}.npz"
  if not cached.is_file():
    archive = np.load(_checked_path(data_dir, relative))
    decoded = {}
    for split in ("train", "test"):
      decoded[f"{split}_x"] = _decode_jpegs(archive[f"{split}_jpeg"],
                                            archive[f"{split}_offsets"])
      decoded[f"{split}_y"] = archive[f"{split}_labels"].astype(np.int32)
    cache.mkdir(parents=True, exist_ok=True)
    # Written under a temporary name and renamed: a crash never leaves a
    # truncated cache that a later run would trust.
    tmp = cached.with_suffix(".tmp.npz")
    np.savez(tmp, **decoded)
    os.replace(tmp, cached)
  arrays = np.load(cached)
  # The archive is ordered by class: shuffle once, deterministically, so that
  # any later split by position is not a split by class.
  order = np.random.default_rng(0).permutation(len(arrays["train_y"]))
  return Dataset("cifar10", arrays["train_x"][order], arrays["train_y"][order],
                 arrays["test_x"], arrays["test_y"], 10, PIXEL_MAX["cifar10"])


def _decode_jpegs(blob: np.ndarray, offsets: np.ndarray) -> np.ndarray:
  from PIL import Image  # pylint: disable=g-import-not-at-top
  data = blob.tobytes()
  images = np.empty((len(offsets) - 1, 32, 32, 3), np.uint8)
  for i in range(len(images)):
    with Image.open(io.BytesIO(data[offsets[i]:offsets[i + 1]])) as im:
      images[i] = np.asarray(im.convert("RGB"))
  return images


def carve(num_examples: int, fraction: float, seed: int
          ) -> tuple[np.ndarray, np.ndarray]:
  """Deterministic disjoint split of range(num_examples): (rest, carved)."""
  order = np.random.default_rng(seed).permutation(num_examples)
  n = int(round(fraction * num_examples))
  return np.sort(order[n:]), np.sort(order[:n])
