"""Static description of a cell-based search space."""

import dataclasses

from fedsearch.errors import ConfigError
from fedsearch.search_space import ops


HEADS = ("gap", "flatten")
# conv3x3: DPNAS's stem, a 3x3 conv at full resolution. strided: Tramer &
# Boneh's first layer, an 8x8 conv at stride 2 (padding 2) then a 2x2
# max-pool at stride 1, which leaves the cells a quarter of the pixels.
# scatter: Tramer & Boneh's ScatterNet CNN's first layer, for inputs that are
# scattering features (`features="scatter"`): GroupNorm without scale or bias
# over groups of 3 feature channels (their 27 groups of 81), then a 3x3 conv
# at stride 2 (padding 1).
STEMS = ("conv3x3", "strided", "scatter")
# max_pool: a 2x2 max-pool after every cell (DPNAS). strided_conv: between
# cells, activation -> 4x4 conv at stride 2 -> GroupNorm -> 2x2 max-pool at
# stride 1 (Tramer & Boneh's second layer); the last cell feeds the head.
# conv3x3: between cells, activation -> 3x3 conv at stride 1 (the ScatterNet
# CNN's second layer: its input is already at a quarter resolution).
REDUCTIONS = ("max_pool", "strided_conv", "conv3x3")
# Scattering channels per GroupNorm group in the scatter stem.
SCATTER_GROUP_SIZE = 3


