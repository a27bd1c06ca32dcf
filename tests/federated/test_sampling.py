"""Host-side sampling: the client schedule and a round's Poisson batches."""

import functools

import chex
import numpy as np
import pytest

from fedsearch import data
from fedsearch import federated as fed


@functools.lru_cache(maxsize=None)
def _splits() -> fed.ClientSplits:
  ds = data.load_dataset("digits")
  parts = data.partition(ds.train_y, "dirichlet", 8, seed=0)
  return fed.split_clients(parts, 0.3, seed=0)


def _inputs(splits, clients, multiple=1):
  return fed.round_inputs(
      splits, np.asarray(clients), seed=0, round_=3, steps=2,
      sampling_rate=0.2, batch_sizes=(24, 12), validation_batches=True,
      train_on_all_local_data=False, client_multiple=multiple)


def test_round_inputs_are_reproducible_and_poisson():
  splits = _splits()
  a = _inputs(splits, [0, 1])
  b = _inputs(splits, [0, 1])
  chex.assert_trees_all_equal(a, b)
  for slot, k in enumerate([0, 1]):
    real = a.train_idx[slot][~a.train_padding[slot]]
    assert set(real) <= set(splits.train[k])  # Only the client's own rows.
    assert set(a.val_idx[slot][~a.val_padding[slot]]) <= set(splits.val[k])
  np.testing.assert_allclose(a.expected_batch[:, 0],
                             [0.2 * len(splits.train[k]) for k in (0, 1)])


@pytest.mark.parametrize("clients,multiple,slots", [
    ([0, 2, 3, 5, 6], 4, 8), ([0, 2, 3, 5], 4, 4), ([1], 1, 1)])
def test_padding_clients_have_no_weight_no_id_and_only_padding_rows(
    clients, multiple, slots):
  # A device's share of the client axis may hold padding clients: they must
  # add nothing to the FedAvg mean.
  splits = _splits()
  inputs = _inputs(splits, clients, multiple)
  assert inputs.train_idx.shape[0] == slots
  n = len(clients)
  assert inputs.client_ids.tolist() == clients + [-1] * (slots - n)
  np.testing.assert_array_equal(inputs.client_weights[n:], 0.0)
  np.testing.assert_array_equal(inputs.client_weights[:n],
                                splits.sizes()[clients])
  assert inputs.train_padding[n:].all() and inputs.val_padding[n:].all()
  # The real clients' batches are those of the unpadded round.
  unpadded = _inputs(splits, clients)
  np.testing.assert_array_equal(inputs.train_idx[:n], unpadded.train_idx)


@pytest.mark.parametrize("clients,per_round,rounds", [(10, 4, 50),
                                                       (100, 10, 200),
                                                       (7, 3, 11)])
def test_client_schedule_is_balanced(clients, per_round, rounds):
  schedule = fed.client_schedule(clients, per_round, rounds, seed=1)
  taken = np.bincount(schedule.ravel(), minlength=clients)
  assert taken.max() == -(-rounds * per_round // clients)
  assert taken.min() == rounds * per_round // clients
  # Not a fixed rotation: who shares a round changes.
  assert len({tuple(r) for r in schedule}) > clients // per_round


def test_client_schedule_draws_distinct_clients():
  sched = fed.client_schedule(10, 4, 50, seed=0)
  assert sched.shape == (50, 4)
  assert all(len(set(r)) == 4 for r in sched)
  counts = np.bincount(sched.ravel(), minlength=10)
  assert counts.min() > 5  # Every client takes part now and then.
