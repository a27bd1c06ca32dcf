"""Federated partitions of a labelled training set.

Each partitioner returns one sorted index array per client; together they are
a partition of range(len(labels)): no example is lost or given to two clients.
"""

import numpy as np

from fedsearch.errors import ConfigError

PARTITIONS = ("iid", "dirichlet", "shards")


def iid(labels: np.ndarray, num_clients: int, seed: int) -> list[np.ndarray]:
  """Uniformly shuffled, near-equal shares."""
  order = np.random.default_rng(seed).permutation(len(labels))
  return [np.sort(part) for part in np.array_split(order, num_clients)]


def dirichlet(labels: np.ndarray, num_clients: int, alpha: float, seed: int,
              min_size: int = 10, max_tries: int = 1000) -> list[np.ndarray]:
  """Label skew: each class is split over clients in Dirichlet(alpha) shares.

  The FedML/FedNAS recipe (Hsu et al. 2019): redraw until every client holds
  at least `min_size` examples, so that no client is left without data.
  """
  rng = np.random.default_rng(seed)
  classes = np.unique(labels)
  for _ in range(max_tries):
    shares = [[] for _ in range(num_clients)]
    for c in classes:
      members = rng.permutation(np.flatnonzero(labels == c))
      p = rng.dirichlet(np.full(num_clients, alpha))
      cuts = (np.cumsum(p)[:-1] * len(members)).astype(int)
      for client, part in enumerate(np.split(members, cuts)):
        shares[client].append(part)
    parts = [np.sort(np.concatenate(s)) for s in shares]
    if min(len(p) for p in parts) >= min_size:
      return parts
  raise ConfigError(
      f"federated.dirichlet_alpha={alpha} with {num_clients} clients left a"
      f" client with fewer than {min_size} examples in {max_tries} draws;"
      " use fewer clients or a larger alpha")


def shards(labels: np.ndarray, num_clients: int, shards_per_client: int,
           seed: int) -> list[np.ndarray]:
  """k label-sorted shards per client (McMahan et al. 2017 pathological non-IID)."""
  rng = np.random.default_rng(seed)
  num_shards = num_clients * shards_per_client
  if num_shards > len(labels):
    raise ConfigError(
        f"federated.shards_per_client={shards_per_client} x {num_clients}"
        f" clients needs {num_shards} shards but there are only {len(labels)}"
        " examples")
  # Sort by label, ties broken randomly, then deal out shards at random.
  by_label = np.lexsort((rng.random(len(labels)), labels))
  pieces = np.array_split(by_label, num_shards)
  dealt = rng.permutation(num_shards).reshape(num_clients, shards_per_client)
  return [np.sort(np.concatenate([pieces[s] for s in row])) for row in dealt]


def partition(labels: np.ndarray, scheme: str, num_clients: int, seed: int,
              dirichlet_alpha: float = 0.5, shards_per_client: int = 2
              ) -> list[np.ndarray]:
  if scheme not in PARTITIONS:
    raise ConfigError(f"federated.partition={scheme!r} is not allowed; choose"
                      f" one of {list(PARTITIONS)}")
  if num_clients < 1 or num_clients > len(labels):
    raise ConfigError(f"federated.num_clients must be in [1, {len(labels)}],"
                      f" got {num_clients}")
  if scheme == "iid":
    return iid(labels, num_clients, seed)
  if scheme == "dirichlet":
    if dirichlet_alpha <= 0:
      raise ConfigError("federated.dirichlet_alpha must be > 0, got"
                        f" {dirichlet_alpha}")
    return dirichlet(labels, num_clients, dirichlet_alpha, seed)
  if shards_per_client < 1:
    raise ConfigError("federated.shards_per_client must be >= 1, got"
                      f" {shards_per_client}")
  return shards(labels, num_clients, shards_per_client, seed)
