"""Host-side, data-independent randomness of a federation: who, and which rows.

The client schedule (which m of N clients take part in each round) does not
depend on any data, so it is drawn for the whole run before it starts; the
accountant then knows exactly how often each client takes part. Batches are
Poisson samples drawn with jax-privacy's `CyclicPoissonSampling`, padded to a
static size. Every draw is seeded by (entropy, round, client, stream), so a
resumed run draws exactly what the uninterrupted run would have; the main
job's entropy is a secret (`privacy.randomness`), since known draws would
undo the amplification by sampling.
"""

import dataclasses

import numpy as np
from jax_privacy import batch_selection

from fedsearch.federated.round import RoundInputs
from fedsearch.privacy import client_sizes

_TRAIN, _VAL = 0, 1

# Hyperparameters a search may draw per client that shape the round itself
# (host-side batches), as opposed to the traced client.TUNABLE values.
ROUND_HYPERPARAMETERS = ("local_steps", "sampling_rate")


@dataclasses.dataclass(frozen=True)
class ClientSplits:
  """Rows (into the global example arrays) of each client's local splits."""

  train: tuple[np.ndarray, ...]
  val: tuple[np.ndarray, ...]

  def sizes(self) -> np.ndarray:
    return np.array([len(t) + len(v) for t, v in zip(self.train, self.val)])


def split_clients(parts: list[np.ndarray], val_fraction: float, seed: int
                  ) -> ClientSplits:
  """Carves each client's local validation split (for architecture steps)."""
  train, val = [], []
  for k, rows in enumerate(parts):
    order = np.random.default_rng([seed, k]).permutation(rows)
    n_val = int(round(val_fraction * len(rows)))
    val.append(np.sort(order[:n_val]))
    train.append(np.sort(order[n_val:]))
  return ClientSplits(tuple(train), tuple(val))


def client_schedule(num_clients: int, clients_per_round: int, rounds: int,
                    seed: int) -> np.ndarray:
  """(rounds, m) client ids: m distinct clients a round, balanced.

  Each round takes the m clients that have taken part least so far (ties
  broken at random), so every client takes part ⌊R·m/N⌋ or ⌈R·m/N⌉
  times. Example-level accounting charges every client the most
  participations of any (the plan is for the most exposed client), so a
  uniform draw, whose maximum over 100 clients of Binomial(200, 0.1) is
  ~30 where the mean is 20, would spend ε on rounds most clients never
  take. The schedule is data-independent and public.
  """
  rng = np.random.default_rng([seed, 0x5C4ED])
  taken = np.zeros(num_clients, np.int64)
  schedule = np.empty((rounds, clients_per_round), np.int32)
  for round_ in range(rounds):
    order = np.lexsort((rng.random(num_clients), taken))
    chosen = np.sort(order[:clients_per_round])
    taken[chosen] += 1
    schedule[round_] = chosen
  return schedule


def poisson_client_schedule(num_clients: int, rate: float, rounds: int,
                            slots: int, rng: np.random.Generator
                            ) -> np.ndarray:
  """(rounds, slots) client ids, -1 in empty slots: each client takes part
  in each round independently with probability `rate` (client-level DP's
  Poisson sampling). A round that draws more than `slots` keeps a uniformly
  random `slots` of them (truncation, counted in δ). `rng` must be secret:
  a known draw would undo the amplification."""
  schedule = np.full((rounds, slots), -1, np.int32)
  for round_ in range(rounds):
    chosen = np.flatnonzero(rng.random(num_clients) < rate)
    if len(chosen) > slots:
      chosen = np.sort(rng.choice(chosen, slots, replace=False))
    schedule[round_, :len(chosen)] = chosen
  return schedule


def poisson_batches(rows: np.ndarray, sampling_rate: float, steps: int,
                    batch_size: int, rng: np.random.Generator
                    ) -> tuple[np.ndarray, np.ndarray]:
  """`steps` Poisson(q) samples of `rows`, padded/truncated to `batch_size`."""
  idx = np.zeros((steps, batch_size), np.int32)
  padding = np.ones((steps, batch_size), bool)
  if len(rows) == 0:
    return idx, padding
  sampler = batch_selection.CyclicPoissonSampling(
      sampling_prob=sampling_rate, iterations=steps,
      truncated_batch_size=batch_size)
  for s, positions in enumerate(sampler.batch_iterator(len(rows), rng)):
    idx[s, :len(positions)] = rows[positions]
    padding[s, :len(positions)] = False
  return idx, padding


def _size_rules(splits: ClientSplits,
                sizes: client_sizes.PublicSizes | None):
  """(weight_of(k), size_of(k, part, rows)): from the privatised release,
  or (sizes None) the true sizes."""
  if sizes is None:
    true = splits.sizes()
    return (lambda k: true[k]), (lambda k, part, rows: len(rows))
  estimates = {part: sizes.estimate(part) for part in
               (client_sizes.ALL, client_sizes.TRAIN, client_sizes.VAL)}
  return ((lambda k: estimates[client_sizes.ALL][k]),
          (lambda k, part, rows: estimates[part][k]))


