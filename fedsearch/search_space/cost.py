"""What an architecture costs: a per-op table and the search's cost terms.

The table holds, for every op of a space, its parameters, FLOPs (XLA's
count for one example) and forward latency (median wall time of one batch
on the machine that built the table), summed over the cells (all cells share
the architecture logits, so one choice costs the op in every cell), plus the
fixed cost of what every child has (stem, cell preprocessing, head). A
child's cost is fixed + Σ_edges cost[op]; its expected cost under the
architecture distribution is fixed + Σ_e Σ_o p_eo cost[o], differentiable in
the logits.

Latency is the machine's: build the table where the model will run
(`python -m experiments.op_costs --out=table.json` on that machine) and pass
it as `nas.cost_table`; without a file the table is measured where the
search runs. Costs are public (they read no data), so the penalty's gradient
is added after the privatisation of the architecture gradient, as free
post-processing.
"""

import dataclasses
import json
import os
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np

from fedsearch.errors import ConfigError
from fedsearch.search_space import ops
from fedsearch.search_space.genotype import Genotype
from fedsearch.search_space.network import derived_network
from fedsearch.search_space.space import SearchSpace

METRICS = ("params", "flops", "latency_ms")


@dataclasses.dataclass(frozen=True)
class CostTable:
  op_names: tuple[str, ...]
  per_op: dict[str, tuple[float, ...]]  # metric -> cost of each op
  fixed: dict[str, float]  # metric -> cost every child has
  hardware: str

  def to_json(self) -> str:
    return json.dumps(dataclasses.asdict(self), indent=1)

  @classmethod
  def from_json(cls, text: str) -> "CostTable":
    d = json.loads(text)
    return cls(tuple(d["op_names"]),
               {k: tuple(v) for k, v in d["per_op"].items()}, d["fixed"],
               d["hardware"])

  def child_cost(self, choices, metric: str) -> float:
    per_op = np.asarray(self.per_op[metric])
    return float(self.fixed[metric] + per_op[np.asarray(choices)].sum())

  def expected_cost(self, arch_params, metric: str) -> jax.Array:
    p = jax.nn.softmax(arch_params["normal"], axis=-1)
    return self.fixed[metric] + jnp.sum(p @ jnp.asarray(self.per_op[metric]))

  def largest_cost(self, num_edges: int, metric: str) -> float:
    return self.fixed[metric] + num_edges * max(self.per_op[metric])


def hardware_name() -> str:
  """The accelerator (or CPU) a cost was measured on, with the host CPU."""
  cpu = platform.processor() or platform.machine()
  try:
    with open("/proc/cpuinfo") as f:
      cpu = next(line.split(":", 1)[1].strip() for line in f
                 if line.startswith("model name"))
  except (OSError, StopIteration):
    pass
  device = jax.devices()[0]
  return (f"{device.device_kind} x{jax.device_count()} ({device.platform};"
          f" host {cpu}, {os.cpu_count()} cores)")


def _measure(module, x, latency_batch: int, repeats: int):
  variables = module.init(jax.random.key(0), x[:1])
  params = sum(v.size for v in jax.tree.leaves(variables))
  apply = jax.jit(module.apply)
  compiled = apply.lower(variables, x[:1]).compile()
  flops = float(compiled.cost_analysis().get("flops", 0.0))
  batch = jnp.broadcast_to(x[:1], (latency_batch, *x.shape[1:]))
  jax.block_until_ready(apply(variables, batch))  # Compile and warm up.
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(apply(variables, batch))
    times.append(time.perf_counter() - start)
  return {"params": float(params), "flops": flops,
          "latency_ms": 1e3 * float(np.median(times))}


def measure_network(module, input_shape, latency_batch: int = 64,
                    repeats: int = 20) -> dict:
  """Parameters, FLOPs per example and latency of any flax module."""
  return _measure(module, jnp.zeros((1, *input_shape)), latency_batch,
                  repeats)


