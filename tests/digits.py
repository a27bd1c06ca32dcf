"""Digits on 8 Dirichlet(0.5) clients, 30 % of each for validation: the
small federation the round-level tests share."""

import functools

import jax.numpy as jnp

from fedsearch import data
from fedsearch import federated as fed


@functools.lru_cache(maxsize=None)
def federation():
  """(x, y, splits): device-resident examples and the clients' rows."""
  ds = data.load_dataset("digits")
  x = jnp.asarray(data.normalize("digits", ds.train_x, ds.pixel_max))
  y = jnp.asarray(ds.train_y)
  parts = data.partition(ds.train_y, "dirichlet", 8, seed=0)
  return x, y, fed.split_clients(parts, 0.3, seed=0)
