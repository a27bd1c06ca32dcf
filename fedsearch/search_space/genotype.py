"""Genotypes: the discrete architecture a search ends with."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np

from fedsearch.errors import ConfigError
from fedsearch.search_space.space import SearchSpace


@dataclasses.dataclass(frozen=True)
class Genotype:
  """One op per kept edge of the (shared) cell.

  Attributes:
    op_set: the op set the op names come from.
    nodes: computed nodes per cell.
    edges: sorted (to_node, from_node, op_name) triples; edges not listed are
      dropped (equivalent to the `none` op).
  """

  op_set: str
  nodes: int
  edges: tuple[tuple[int, int, str], ...]

  def op_on(self, to_node: int, from_node: int) -> str | None:
    for to, src, op in self.edges:
      if (to, src) == (to_node, from_node):
        return op
    return None

  def to_json(self) -> str:
    return json.dumps(
        {"op_set": self.op_set, "nodes": self.nodes,
         "edges": [list(e) for e in self.edges]},
        indent=1,
    )

  @classmethod
  def from_json(cls, text: str) -> "Genotype":
    d = json.loads(text)
    return cls(d["op_set"], int(d["nodes"]),
               tuple((int(t), int(s), str(o)) for t, s, o in d["edges"]))


def init_arch_params(space: SearchSpace, scale: float = 1e-3,
                     key: jax.Array | None = None) -> dict[str, jax.Array]:
  """Architecture logits (DARTS alphas): one row per edge, one column per op.

  Small random logits (DARTS: 1e-3 * N(0, 1)) or, without a key, zeros.
  """
  shape = (space.num_edges, len(space.op_names))
  if key is None:
    return {"normal": jnp.zeros(shape)}
  return {"normal": scale * jax.random.normal(key, shape)}


def derive(arch_params: dict[str, jax.Array], space: SearchSpace) -> Genotype:
  """Discretises architecture logits (DARTS rule).

  Each edge takes its most likely op other than `none`; each node keeps its
  `space.max_in_edges` incoming edges whose chosen op is most likely (all
  edges when 0). Only the logits are read: a pure post-processing of whatever
  privatised updates produced them.
  """
  probs = np.asarray(jax.nn.softmax(arch_params["normal"], axis=-1))
  names = space.op_names
  candidates = [i for i, n in enumerate(names) if n != "none"]
  edges = []
  for to in range(1, space.nodes + 1):
    scored = []
    for src in range(to):
      row = probs[space.edge_index(to, src)]
      best = max(candidates, key=lambda i: row[i])
      scored.append((row[best], src, names[best]))
    keep = space.max_in_edges or to
    scored.sort(key=lambda t: (-t[0], t[1]))
    edges += [(to, src, op) for _, src, op in scored[:keep]]
  return Genotype(space.op_set, space.nodes, tuple(sorted(edges)))


def check_genotype(genotype: Genotype, space: SearchSpace) -> None:
  if genotype.op_set != space.op_set or genotype.nodes != space.nodes:
    raise ConfigError(
        f"genotype (op_set={genotype.op_set!r}, nodes={genotype.nodes}) does"
        f" not fit the space (op_set={space.op_set!r}, nodes={space.nodes})"
    )
  for to, src, op in genotype.edges:
    if op not in space.op_names or not 0 <= src < to <= space.nodes:
      raise ConfigError(
          f"genotype edge {(to, src, op)} is not an edge of the space; ops"
          f" allowed: {list(space.op_names)}"
      )
