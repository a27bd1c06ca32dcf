"""fedsearch: federated architecture + hyperparameter search under differential privacy."""

from fedsearch import data
from fedsearch import federated
from fedsearch import hyperparameters
from fedsearch import models
from fedsearch import nas
from fedsearch import optimizers
from fedsearch import privacy
from fedsearch import runner
from fedsearch import search_space
from fedsearch.errors import ConfigError
from fedsearch.errors import DataFileError
from fedsearch.privacy import make_private
from fedsearch.runner import load

__all__ = ["ConfigError", "DataFileError", "data", "federated",
           "hyperparameters", "load", "make_private", "models", "nas", "optimizers",
           "privacy",
           "runner", "search_space"]
