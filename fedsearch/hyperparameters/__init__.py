"""Hyperparameter search: spaces and pools, strategies (FEATHERS, FedEx, random), private feedback."""

from fedsearch.hyperparameters import feathers
from fedsearch.hyperparameters import fedex
from fedsearch.hyperparameters import random_search
from fedsearch.hyperparameters.base import Strategy
from fedsearch.hyperparameters.space import Hyperparameter
from fedsearch.hyperparameters.space import draw_pool
from fedsearch.hyperparameters.space import space_from_dict
from fedsearch.hyperparameters.strategy import STRATEGIES
from fedsearch.hyperparameters.strategy import make_strategy

__all__ = ["Hyperparameter", "STRATEGIES", "Strategy", "draw_pool",
           "feathers", "fedex", "make_strategy", "random_search",
           "space_from_dict"]
