r"""Measures the per-op cost table of a search space on this machine.

Run it on the machine the model is meant for, then search with its table:

  python -m experiments.op_costs --out=costs.json
  python -m experiments.search --config.nas.cost_table=costs.json \
      --config.nas.cost_metric=latency_ms --config.nas.cost_penalty=0.5
"""

from absl import app
from absl import flags

from experiments import cli
from fedsearch.data import load_dataset
from fedsearch.runner.job import search_space_from
from fedsearch.search_space import cost

_CONFIG = cli.define_config_file(cli.DEFAULT_CONFIG, "Search configuration.")
_OUT = flags.DEFINE_string("out", "op_costs.json", "Where to write the table.")
_BATCH = flags.DEFINE_integer("latency_batch", 64, "Examples per timed call.")


def main(argv):
  del argv
  config = _CONFIG.value
  ds = load_dataset(config.dataset, config.data_dir, config.cache_dir or None)
  space = search_space_from(config, ds.num_classes)
  table = cost.build_cost_table(space, ds.train_x.shape[1:], _BATCH.value)
  with open(_OUT.value, "w") as f:
    f.write(table.to_json())
  print(f"{table.hardware}: per-op costs of {space.op_set} summed over"
        f" {space.cells} cell(s) (fixed part: {table.fixed})")
  for i, name in enumerate(table.op_names):
    print(f"  {name:24s}" + "  ".join(
        f"{m} {table.per_op[m][i]:10.4g}" for m in cost.METRICS))
  print(f"written to {_OUT.value}")


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
