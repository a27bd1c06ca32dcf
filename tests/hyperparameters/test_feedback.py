"""A client's hyperparameter feedback: bounded whatever the losses, noised as stated."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fedsearch.hyperparameters import feedback

_BEFORE = jnp.array([1e30, -1e30, jnp.nan, jnp.inf, 2.0, 0.1, -jnp.inf])
_AFTER = jnp.array([-1e30, 1e30, 0.0, jnp.inf, 1.0, 0.3, 5.0])


def _noiseless_sum(before, after, padding, clip):
  """The clipped gain sum (σ = 0, split size 1)."""
  return feedback.privatized_gain(before, after, padding, clip, 0.0,
                                  jax.random.key(0), 1.0)


def test_feedback_sensitivity_holds_for_adversarial_losses():
  clip = 0.5
  padding = jnp.zeros(len(_BEFORE), bool)
  total = _noiseless_sum(_BEFORE, _AFTER, padding, clip)
  assert math.isfinite(float(total))
  moves = []
  for i in range(len(_BEFORE)):
    removed = _noiseless_sum(_BEFORE, _AFTER, padding.at[i].set(True), clip)
    moves.append(abs(float(total - removed)))
  assert max(moves) <= clip * (1 + 1e-6)
  # ±1e30 differences are clipped to ±c: the bound is reached.
  assert max(moves) == pytest.approx(clip)


def test_feedback_on_hand_numbers():
  # d = (1, -0.2, 0 [inf - inf]) clipped to ±0.5 -> 0.5 - 0.2 = 0.3; / 3.
  got = feedback.privatized_gain(jnp.array([2.0, 0.1, jnp.inf]),
                                 jnp.array([1.0, 0.3, jnp.inf]),
                                 jnp.zeros(3, bool), 0.5, 0.0,
                                 jax.random.key(0), 3.0)
  assert float(got) == pytest.approx(0.1)


def test_feedback_noise_std():
  keys = jax.random.split(jax.random.key(0), 4000)
  draws = jax.vmap(lambda k: feedback.privatized_gain(
      jnp.zeros(3), jnp.zeros(3), jnp.zeros(3, bool), 0.5, 2.0, k, 20.0))(keys)
  assert float(jnp.std(draws)) == pytest.approx(2.0 * 0.5 / 20.0, rel=0.05)


def test_feedback_noise_is_the_mechanisms():
  # The mechanism's noised_sum receives the clipped sum and σ·c.
  got = feedback.privatized_gain(
      jnp.array([1.0]), jnp.array([0.0]), jnp.zeros(1, bool), 0.5, 2.0,
      jax.random.key(0), 2.0, noised_sum=lambda total, std, key: total + std)
  assert float(got) == pytest.approx((0.5 + 1.0) / 2.0)


def test_zero_one_error_on_hand_logits():
  logits = jnp.array([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [0.0, 0.0, 5.0]])
  labels = jnp.array([0, 2, 2])
  assert feedback.zero_one_error(logits, labels).tolist() == [0.0, 1.0, 0.0]


def test_brier_score_on_hand_logits():
  # p = (1/2, 1/2) against label 0: (1/2)² + (1/2)² = 1/2. p = (e²/(e²+1),
  # 1/(e²+1)) against label 1: 2·(e²/(e²+1))².
  logits = jnp.array([[0.0, 0.0], [2.0, 0.0]])
  got = feedback.brier_score(logits, jnp.array([0, 1]))
  p = np.exp(2.0) / (np.exp(2.0) + 1.0)
  np.testing.assert_allclose(got, [0.5, 2 * p**2], rtol=1e-6)


@pytest.mark.parametrize("logits,label", [
    ([30.0, -30.0, 0.0], 1), ([30.0, -30.0, 0.0], 0), ([0.0, 0.0, 0.0], 2)])
def test_brier_score_is_bounded_where_the_loss_is_not(logits, label):
  got = float(feedback.brier_score(jnp.array([logits]),
                                   jnp.array([label]))[0])
  assert 0.0 <= got <= 2.0
  if logits[label] == -30.0:  # Confidently wrong: the loss is ~60.
    assert got == pytest.approx(2.0, abs=1e-6)


def test_soft_error_is_the_randomised_predictions_error():
  # p = (1/2, 1/2) -> 1/2; p_y = e²/(e²+1) -> 1/(e²+1); confidently wrong
  # -> 1, where the 0/1 error is 1 too.
  logits = jnp.array([[0.0, 0.0], [2.0, 0.0], [0.0, 40.0]])
  got = feedback.soft_error(logits, jnp.array([0, 0, 0]))
  np.testing.assert_allclose(got, [0.5, 1 / (np.exp(2.0) + 1), 1.0],
                             rtol=1e-6)


@pytest.mark.parametrize("name,expected", [
    ("loss", 7.0), ("error", 1.0), ("soft_error", np.e / (1 + np.e)),
    ("brier", 2 * (np.e / (1 + np.e))**2)])
def test_a_gain_reads_the_measure_it_is_given(name, expected):
  loss = lambda logits, labels: jnp.full(labels.shape, 7.0)
  got = feedback.measure(name, loss)(jnp.array([[0.0, 1.0]]), jnp.array([0]))
  assert float(got[0]) == pytest.approx(expected, rel=1e-6)



def test_an_error_gain_is_the_accuracy_an_update_added():
  # Errors before (1, 1, 0, 0), after (0, 1, 1, 0): d = (1, 0, -1, 0),
  # clipped to ±0.5 -> (0.5, 0, -0.5, 0); the last row is padding.
  before = jnp.array([1.0, 1.0, 0.0, 0.0, 1.0])
  after = jnp.array([0.0, 1.0, 1.0, 0.0, 0.0])
  padding = jnp.array([False] * 4 + [True])
  got = feedback.privatized_gain(before, after, padding, 0.5, 0.0,
                                 jax.random.key(0), 4.0)
  assert float(got) == pytest.approx(0.0)
  got = feedback.privatized_gain(before, after.at[2].set(0.0), padding, 0.5,
                                 0.0, jax.random.key(0), 4.0)
  assert float(got) == pytest.approx(0.5 / 4.0)
