"""Hyperparameter search: spaces and pools, strategies (FEATHERS, FedEx, random), private feedback."""

from fedsearch.hyperparameters import feathers
from fedsearch.hyperparameters import fedex
from fedsearch.hyperparameters import random_search
from fedsearch.hyperparameters.base import Strategy
from fedsearch.hyperparameters.exploration import EXPLORATION_STEPS
from fedsearch.hyperparameters.exploration import update_scales
from fedsearch.hyperparameters.space import Hyperparameter
from fedsearch.hyperparameters.space import configured_pool
from fedsearch.hyperparameters.space import draw_pool
from fedsearch.hyperparameters.space import grid_pool
from fedsearch.hyperparameters.space import make_pool
from fedsearch.hyperparameters.space import pool_labels
from fedsearch.hyperparameters.space import pool_size
from fedsearch.hyperparameters.space import space_from_dict
from fedsearch.hyperparameters.strategy import STRATEGIES
from fedsearch.hyperparameters.strategy import make_strategy

__all__ = ["EXPLORATION_STEPS", "Hyperparameter", "STRATEGIES", "Strategy",
           "configured_pool", "draw_pool", "feathers", "fedex", "grid_pool",
           "make_pool", "make_strategy", "pool_labels", "pool_size",
           "random_search", "space_from_dict", "update_scales"]
