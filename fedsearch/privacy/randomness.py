"""Where the mechanisms' randomness comes from: a secret, or a seed.

Every Gaussian noise draw and every Poisson batch draw must be unpredictable
to whoever may see the run's configuration: noise generated from a seed in
`config.json` can be regenerated and subtracted, and known Poisson draws
remove the amplification by sampling. `privacy.randomness` picks:

  secret (default): 128 bits from the operating system's entropy
    (`secrets`), drawn once when a run starts and kept in the workdir's
    `secret_key` file, readable by its owner only (mode 0600), never in
    `config.json`. A resumed run reads it back and draws exactly what the
    uninterrupted run would have. In a multi-process run process 0 draws it
    and broadcasts it to the others.
  seeded: derived from `config.seed`, for reproducible simulation. Anyone who
    knows the seed knows the noise: the privacy guarantee then holds only
    against an adversary who does not see the configuration.

What needs no secrecy (model initialisation, the client schedule, the
partition, a hyperparameter strategy's exploration) stays seeded.
"""

import hashlib
import os
import pathlib
import secrets
from typing import NamedTuple

import jax
import numpy as np

from fedsearch.errors import ConfigError

MODES = ("secret", "seeded")
SECRET_FILE = "secret_key"
_SECRET_BITS = 128

# Stream tags of host-side draws besides the per-round Poisson batches.
CLIENT_SIZES_STREAM = 0x512E5
CLIENT_SCHEDULE_STREAM = 0xC11E7


class Randomness(NamedTuple):
  """The entropy behind every privacy-relevant draw of one run."""

  mode: str  # secret | seeded
  entropy: int  # seeds the host-side draws (numpy SeedSequence, any size)

  def rng(self, *stream: int) -> np.random.Generator:
    """The host-side generator of one stream (e.g. round, client, split)."""
    return np.random.default_rng([self.entropy, *map(int, stream)])

  def noise_key(self) -> jax.Array:
    """The root key of every in-round noise draw (and sampled child)."""
    if self.mode == "seeded":
      return jax.random.key(self.entropy + 1)
    words = jax.random.key_data(jax.random.key(0)).size
    digest = hashlib.sha256(b"fedsearch-noise"
                            + self.entropy.to_bytes(_SECRET_BITS // 8, "big"))
    return jax.random.wrap_key_data(
        np.frombuffer(digest.digest()[:4 * words], np.uint32).copy())


def check_mode(mode: str) -> None:
  if mode not in MODES:
    raise ConfigError(f"privacy.randomness={mode!r} is not allowed; choose one"
                      f" of {list(MODES)}")


def seeded(seed: int) -> Randomness:
  return Randomness("seeded", int(seed))


def _process_zeros(value: int) -> int:
  """Process 0's value, in every process of a multi-process run."""
  if jax.process_count() == 1:
    return value
  from jax.experimental import multihost_utils  # Only multi-process runs.
  words = np.frombuffer(value.to_bytes(_SECRET_BITS // 8, "big"), np.uint32)
  words = np.asarray(multihost_utils.broadcast_one_to_all(words), np.uint32)
  return int.from_bytes(words.tobytes(), "big")


def read_secret(path: pathlib.Path) -> int | None:
  """The secret a run in this workdir drew, or None before its first start."""
  file = path / SECRET_FILE
  if not file.exists():
    return None
  text = file.read_text().strip()
  try:
    value = int(text, 16)
  except ValueError:
    value = -1
  if not 0 <= value < 2**_SECRET_BITS:
    raise ConfigError(f"{file} is damaged (not a {_SECRET_BITS}-bit hex"
                      " key); the run's noise cannot be reproduced: start it"
                      " in a new workdir")
  return value


def write_secret(path: pathlib.Path, value: int) -> None:
  """Writes the key readable by its owner only, atomically."""
  tmp = path / f"{SECRET_FILE}.tmp"
  fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
  with os.fdopen(fd, "w") as f:
    f.write(f"{value:032x}\n")
  os.replace(tmp, path / SECRET_FILE)


def fresh(mode: str, seed: int) -> Randomness:
  """A new secret from the OS entropy, or the seed's in seeded mode."""
  check_mode(mode)
  if mode == "seeded":
    return seeded(seed)
  return Randomness("secret", _process_zeros(secrets.randbits(_SECRET_BITS)))


def for_run(mode: str, seed: int, workdir: pathlib.Path) -> Randomness:
  """The run's randomness: its workdir's secret (a fresh one before the
  first start, which the caller writes with `write_secret` once the run may
  start) or the seed's."""
  check_mode(mode)
  value = read_secret(workdir) if mode == "secret" else None
  if value is None:
    return fresh(mode, seed)
  return Randomness("secret", _process_zeros(value))
