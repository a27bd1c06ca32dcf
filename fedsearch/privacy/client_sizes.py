"""Client dataset sizes, released once and privatised.

Under add/remove adjacency a client's number of examples n_k differs between
neighbouring datasets, so whatever is computed from it exactly would release
it: FedAvg weights, the q·n normaliser of a noised sum (it sets the noise's
scale, so it is not post-processing) and the static padded batch shapes.
Each client therefore releases its size once, before round one,

  ñ_k = n_k + N(0, σ_n²)          (sensitivity 1: one example moves one count),

one more Gaussian in the accountant (stream `client_sizes`: q = 1, once), and
everything that needs a size is post-processing of ñ_k:

  FedAvg weight of client k:                 max(ñ_k, 1)
  normaliser of a release that reads the     q · f · max(ñ_k, 1)
  fraction f of the client's data (train,
  validation or all) at Poisson rate q:
  static shapes (padded batches, the         from the bound n_k ≤ ñ_k + z·σ_n,
  feedback split):                           false with probability Φ(−z)

z is chosen so that Φ(−z) is the per-draw truncation tail: a bound that fails
is one more event on which the padded batches may truncate, counted in the
truncation δ like any Poisson draw (the coupling argument of
`accounting.padded_batch_size`).
"""

import dataclasses
import math

import numpy as np
from scipy import stats

# Which part of a client's data a release reads.
ALL, TRAIN, VAL = "all", "train", "val"


@dataclasses.dataclass(frozen=True)
class PublicSizes:
  """What the server and the accountant may use instead of the true n_k.

  Attributes:
    released: (N,) ñ_k, the privatised sizes.
    bounds: (N,) public upper bounds on the true n_k.
    val_fraction: the share of each client's data in its validation split.
  """

  released: np.ndarray
  bounds: np.ndarray
  val_fraction: float

  def _fraction(self, part: str) -> float:
    return {ALL: 1.0, TRAIN: 1.0 - self.val_fraction,
            VAL: self.val_fraction}[part]

  def estimate(self, part: str = ALL) -> np.ndarray:
    """(N,) public estimates of each client's `part` size, f·max(ñ_k, 1).

    Exactly proportional to the FedAvg weight max(ñ_k, 1) (no floor of
    their own): under shared noise a client's bounded sum enters the
    average with the coefficient weight / normaliser, which must be the
    same for all clients so that one example moves the sum by no more than
    the noise was calibrated for.
    """
    return self._fraction(part) * np.maximum(self.released, 1.0)

  def bound(self, part: str = ALL) -> np.ndarray:
    """(N,) public upper bounds of each client's `part` size (ints).

    A split of round(f·n) rows holds at most f·n + 1/2 of them.
    """
    slack = 0.0 if part == ALL else 0.5
    return np.ceil(self._fraction(part) * self.bounds + slack).astype(np.int64)


def upper_bound_z(tail_probability: float) -> float:
  """z with Φ(−z) = tail: ñ + z·σ_n bounds n but with that probability."""
  return float(stats.norm.isf(tail_probability))


def release(true_sizes, noise_multiplier: float, rng: np.random.Generator,
            tail_probability: float, val_fraction: float) -> PublicSizes:
  """Each client's privatised size and its public upper bound."""
  true_sizes = np.asarray(true_sizes, np.float64)
  if math.isinf(noise_multiplier):
    raise ValueError("client sizes need finite noise")
  released = true_sizes + noise_multiplier * rng.standard_normal(
      true_sizes.shape)
  bounds = np.maximum(
      released + upper_bound_z(tail_probability) * noise_multiplier, 1.0)
  return PublicSizes(released, bounds, val_fraction)


def kept_local(true_sizes, val_fraction: float) -> PublicSizes:
  """Client-level DP: sizes never leave their client, so nothing is
  released. The true sizes serve only each client's own computation (its
  batch normalisers and shapes, inside its clipped delta); the server's
  aggregation ignores them (`mechanisms.client_level`)."""
  true_sizes = np.asarray(true_sizes, np.float64)
  return PublicSizes(true_sizes, true_sizes, val_fraction)
