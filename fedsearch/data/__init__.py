"""Datasets (embedded digits, files from a data directory) and federated partitions."""

from fedsearch.data.datasets import DATASETS
from fedsearch.data.datasets import PIXEL_MAX
from fedsearch.data.datasets import Dataset
from fedsearch.data.datasets import carve
from fedsearch.data.datasets import load_dataset
from fedsearch.data.datasets import normalize
from fedsearch.data.partition import PARTITIONS
from fedsearch.data.partition import partition

__all__ = ["DATASETS", "Dataset", "PARTITIONS", "PIXEL_MAX", "carve", "load_dataset",
           "normalize", "partition"]