def measure_model(space: SearchSpace, genotype: Genotype, input_shape,
                  latency_batch: int = 64, repeats: int = 20) -> dict:
  """Parameters, FLOPs per example and latency of a derived model."""
  return measure_network(derived_network(space, genotype), input_shape,
                         latency_batch, repeats)


def build_cost_table(space: SearchSpace, input_shape,
                     latency_batch: int = 64, repeats: int = 20) -> CostTable:
  """Measures every op of `space` in every cell, on this machine."""
  factories = ops.OP_SETS[space.op_set]
  # What every child has, measured on the child whose edges are all skip
  # connections, minus those: with every edge dropped the compiler would
  # remove the stem as dead code.
  skips = Genotype(space.op_set, space.nodes, tuple(
      (to, src, "skip_connect") for to, src in space.edges))
  all_skips = measure_model(space, skips, input_shape, latency_batch, repeats)
  per_op = {m: [0.0] * len(space.op_names) for m in METRICS}
  resolutions = space.cell_resolutions(*input_shape[:2])
  for cell, (height, width) in enumerate(resolutions):
    channels = space.cell_channels(cell)
    x = jnp.zeros((1, height, width, channels))
    for i, name in enumerate(space.op_names):
      if name == "none":
        continue
      cost = _measure(
          factories[name](channels, space.groups, space.activation, name), x,
          latency_batch, repeats)
      for m in METRICS:
        per_op[m][i] += cost[m]
  skip = space.op_names.index("skip_connect")
  fixed = {m: max(all_skips[m] - space.num_edges * per_op[m][skip], 0.0)
           for m in METRICS}
  return CostTable(space.op_names, {m: tuple(v) for m, v in per_op.items()},
                   fixed, hardware_name())


def check_metric(metric: str) -> None:
  if metric not in METRICS:
    raise ConfigError(f"nas.cost_metric={metric!r} is not allowed; choose one"
                      f" of {list(METRICS)}")


def cost_penalty(table: CostTable, metric: str, num_edges: int,
                 weight: float, budget: float = 0.0, budget_weight: float = 0.0):
  """arch_params -> weight·E[c]/c_max + budget_weight·max(0, E[c] − B)/c_max.

  Normalised by the largest child's cost c_max, so the weights are unitless
  (the first term is at most `weight`).
  """
  check_metric(metric)
  scale = 1.0 / table.largest_cost(num_edges, metric)

  def penalty(arch_params):
    expected = table.expected_cost(arch_params, metric)
    over = jnp.maximum(expected - budget, 0.0) if budget > 0 else 0.0
    return scale * (weight * expected + budget_weight * over)

  return penalty


def fit_budget(choices, arch_params, table: CostTable, metric: str,
               budget: float, space: SearchSpace) -> np.ndarray:
  """The child `choices`, made to cost at most `budget` (hard constraint).

  Greedily swaps one edge's op for a cheaper one, each time the swap that
  gives up the least log-probability per unit of cost saved, until the
  child fits; never a swap that cuts every node off from the cell's input
  (`none` is the cheapest op, and a constant network fits any budget).
  Reads only the (privatised) logits and the public table.
  """
  choices = np.array(choices)
  cost = np.asarray(table.per_op[metric])
  log_p = np.asarray(jax.nn.log_softmax(arch_params["normal"], axis=-1))
  while table.child_cost(choices, metric) > budget:
    best = None
    for e, k in enumerate(choices):
      for o in np.flatnonzero(cost < cost[k]):
        price = (log_p[e, k] - log_p[e, o]) / (cost[k] - cost[o])
        if ((best is None or price < best[0])
            and space.reaches_a_node(np.where(np.arange(len(choices)) == e,
                                              o, choices))):
          best = (price, e, o)
    if best is None:
      raise ConfigError(
          f"nas.cost_budget={budget} is below the cheapest connected child's"
          f" {metric} ({table.child_cost(choices, metric):.4g}); raise it")
    choices[best[1]] = best[2]
  return choices
