"""Client optimisers behind one protocol (`ClientOptimizer`), by name."""

from fedsearch.errors import ConfigError
from fedsearch.optimizers.base import ClientOptimizer
from fedsearch.optimizers.base import StepProbe
from fedsearch.optimizers.dpsgd import dpsgd
from fedsearch.optimizers.hyfree import HyFreeState
from fedsearch.optimizers.hyfree import hyfree
from fedsearch.privacy import auto_lr

# name -> builder(auto_lr_config, noised_sum) of `client.optimizer`.
OPTIMIZERS = {
    "dpsgd": lambda lr_config, noised_sum: dpsgd(),
    "hyfree": hyfree,
}


def make_client_optimizer(name: str,
                          lr_config: auto_lr.AutoLRConfig | None = None,
                          noised_sum=None) -> ClientOptimizer:
  if name not in OPTIMIZERS:
    raise ConfigError(f"client.optimizer={name!r} is not allowed; choose one"
                      f" of {list(OPTIMIZERS)}")
  return OPTIMIZERS[name](lr_config or auto_lr.AutoLRConfig(), noised_sum)


__all__ = ["ClientOptimizer", "HyFreeState", "OPTIMIZERS", "StepProbe",
           "dpsgd", "hyfree", "make_client_optimizer"]
