"""The main job built from the library: the federated DP search and its workdir."""

from fedsearch.runner.job import Job
from fedsearch.runner.job import build_job
from fedsearch.runner.phases import Phase
from fedsearch.runner.phases import build_phase
from fedsearch.runner.search import run
from fedsearch.runner.trained import TrainedModel
from fedsearch.runner.trained import load
from fedsearch.runner.workdir import load_weights

__all__ = ["Job", "Phase", "TrainedModel", "build_job", "build_phase",
           "load", "load_weights", "run"]
