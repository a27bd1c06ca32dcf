"""DP-SGD's client optimiser: flat clipping and SGD with momentum at a fixed rate."""

import optax

from fedsearch.optimizers.base import ClientOptimizer


def dpsgd() -> ClientOptimizer:
  def transform(h):
    return optax.chain(optax.add_decayed_weights(h["weight_decay"]),
                       optax.sgd(h["learning_rate"], h["momentum"]))

  return ClientOptimizer(
      name="dpsgd", clipping="flat", init=lambda weights=None: None,
      transform=transform,
      update=lambda updates, state, probe: (updates, state),
      server_update=lambda state, applied=None: state,
      metrics=lambda state: {})
