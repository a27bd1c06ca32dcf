"""The supernet and the standalone models derived from it, as one Flax module.

`CellNetwork(space)` is the supernet: every edge computes the mixture
sum_o w[e, o] * op_o(x) with mixing weights passed in at call time, or, given
`edge_choices` (one op index per edge, a sampled child), only w[e, k] *
op_k(x) for the chosen k, through `lax.switch`: the other ops are not
computed at all, as long as the choice is not batched (it is one per client
step, shared by that step's examples).
`CellNetwork(space, genotype)` is the derived model: each kept edge runs its
one op. Both name an op's parameters `cell{c}/edge{e}_{op}/...`, so the derived
model's weights are a sub-tree of the supernet's and transfer by path.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import traverse_util

from fedsearch.privacy import ghost
from fedsearch.privacy.mechanisms import Model
from fedsearch.search_space import layers, ops
from fedsearch.search_space.genotype import Genotype, check_genotype
from fedsearch.search_space.space import SCATTER_GROUP_SIZE, SearchSpace


class Cell(nn.Module):
  space: SearchSpace
  channels: int
  genotype: Genotype | None = None

  @nn.compact
  def __call__(self, x, edge_weights=None, edge_choices=None):
    space = self.space
    factories = ops.OP_SETS[space.op_set]
    if space.preprocess:
      use_bias, norm = layers.norm_or_bias(space.groups)
      x = layers.Conv(self.channels, use_bias=use_bias, name="preprocess")(
          ops.ACTIVATIONS[space.activation](x))
      x = norm(x, "preprocess_norm")
    states = [x]
    for to in range(1, space.nodes + 1):
      node = jnp.zeros_like(states[0])
      for src in range(to):
        e = space.edge_index(to, src)
        if self.genotype is not None:
          chosen = self.genotype.op_on(to, src)
          candidates = [] if chosen is None else [chosen]
        elif edge_choices is not None:
          node = node + edge_weights[e, edge_choices[e]] * self._sampled_edge(
              states[src], e, edge_choices[e], factories)
          continue
        else:
          candidates = space.op_names
        for op in candidates:
          if op == "none":  # Contributes exactly zero: skip the work.
            continue
          out = factories[op](self.channels, space.groups, space.activation,
                              f"edge{e}_{op}")(states[src])
          if self.genotype is None:
            out = edge_weights[e, space.op_names.index(op)] * out
          node = node + out
      states.append(node)
    return jnp.concatenate(states[1:], axis=-1)

  def _sampled_edge(self, x, e, choice, factories):
    # The ops are created here, outside the switch, so their parameters keep
    # the paths they have in the mixture (`edge{e}_{op}`).
    space = self.space
    modules = [factories[op](self.channels, space.groups, space.activation,
                             f"edge{e}_{op}") for op in space.op_names]
    branches = [
        (lambda mdl, x: jnp.zeros_like(x)) if op == "none"
        else (lambda mdl, x, module=module: module(x))
        for op, module in zip(space.op_names, modules)
    ]
    return nn.switch(choice, branches, self, x)


class CellNetwork(nn.Module):
  """Supernet (genotype=None) or derived model (genotype given).

  Call as `apply({'params': w}, x, edge_weights)` for the supernet, where
  `edge_weights` has shape (num_edges, num_ops), as `apply({'params': w}, x,
  edge_weights, edge_choices)` for the sampled child (int (num_edges,)), or
  `apply({'params': w}, x)` for a derived model. Inputs are NHWC float images.
  """

  space: SearchSpace
  genotype: Genotype | None = None

  @nn.compact
  def __call__(self, x, edge_weights=None, edge_choices=None):
    space = self.space
    if self.genotype is None and edge_weights is None:
      raise ValueError("the supernet needs edge_weights")
    if self.genotype is not None:
      check_genotype(self.genotype, space)
    act = ops.ACTIVATIONS[space.activation]
    use_bias, norm = layers.norm_or_bias(space.groups)
    stem_channels = space.stem_multiplier * space.channels
    if space.stem == "conv3x3":
      x = layers.Conv(stem_channels, 3, use_bias=use_bias, name="stem")(x)
      x = norm(x, "stem_norm")
    elif space.stem == "scatter":
      # Unscaled per-example normalisation: no parameter, no privacy cost.
      x = nn.GroupNorm(num_groups=x.shape[-1] // SCATTER_GROUP_SIZE,
                       use_bias=False, use_scale=False)(x)
      x = layers.Conv(stem_channels, 3, use_bias=use_bias, stride=2,
                      padding=1, name="stem")(x)
      x = norm(x, "stem_norm")
    else:
      x = layers.Conv(stem_channels, 8, use_bias=use_bias, stride=2,
                      padding=2, name="stem")(x)
      x = layers.max_pool_2x2_stride_1(norm(x, "stem_norm"))
    for c in range(space.cells):
      x = Cell(space, space.cell_channels(c), self.genotype, name=f"cell{c}")(
          x, edge_weights, edge_choices)
      if not space.reduces_after(c):
        continue
      if space.reduction == "max_pool":
        if min(x.shape[-3:-1]) >= 2:
          x = layers.max_pool_2x2(x)
      elif space.reduction == "conv3x3":
        x = layers.Conv(space.cell_channels(c + 1), 3, use_bias=use_bias,
                        name=f"reduce{c}")(act(x))
        x = norm(x, f"reduce{c}_norm")
      else:
        x = layers.Conv(space.cell_channels(c + 1), 4, use_bias=use_bias,
                        stride=2, padding=0, name=f"reduce{c}")(act(x))
        x = norm(x, f"reduce{c}_norm")
        x = layers.max_pool_2x2_stride_1(x)
    x = act(x)
    if space.head == "gap":
      x = jnp.mean(x, axis=(-3, -2))
    else:
      x = x.reshape(x.shape[:-3] + (-1,))
    if space.hidden:
      x = act(layers.Dense(space.hidden, name="hidden")(x))
    return layers.Dense(space.num_classes, name="classifier")(x)


def mixing_weights(arch_params: dict[str, jax.Array]) -> jax.Array:
  """DARTS continuous relaxation: softmax over each edge's op logits."""
  return jax.nn.softmax(arch_params["normal"], axis=-1)


