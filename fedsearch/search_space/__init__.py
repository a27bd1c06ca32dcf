"""Search spaces: candidate ops, the cell supernet, genotypes."""

from fedsearch.search_space.genotype import Genotype
from fedsearch.search_space.genotype import derive
from fedsearch.search_space.genotype import genotype_arch_params
from fedsearch.search_space.genotype import init_arch_params
from fedsearch.search_space.network import CellNetwork
from fedsearch.search_space.network import derived_apply
from fedsearch.search_space.network import derived_model
from fedsearch.search_space.network import extract_weights
from fedsearch.search_space.network import init_supernet
from fedsearch.search_space.network import mixing_weights
from fedsearch.search_space.network import supernet_apply
from fedsearch.search_space.ops import OP_SETS
from fedsearch.search_space.space import SearchSpace
from fedsearch.search_space.strategies import SearchStrategy
from fedsearch.search_space.strategies import make_strategy

__all__ = [
    "CellNetwork", "Genotype", "OP_SETS", "SearchSpace", "SearchStrategy",
    "derive", "derived_apply", "derived_model", "make_strategy", "extract_weights", "genotype_arch_params",
    "init_arch_params", "init_supernet", "mixing_weights", "supernet_apply",
]