def _streams(splits: ClientSplits, k: int, validation_batches: bool,
             train_on_all_local_data: bool):
  """(name, rows, stream id, size part) of each batch stream of client k."""
  train_rows, part = splits.train[k], client_sizes.TRAIN
  if train_on_all_local_data:
    train_rows = np.sort(np.concatenate([train_rows, splits.val[k]]))
    part = client_sizes.ALL
  streams = [("train", train_rows, _TRAIN, part)]
  if validation_batches:
    streams.append(("val", splits.val[k], _VAL, client_sizes.VAL))
  return streams


def round_inputs(splits: ClientSplits, clients: np.ndarray, *, seed: int,
                 round_: int, steps: int, sampling_rate: float,
                 batch_sizes: tuple[int, int], validation_batches: bool,
                 train_on_all_local_data: bool, client_multiple: int = 1,
                 feedback_size: int = 0, client_steps=None,
                 client_rates=None,
                 sizes: client_sizes.PublicSizes | None = None
                 ) -> RoundInputs:
  """Batches of one round for `clients`, padded to a multiple of devices.

  Args:
    splits: every client's local train/val rows.
    clients: ids of the clients taking part (-1: an empty slot).
    seed, round_: seed the draws (reproducible, resumable); `seed` is the
      run's entropy (`privacy.randomness.Randomness.entropy`).
    steps: local steps.
    sampling_rate: Poisson rate q of every stream.
    batch_sizes: static (train, val) batch sizes.
    validation_batches: draw validation batches (for architecture steps).
    train_on_all_local_data: weight steps read train and val rows (used once
      the architecture is fixed and the validation split is free).
    client_multiple: pad the client axis to a multiple of this.
    feedback_size: if > 0, also give every client's whole validation split,
      padded to this size, for hyperparameter feedback.
    client_steps, client_rates: optional per-slot local steps (<= `steps`,
      the static count) and Poisson rates (searched hyperparameters); the
      accountant must be given their maxima.
    sizes: the clients' privatised sizes (`privacy.client_sizes`), from
      which the FedAvg weights and the normalisers are taken. None uses the
      true sizes, which is private only where the sizes are public.
  """
  m = -(-len(clients) // client_multiple) * client_multiple
  out = {
      "train_idx": np.zeros((m, steps, batch_sizes[0]), np.int32),
      "train_padding": np.ones((m, steps, batch_sizes[0]), bool),
      "val_idx": np.zeros((m, steps, batch_sizes[1]), np.int32),
      "val_padding": np.ones((m, steps, batch_sizes[1]), bool),
  }
  expected = np.ones((m, 3), np.float32)
  if feedback_size:
    out["feedback_idx"] = np.zeros((m, feedback_size), np.int32)
    out["feedback_padding"] = np.ones((m, feedback_size), bool)
  weights = np.zeros(m, np.float32)
  ids = np.full(m, -1, np.int32)
  weight_of, size_of = _size_rules(splits, sizes)
  active = np.zeros((m, steps), bool) if client_steps is not None else None
  for slot, k in enumerate(clients):
    if k < 0:
      continue
    k_steps = steps if client_steps is None else int(client_steps[slot])
    k_rate = sampling_rate if client_rates is None else float(client_rates[slot])
    if not 1 <= k_steps <= steps or not 0 < k_rate <= 1:
      raise ValueError(f"client {k}: {k_steps} local steps (static {steps})"
                       f" or sampling rate {k_rate} out of range")
    if active is not None:
      active[slot, :k_steps] = True
    for name, rows, stream, part in _streams(splits, k, validation_batches,
                                             train_on_all_local_data):
      rng = np.random.default_rng([seed, round_, int(k), stream])
      (out[f"{name}_idx"][slot, :k_steps],
       out[f"{name}_padding"][slot, :k_steps]) = poisson_batches(
           rows, k_rate, k_steps, batch_sizes[stream], rng)
      expected[slot, stream] = max(k_rate * size_of(k, part, rows), 1e-6)
    if feedback_size:
      # Beyond a public bound that failed (probability counted in δ), rows
      # are truncated like a Poisson batch.
      val = splits.val[k][:feedback_size]
      out["feedback_idx"][slot, :len(val)] = val
      out["feedback_padding"][slot, :len(val)] = False
      expected[slot, 2] = max(size_of(k, client_sizes.VAL, val), 1)
    weights[slot], ids[slot] = weight_of(k), k
  if not validation_batches:
    out["val_idx"] = out["val_padding"] = None
  return RoundInputs(expected_batch=expected, client_weights=weights,
                     client_ids=ids, active_steps=active, **out)
