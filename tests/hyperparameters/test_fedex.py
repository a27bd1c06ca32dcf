"""FedEx's exponentiated-gradient update on hand numbers."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fedsearch.hyperparameters import fedex


def test_fedex_two_arm_update():
  state = fedex.FedExState(jnp.array([0.5, 0.5]), jnp.float32(0.5),
                           jnp.int32(4))
  new = fedex.update(state, jnp.array([0, 1]), gains=jnp.array([1.0, 0.0]),
                     weights=jnp.array([1.0, 1.0]), step_size=1.0,
                     baseline_decay=0.9)
  # ∇̃ = (.5 (1 - .5) / .5, .5 (0 - .5) / .5) = (.5, -.5).
  expected = np.exp([0.5, -0.5]) / np.exp([0.5, -0.5]).sum()
  chex.assert_trees_all_close(new.probs, expected, rtol=1e-5)
  assert float(new.baseline) == pytest.approx(0.9 * 0.5 + 0.1 * 0.5)
  assert int(new.rounds) == 5
  # Repeated: the better arm takes over.
  for r in range(30):
    ids = fedex.choose(new, jax.random.key(r), 8)
    new = fedex.update(new, ids, gains=(ids == 0).astype(jnp.float32),
                       weights=jnp.ones(8))
  assert float(new.probs[0]) > 0.95


def test_the_first_update_takes_the_mean_gain_as_baseline():
  # rounds = 0: λ = Σ w·g = 0.5 before the step (so the same ∇̃ as above),
  # and afterwards λ is that mean, not a decayed mix with the initial 0.
  state = fedex.init(2)
  new = fedex.update(state, jnp.array([0, 1]), gains=jnp.array([1.0, 0.0]),
                     weights=jnp.array([1.0, 1.0]), step_size=1.0)
  expected = np.exp([0.5, -0.5]) / np.exp([0.5, -0.5]).sum()
  chex.assert_trees_all_close(new.probs, expected, rtol=1e-5)
  assert float(new.baseline) == pytest.approx(0.5)


def test_a_client_of_weight_zero_counts_for_nothing():
  # Padding clients carry weight 0: their gain moves neither θ nor λ.
  state = fedex.FedExState(jnp.array([0.5, 0.5]), jnp.float32(0.5),
                           jnp.int32(4))
  base = fedex.update(state, jnp.array([0, 1]), jnp.array([1.0, 0.0]),
                      jnp.array([1.0, 1.0]))
  padded = fedex.update(state, jnp.array([0, 1, 1]),
                        jnp.array([1.0, 0.0, 1e6]),
                        jnp.array([1.0, 1.0, 0.0]))
  chex.assert_trees_all_close(padded, base, rtol=1e-6)


def test_probabilities_are_floored():
  # An arm far behind keeps min_prob: its importance weight stays finite.
  state = fedex.init(3)
  for _ in range(5):
    state = fedex.update(state, jnp.array([0, 1, 2]),
                         jnp.array([100.0, 0.0, 0.0]), jnp.ones(3),
                         step_size=10.0, min_prob=1e-4)
  assert float(state.probs.min()) >= 1e-4 * (1 - 1e-3)
  assert float(state.probs.sum()) == pytest.approx(1.0, rel=1e-5)
  chex.assert_tree_all_finite(state)


def test_choose_draws_from_the_distribution():
  state = fedex.FedExState(jnp.array([0.7, 0.2, 0.1]), jnp.float32(0.0),
                           jnp.int32(0))
  ids = fedex.choose(state, jax.random.key(0), 20000)
  np.testing.assert_allclose(np.bincount(ids, minlength=3) / 20000,
                             [0.7, 0.2, 0.1], atol=0.015)


def test_update_jit_equals_eager():
  state = fedex.FedExState(jnp.array([0.2, 0.3, 0.5]), jnp.float32(0.1),
                           jnp.int32(2))
  args = (jnp.array([0, 2, 2, 1]), jnp.array([0.3, -0.2, 0.5, 0.0]),
          jnp.array([1.0, 2.0, 1.0, 0.0]))
  with jax.disable_jit():
    eager = fedex.update(state, *args)
  chex.assert_trees_all_close(jax.jit(fedex.update)(state, *args), eager,
                              rtol=1e-6)
