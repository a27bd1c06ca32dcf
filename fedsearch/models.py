"""Fixed (not searched) reference models built from the probed layers.

Tramer & Boneh (ICLR 2021, "Differentially private learning needs better
features"), end-to-end tanh CNNs, the hand-set baselines a private search
has to beat (`../shared/BENCHMARKS.md`):

  tanh_cnn_small  MNIST / Fashion-MNIST: conv 16 8x8 stride 2 (padding 2) →
                  max-pool 2x2 stride 1 → conv 32 4x4 stride 2 → max-pool
                  2x2 stride 1 → dense 32 → classifier; ~26 k parameters on
                  28x28x1.
  tanh_cnn        CIFAR-10: six 3x3 convolutions (32, 32, 64, 64, 128, 128)
                  with a 2x2 max-pool after every second, dense 128, the
                  classifier; ~0.55 M parameters on 32x32x3.

Both use tanh throughout (their paper's choice for DP-SGD) and only the
layers of `search_space.layers`, so both DP backends (vmap, ghost) apply.
`MODELS` is the registry `config.model` names.
"""

from collections.abc import Callable

import flax.linen as nn
import jax.numpy as jnp

from fedsearch.errors import ConfigError
from fedsearch.privacy.mechanisms import Model
from fedsearch.search_space import layers
from fedsearch.search_space.network import with_norm_probes


class TanhCNNSmall(nn.Module):
  num_classes: int = 10

  @nn.compact
  def __call__(self, x):
    x = jnp.tanh(layers.Conv(16, 8, use_bias=True, stride=2, padding=2,
                             name="conv0")(x))
    x = layers.max_pool_2x2_stride_1(x)
    x = jnp.tanh(layers.Conv(32, 4, use_bias=True, stride=2, padding=0,
                             name="conv1")(x))
    x = layers.max_pool_2x2_stride_1(x)
    x = x.reshape(x.shape[:-3] + (-1,))
    x = jnp.tanh(layers.Dense(32, name="hidden")(x))
    return layers.Dense(self.num_classes, name="classifier")(x)


class TanhCNN(nn.Module):
  num_classes: int = 10
  channels: tuple[int, ...] = (32, 32, 64, 64, 128, 128)
  hidden: int = 128

  @nn.compact
  def __call__(self, x):
    for i, c in enumerate(self.channels):
      x = jnp.tanh(layers.Conv(c, 3, use_bias=True, name=f"conv{i}")(x))
      if i % 2 == 1:
        x = layers.max_pool_2x2(x)
    x = x.reshape(x.shape[:-3] + (-1,))
    x = jnp.tanh(layers.Dense(self.hidden, name="hidden")(x))
    return layers.Dense(self.num_classes, name="classifier")(x)


# `config.model`: name -> flax module class (built with num_classes).
MODELS: dict[str, Callable[..., nn.Module]] = {
    "tanh_cnn_small": TanhCNNSmall,
    "tanh_cnn": TanhCNN,
}


def make_module(name: str, num_classes: int = 10) -> nn.Module:
  if name not in MODELS:
    raise ConfigError(f"model={name!r} is not allowed; choose one of"
                      f" {sorted(MODELS)} (or '' to search an architecture)")
  return MODELS[name](num_classes=num_classes)


def as_model(module: nn.Module) -> Model:
  """A fixed flax module as a probe-able `Model` (arch and key unused)."""
  return with_norm_probes(module, lambda arch, x, key: (x,))


def tanh_cnn_model(num_classes: int = 10) -> Model:
  """The CIFAR-10 TanhCNN as a probe-able `Model`."""
  return as_model(TanhCNN(num_classes))
