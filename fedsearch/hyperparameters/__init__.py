"""Hyperparameter search: spaces and pools, FEATHERS's bandit, FedEx, private feedback."""

from fedsearch.hyperparameters import feathers
from fedsearch.hyperparameters import fedex
from fedsearch.hyperparameters import feedback
from fedsearch.hyperparameters import strategy
from fedsearch.hyperparameters.space import Hyperparameter
from fedsearch.hyperparameters.space import draw_pool
from fedsearch.hyperparameters.space import space_from_dict

__all__ = ["Hyperparameter", "draw_pool", "feathers",
           "fedex", "feedback", "space_from_dict", "strategy"]
