"""Datasets (embedded digits, files from a data directory) and federated partitions."""

from fedsearch.data.datasets import DATASETS
from fedsearch.data.datasets import IMAGE_SHAPES
from fedsearch.data.datasets import PIXEL_MAX
from fedsearch.data.datasets import Dataset
from fedsearch.data.datasets import carve
from fedsearch.data.datasets import default_cache_dir
from fedsearch.data.datasets import load_dataset
from fedsearch.data.datasets import normalize
from fedsearch.data.features import FEATURES
from fedsearch.data.features import cached_transform
from fedsearch.data.features import transform
from fedsearch.data.features import transform_flops
from fedsearch.data.partition import PARTITIONS
from fedsearch.data.partition import partition

__all__ = ["DATASETS", "Dataset", "FEATURES", "IMAGE_SHAPES", "PARTITIONS", "PIXEL_MAX",
           "cached_transform", "carve", "default_cache_dir", "load_dataset",
           "normalize", "partition", "transform", "transform_flops"]