def with_norm_probes(module: nn.Module, call_args) -> Model:
  """`module` as a `Model`: `apply(weights, arch, x, key=None)` and its
  twin `probed(weights, probes, arch, x, key=None) -> (logits, probes)`,
  the same model with the ghost DP backend's norm probes (created as zeros
  when `probes` is None; see `privacy.ghost`).

  `call_args(arch, x, key)` gives the module's call arguments.
  """
  def apply(weights, arch_params, x, key=None):
    return module.apply({"params": weights}, *call_args(arch_params, x, key))

  def probed(weights, probes, arch_params, x, key=None):
    args = call_args(arch_params, x, key)
    if probes is None:
      logits, variables = module.apply({"params": weights}, *args,
                                       mutable=[ghost.PROBES])
      return logits, variables[ghost.PROBES]
    return module.apply({"params": weights, ghost.PROBES: probes},
                        *args), probes

  return Model(apply, probed)


def supernet_model(space: SearchSpace) -> Model:
  """The DARTS mixture, `apply(weights, arch_params, x, key=None)`.

  Every model function takes a key (the sampled strategies draw their child
  from it); the mixture and derived models ignore it.
  """
  return with_norm_probes(
      CellNetwork(space), lambda arch, x, key: (x, mixing_weights(arch)))


def init_supernet(space: SearchSpace, key: jax.Array, input_shape) -> dict:
  """Supernet weights for inputs of shape (H, W, C)."""
  num_ops = len(space.op_names)
  x = jnp.zeros((1, *input_shape))
  w = jnp.full((space.num_edges, num_ops), 1.0 / num_ops)
  return CellNetwork(space).init(key, x, w)["params"]


def derived_network(space: SearchSpace, genotype: Genotype) -> CellNetwork:
  return CellNetwork(space, genotype)


def derived_model(space: SearchSpace, genotype: Genotype) -> Model:
  """The derived network as a `Model` (architecture and key unused)."""
  return with_norm_probes(derived_network(space, genotype),
                          lambda arch, x, key: (x,))


def extract_weights(supernet_weights: dict, space: SearchSpace,
                    genotype: Genotype, input_shape) -> dict:
  """The derived model's weights, taken by path from the supernet's."""
  model = derived_network(space, genotype)
  shapes = jax.eval_shape(
      lambda: model.init(jax.random.key(0), jnp.zeros((1, *input_shape))))
  wanted = traverse_util.flatten_dict(shapes["params"])
  have = traverse_util.flatten_dict(supernet_weights)
  return traverse_util.unflatten_dict({path: have[path] for path in wanted})
