"""Jobs built from the library: the federated DP search and its workdir."""

from fedsearch.runner.plan import PrivacyPlan
from fedsearch.runner.search import run
from fedsearch.runner.workdir import load_final_weights

__all__ = ["PrivacyPlan", "load_final_weights", "run"]
