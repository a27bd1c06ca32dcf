"""Federation: the (init, apply) algorithm, client updates, server aggregation, sampling."""

from fedsearch.federated.algorithm import FederatedAlgorithm
from fedsearch.federated.algorithm import federated_algorithm
from fedsearch.federated.client import Batches
from fedsearch.federated.client import ClientBatches
from fedsearch.federated.client import ClientConfig
from fedsearch.federated.client import ClientState
from fedsearch.federated.client import ModelParams
from fedsearch.federated.client import TUNABLE
from fedsearch.federated.client import make_local_update
from fedsearch.federated.round import RoundInputs
from fedsearch.federated.round import client_mesh
from fedsearch.federated.sampling import ROUND_HYPERPARAMETERS
from fedsearch.federated.sampling import ClientSplits
from fedsearch.federated.sampling import client_schedule
from fedsearch.federated.sampling import poisson_client_schedule
from fedsearch.federated.sampling import round_inputs
from fedsearch.federated.sampling import split_clients
from fedsearch.federated.server import ServerState

__all__ = [
    "Batches", "ClientBatches", "ClientConfig", "ClientSplits", "ClientState",
    "FederatedAlgorithm", "ModelParams", "ROUND_HYPERPARAMETERS",
    "RoundInputs", "ServerState", "TUNABLE", "client_mesh", "client_schedule",
    "federated_algorithm", "make_local_update", "round_inputs",
    "split_clients",
]