@dataclasses.dataclass(frozen=True)
class SearchSpace:
  """A stack of identical searched cells separated by reductions.

  Layout (DPNAS): stem conv -> [cell -> maxpool 2x2] x cells -> head -> dense,
  or, with `stem="strided"` and `reduction="strided_conv"`, Tramer & Boneh's
  CNN with a searched cell after each of its convolutions,
  where the head is a global average pool (DPNAS, for 32x32 inputs) or a
  flatten that keeps the spatial layout (small inputs such as 8x8 digits,
  where a global pool over a few channels throws away most of the signal). Channels double after every pooling. A cell has one input
  (node 0, the previous layer mapped to `channels` by a 1x1 conv) and `nodes`
  computed nodes, each fed by every earlier node, so it has
  nodes * (nodes + 1) / 2 edges; its output is the concatenation of the
  computed nodes. All cells share one set of architecture logits.

  Attributes:
    op_set: key of `ops.OP_SETS`.
    channels: channels of the first cell's nodes.
    stem_multiplier: the stem has stem_multiplier * channels channels.
    nodes: computed nodes per cell.
    cells: number of cells (each followed by a 2x2 max-pool).
    groups: GroupNorm groups; must divide every layer's channel count. 0:
      no normalisation anywhere (the convolutions get biases instead).
    activation: activation of the stem/preprocessing layers and of the ops
      that do not search their own (the DARTS convolutions).
    max_in_edges: edges kept per node when deriving a genotype (DARTS keeps
      2); 0 keeps every edge (DPNAS).
    num_classes: classifier outputs.
    head: "gap" (global average pool) or "flatten".
    stem: one of STEMS.
    reduction: one of REDUCTIONS.
    hidden: units of a dense layer (with the space's activation) before the
      classifier; 0 for none (DPNAS). Tramer & Boneh use 32.
    preprocess: node 0 of a cell is activation -> 1x1 conv -> norm of the
      cell's input (DARTS, DPNAS: it maps any width to the cell's). False:
      node 0 is the input itself, which must then already have the cell's
      width (stem_multiplier 1, strided_conv reductions); with one node and
      no norm, a cell of skip connections then leaves Tramer & Boneh's CNN
      exactly, so the space contains that baseline.
  """

  op_set: str = "dpnas"
  channels: int = 8
  stem_multiplier: int = 2
  nodes: int = 3
  cells: int = 2
  groups: int = 4
  activation: str = "tanh"
  max_in_edges: int = 0
  num_classes: int = 10
  head: str = "gap"
  stem: str = "conv3x3"
  reduction: str = "max_pool"
  hidden: int = 0
  preprocess: bool = True

  def __post_init__(self):
    if self.op_set not in ops.OP_SETS:
      raise ConfigError(
          f"space.op_set={self.op_set!r} is not allowed; choose one of"
          f" {sorted(ops.OP_SETS)}"
      )
    if self.activation not in ops.ACTIVATIONS:
      raise ConfigError(
          f"space.activation={self.activation!r} is not allowed; choose one of"
          f" {sorted(ops.ACTIVATIONS)}"
      )
    for field, allowed in (("head", HEADS), ("stem", STEMS),
                           ("reduction", REDUCTIONS)):
      if getattr(self, field) not in allowed:
        raise ConfigError(
            f"space.{field}={getattr(self, field)!r} is not allowed; choose"
            f" one of {list(allowed)}")
    if self.hidden < 0:
      raise ConfigError(f"space.hidden must be >= 0, got {self.hidden}")
    for field in ("channels", "stem_multiplier", "nodes", "cells",
                  "num_classes"):
      if getattr(self, field) < 1:
        raise ConfigError(f"space.{field} must be >= 1, got {getattr(self, field)}")
    if self.groups < 0:
      raise ConfigError(f"space.groups must be >= 0 (0: no normalisation),"
                        f" got {self.groups}")
    if not self.preprocess and (self.stem_multiplier != 1 or (
        self.cells > 1 and self.reduction == "max_pool")):
      raise ConfigError(
          "space.preprocess=False needs each cell's input at the cell's"
          " width: space.stem_multiplier=1 and, with more than one cell,"
          " a convolution between cells: space.reduction in"
          f" ['strided_conv', 'conv3x3'] (got {self.stem_multiplier},"
          f" {self.reduction!r})")
    if not 0 <= self.max_in_edges <= self.nodes:
      raise ConfigError(
          f"space.max_in_edges must be in [0, space.nodes={self.nodes}], got"
          f" {self.max_in_edges}"
      )
    for width in (self.channels, self.stem_multiplier * self.channels):
      if self.groups and width % self.groups:
        raise ConfigError(
            f"space.groups={self.groups} must divide the channel count {width}"
        )

  @property
  def op_names(self) -> tuple[str, ...]:
    return ops.op_names(self.op_set)

  @property
  def edges(self) -> tuple[tuple[int, int], ...]:
    """(to_node, from_node) pairs, in the row order of the architecture logits."""
    return tuple(
        (to, src)
        for to in range(1, self.nodes + 1)
        for src in range(to)
    )

  @property
  def num_edges(self) -> int:
    return len(self.edges)

  def cell_channels(self, cell: int) -> int:
    return self.channels * 2**cell

  def stem_resolution(self, height: int, width: int) -> tuple[int, int]:
    """The first cell's input resolution for (height, width) images."""
    if self.stem == "conv3x3":
      return height, width
    if self.stem == "scatter":
      return tuple((size + 2 - 3) // 2 + 1 for size in (height, width))
    return tuple((size + 2 * 2 - 8) // 2 + 1 - 1 for size in (height, width))

  def reduces_after(self, cell: int) -> bool:
    return self.reduction == "max_pool" or cell < self.cells - 1

  def reduced_resolution(self, height: int, width: int) -> tuple[int, int]:
    """The resolution after a reduction of a (height, width) map."""
    if self.reduction == "max_pool":
      return (height // 2, width // 2) if min(height, width) >= 2 else (
          height, width)
    if self.reduction == "conv3x3":
      return height, width
    return tuple((size - 4) // 2 + 1 - 1 for size in (height, width))

  def cell_resolutions(self, height: int, width: int) -> list[tuple[int, int]]:
    """Each cell's input (and output) resolution."""
    sizes = [self.stem_resolution(height, width)]
    for cell in range(self.cells - 1):
      sizes.append(self.reduced_resolution(*sizes[-1]))
    return sizes

  def edge_index(self, to_node: int, from_node: int) -> int:
    return to_node * (to_node - 1) // 2 + from_node

  def reaches_a_node(self, choices) -> bool:
    """Whether a path of ops other than `none` leads from the cell's input
    to some node under per-edge op `choices`; if not, the cell outputs
    zeros and the network is a constant."""
    none = self.op_names.index("none") if "none" in self.op_names else -1
    reached = {0}
    for to, src in self.edges:
      if src in reached and choices[self.edge_index(to, src)] != none:
        reached.add(to)
    return len(reached) > 1

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)

