r"""Joint architecture + hyperparameter search vs fixed defaults vs random search.

Every row is one complete run of the main job at the same total (ε, δ); in
the searching rows the hyperparameter feedback is privatised and composed in
the same accountant (its share of ε in the last column).

  python -m experiments.hpo_compare --preset=digits_quick
  python -m experiments.hpo_compare --preset=fmnist_feathers --data_dir=../shared/data

Appends the markdown table to --out (default: print only).
"""

from absl import app, flags

from experiments import cli, reporting
from experiments.configs import default
from fedsearch import nas
from fedsearch.errors import USER_ERRORS

_PRESET = flags.DEFINE_enum(
    "preset", "digits_quick", ["digits_quick", "fmnist_feathers"],
    "digits_quick: the main job's federation, CPU-sized; fmnist_feathers:"
    " Fashion-MNIST, 10 label-shard clients, FEATHERS's ranges.")
_STRATEGIES = flags.DEFINE_list("strategies", ["none", "feathers", "fedex",
                                               "random"], "rows to run")
_DATA_DIR = flags.DEFINE_string("data_dir", "../shared/data", "data folder")
_OUT = flags.DEFINE_string("out", "", "markdown file to append to")
_SEED = flags.DEFINE_integer("seed", 0, "seed of every run")


def preset_config(name: str, strategy: str):
  config = default.get_config()
  config.seed = _SEED.value
  config.data_dir = _DATA_DIR.value
  config.hpo.strategy = strategy
  # The gains measure each client's own update: per-client noise.
  config.privacy.trust = "local"
  f, h = config.federated, config.hpo
  f.search_rounds = 15
  if name == "digits_quick":
    # Ranges around what suits one full-batch step per round on digits.
    h.pool_size = 8
    h.space = {
        "learning_rate": {"scale": "log", "low": 0.1, "high": 3.0},
        "arch_learning_rate": {"scale": "log", "low": 1e-3, "high": 1e-1},
        "arch_weight_decay": {"scale": "log", "low": 1e-4, "high": 1e-2},
    }
  else:
    config.dataset = "fashion_mnist"
    config.monitor_fraction = 0.02
    f.partition = "shards"
    f.shards_per_client = 2
    f.sampling_rate = 0.02
    f.local_steps = 2
    f.train_rounds = 40
    config.space.head = "gap"
    h.pool_size = 16
  return config


def main(argv):
  del argv
  rows = []
  try:
    for strategy in _STRATEGIES.value:
      config = preset_config(_PRESET.value, strategy)
      s = reporting.run_in_scratch(config, f"{_PRESET.value}, {strategy}")
      chosen = s.get("hyperparameters", {}).get("chosen", {
          "learning_rate": config.client.learning_rate,
          # 0 stands for the strategy's default (as the job reads it).
          "arch_learning_rate": (
              config.client.arch_learning_rate
              or nas.traits(config.nas.strategy).arch_learning_rate)})
      feedback_eps = s["epsilon_breakdown"].get("hp_feedback_only")
      rows.append((strategy, s["test_accuracy"], s["epsilon"], feedback_eps,
                   chosen, s["wall_time_s"]))
      print(rows[-1], flush=True)
  except USER_ERRORS as e:
    raise SystemExit(f"error: {e}") from None

  base = preset_config(_PRESET.value, "none")
  lines = [
      f"### {_PRESET.value}: {base.dataset}, {base.federated.num_clients}"
      f" {base.federated.partition} clients, (ε, δ) = ({base.privacy.epsilon},"
      f" {base.privacy.delta}), seed {_SEED.value}",
      "",
      reporting.machine_line(),
      "",
      "| hyperparameters | test accuracy | total ε | ε of feedback alone |"
      " client lr | arch lr | wall s |",
      "|---|---|---|---|---|---|---|",
  ]
  label = {"none": "fixed defaults", "feathers": "joint search (FEATHERS)",
           "fedex": "joint search (FedEx)", "random": "random search"}
  for strategy, acc, eps, feedback_eps, chosen, wall in rows:
    fb = "—" if feedback_eps is None else f"{feedback_eps:.2f}"
    lines.append(
        f"| {label[strategy]} | {100 * acc:.1f} % | {eps:.3f} | {fb} |"
        f" {chosen['learning_rate']:.3g} | {chosen['arch_learning_rate']:.3g} |"
        f" {wall:.0f} |")
  reporting.emit("\n".join(lines + [""]), _OUT.value)


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
