"""Federated privacy at population scale: client-level DP-FedAvg.

  --config=experiments/configs/federated.py:DATASET[,CLIPPING]

DATASET: mnist | fashion_mnist. CLIPPING: adaptive (the default; Andrew et
al. 2021, bounds following the median update norm) | fixed (the initial
bound throughout).

A population of 1,000 clients, each holding two label-sorted shards of the
training data (McMahan et al.'s pathological non-IID split, ~59 examples
and two classes a client), of which each round Poisson-samples 100 in
expectation (q_c = 0.1). The unit of privacy is a whole client, the noise
is added once to the sum (trust `aggregate`), (ε, δ) = (3, 1e-5) over the
run; the model is Tramer & Boneh's tanh CNN (the DPNAS baseline).

Settings (frozen before any run on these datasets, from the papers rather
than from accuracy on them): DP-FedAvg's server, SGD with learning rate 1
and momentum 0.9 (McMahan et al. 2018); one local epoch of plain SGD,
Poisson batches of ~12 (q = 0.2, 5 steps, learning rate 0.1, no
momentum: stateless clients); adaptive clipping to the median (γ = 0.5,
η_C = 0.2, σ_b = expected clients / 20; Andrew et al.) from S_w = 0.1;
300 rounds (each client takes part in ~30), run 25 clients at a time
(`client_chunk`) so memory does not grow with the clients per round.
"""

import ml_collections

from experiments.configs import default

DATASETS = ("mnist", "fashion_mnist")
CLIPPINGS = ("adaptive", "fixed")
POPULATION = 1000
CLIENTS_PER_ROUND = 100


def _parse(arg: str) -> tuple[str, str]:
  parts = [p.strip() for p in arg.split(",") if p.strip()]
  if len(parts) == 1:
    parts.append("adaptive")
  if len(parts) != 2 or parts[0] not in DATASETS or parts[1] not in CLIPPINGS:
    raise ValueError(
        f"federated config argument {arg!r}: expected DATASET[,CLIPPING]"
        f" with DATASET in {list(DATASETS)}, CLIPPING in {list(CLIPPINGS)}")
  return parts[0], parts[1]


def get_config(arg: str = "mnist") -> ml_collections.ConfigDict:
  dataset, clipping = _parse(arg)
  config = default.get_config()
  config.dataset = dataset
  config.model = "tanh_cnn_small"
  config.monitor_fraction = 0.02  # Progress lines only; no decision reads it.

  f = config.federated
  f.num_clients, f.clients_per_round = POPULATION, CLIENTS_PER_ROUND
  f.partition, f.shards_per_client = "shards", 2
  f.search_rounds, f.train_rounds = 0, 300
  f.local_steps, f.sampling_rate = 5, 0.2
  f.server_optimizer, f.server_learning_rate, f.server_momentum = (
      "sgd", 1.0, 0.9)
  f.client_chunk = 25

  c = config.client
  c.learning_rate, c.momentum = 0.1, 0.0

  p = config.privacy
  p.unit, p.trust = "client", "aggregate"
  p.epsilon, p.delta = 3.0, 1e-5
  p.clip_norm = 0.1
  p.adaptive_clip_quantile = 0.5 if clipping == "adaptive" else 0.0
  p.adaptive_clip_learning_rate = 0.2
  config.checkpoint_every = 10
  return config
