"""Search spaces: candidate ops, the cell supernet and derived models, genotypes."""

from fedsearch.search_space.genotype import Genotype
from fedsearch.search_space.genotype import check_genotype
from fedsearch.search_space.genotype import derive
from fedsearch.search_space.genotype import init_arch_params
from fedsearch.search_space.network import CellNetwork
from fedsearch.search_space.network import derived_model
from fedsearch.search_space.network import derived_network
from fedsearch.search_space.network import extract_weights
from fedsearch.search_space.network import init_supernet
from fedsearch.search_space.network import mixing_weights
from fedsearch.search_space.network import supernet_model
from fedsearch.search_space.network import with_norm_probes
from fedsearch.search_space.ops import OP_SETS
from fedsearch.search_space.space import SearchSpace

__all__ = [
    "CellNetwork", "Genotype", "OP_SETS", "SearchSpace", "check_genotype",
    "derive", "derived_model", "derived_network", "extract_weights",
    "init_arch_params", "init_supernet", "mixing_weights", "supernet_model",
    "with_norm_probes",
]
