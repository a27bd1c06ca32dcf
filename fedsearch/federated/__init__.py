"""Federation: client local updates, server aggregation, vectorised rounds."""

from fedsearch.federated.client import Batches
from fedsearch.federated.client import ClientBatches
from fedsearch.federated.client import ClientConfig
from fedsearch.federated.client import OPTIMIZERS
from fedsearch.federated.client import TUNABLE
from fedsearch.federated.client import check_optimizer
from fedsearch.federated.client import init_reward_baseline
from fedsearch.federated.client import make_local_update
from fedsearch.federated.client import weight_grad_sum
from fedsearch.federated.round import RoundInputs
from fedsearch.federated.round import client_mesh
from fedsearch.federated.round import make_round
from fedsearch.federated.sampling import ROUND_HYPERPARAMETERS
from fedsearch.federated.sampling import ClientSplits
from fedsearch.federated.sampling import client_schedule
from fedsearch.federated.sampling import round_inputs
from fedsearch.federated.sampling import split_clients
from fedsearch.federated.server import ServerState
from fedsearch.federated.server import server_init
from fedsearch.federated.server import server_update
from fedsearch.federated.server import weighted_average

__all__ = [
    "Batches", "ClientBatches", "ClientConfig", "ClientSplits", "OPTIMIZERS",
    "ROUND_HYPERPARAMETERS", "RoundInputs", "TUNABLE",
    "ServerState", "check_optimizer", "client_mesh", "client_schedule",
    "init_reward_baseline", "make_local_update",
    "make_round", "round_inputs", "server_init", "server_update",
    "split_clients", "weight_grad_sum", "weighted_average",
]
