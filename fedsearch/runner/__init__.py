"""Jobs built from the library: the federated DP search and its workdir."""

from fedsearch.runner.plan import PrivacyPlan
from fedsearch.runner.search import run
from fedsearch.runner.workdir import load_weights

__all__ = ["PrivacyPlan", "load_weights", "run"]
