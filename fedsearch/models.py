"""Fixed (not searched) reference models built from the probed layers.

`TanhCNN` is the end-to-end CNN of Tramer & Boneh (2021) as measured in
`../shared/BENCHMARKS.md`: six 3x3 tanh convolutions (32, 32, 64, 64, 128,
128 channels) with a 2x2 max-pool after every second one, then dense 128 and
the classifier; ~0.55 M parameters on 32x32x3 inputs. It is the reference
for the DP-step benchmarks and the hand-set DP-SGD baseline.
"""

import flax.linen as nn
import jax.numpy as jnp

from fedsearch.search_space import layers
from fedsearch.privacy.mechanisms import Model
from fedsearch.search_space.network import with_norm_probes


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


def tanh_cnn_model(num_classes: int = 10) -> Model:
  """The TanhCNN as a probe-able `Model` (arch and key unused)."""
  return with_norm_probes(TanhCNN(num_classes), lambda arch, x, key: (x,))
