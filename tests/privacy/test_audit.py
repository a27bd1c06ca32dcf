"""One-run white-box audit: a sound mechanism stays below its claimed ε, a
broken one (noise off, clipping off, a share of the noise seen alone) is
caught far above it."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fedsearch.privacy import audit, dp_grad, mechanisms
from fedsearch.runner import job as job_lib
from tests import digits

# Claimed ε ≈ 1.3 at δ = 1e-5 (PLD); a 1,000-canary one-run audit tops out
# near 4.8 when every guess is right.
_SCHEDULE = audit.AuditSchedule(steps=100, sampling_rate=0.1,
                                noise_multiplier=3.0, clip_norm=1.0,
                                clients=4)


def _noise_off(mechanism):
  return mechanism._replace(
      private_optimizer=lambda stddev, key, batch, opt:
      mechanisms.private_optimizer(0.0, key, batch, opt))


def _clipping_off(mechanism):
  return mechanism._replace(
      gradient=lambda loss, argnums, clip_norm, *rest:
      dp_grad.clipped_grad_sum(loss, argnums, 1e6))


@pytest.mark.parametrize("trust", ["local", "aggregate"])
def test_a_sound_mechanism_stays_below_its_claim(trust):
  mechanism = mechanisms.make_mechanism(trust, clients_per_round=4)
  result = audit.white_box(mechanism, _SCHEDULE, key=jax.random.key(1))
  assert 1.0 < result.epsilon_claimed < 1.6
  assert result.epsilon_lower_bound <= result.epsilon_claimed
  assert (result.canaries, result.trust) == (1000, trust)
  assert 400 < result.included < 600


@pytest.mark.parametrize("trust", ["local", "aggregate"])
@pytest.mark.parametrize("break_it", [_noise_off, _clipping_off])
def test_a_broken_mechanism_is_caught_far_above_its_claim(trust, break_it):
  mechanism = break_it(mechanisms.make_mechanism(trust, clients_per_round=4))
  result = audit.white_box(mechanism, _SCHEDULE, key=jax.random.key(2))
  assert result.epsilon_lower_bound > 3 * result.epsilon_claimed


def test_a_clients_share_of_aggregate_noise_alone_is_not_private():
  """Under `aggregate` each client adds σ/√m: an adversary who saw one
  client's message (no secure aggregation) would learn far more than ε."""
  mechanism = mechanisms.make_mechanism("aggregate", clients_per_round=16)
  schedule = _SCHEDULE._replace(clients=16)
  seen_alone = audit.white_box(mechanism, schedule, key=jax.random.key(3),
                               observe="client")
  assert seen_alone.observation == "client"
  assert seen_alone.epsilon_lower_bound > seen_alone.epsilon_claimed


def test_scores_separate_only_through_the_release():
  """With clipping and noise working, included canaries score C per
  sampled step on average and the others 0."""
  mechanism = mechanisms.local()
  schedule = _SCHEDULE._replace(clients=1, noise_multiplier=0.5)
  scores, included = audit.canary_scores(mechanism, schedule, 1000,
                                         jax.random.key(4))
  expected = schedule.steps * schedule.sampling_rate * schedule.clip_norm
  noise = schedule.noise_multiplier * schedule.clip_norm * schedule.steps**0.5
  assert scores[included].mean() == pytest.approx(expected, abs=0.3 * noise)
  assert abs(scores[~included].mean()) < 0.3 * noise


@pytest.mark.parametrize("kwargs,message", [
    (dict(num_canaries=1), "num_canaries"),
    (dict(observe="server"), "observe"),
])
def test_bad_audit_arguments_are_named(kwargs, message):
  with pytest.raises(ValueError, match=message):
    audit.white_box(mechanisms.local(), _SCHEDULE, **kwargs)


def test_input_canaries_are_reproducible_and_half_included():
  a = audit.InputCanaries.draw(3, 2000, (8, 8, 1), 10, 5)
  b = audit.InputCanaries.draw(3, 2000, (8, 8, 1), 10, 5)
  np.testing.assert_array_equal(a.x, b.x)
  assert a.x.shape == (2000, 8, 8, 1) and a.y.max() < 10 and a.owner.max() < 5
  assert 900 < a.included.sum() < 1100


def test_input_canary_scores_are_the_log_probability_of_the_label():
  canaries = audit.InputCanaries.draw(0, 6, (2,), 3, 1)
  logits = np.arange(18, dtype=np.float32).reshape(6, 3) / 7
  scores = audit.input_canary_scores(lambda x: jnp.asarray(logits), canaries)
  want = jax.nn.log_softmax(logits)[np.arange(6), canaries.y]
  np.testing.assert_allclose(scores, want, rtol=1e-5)


def test_included_input_canaries_join_their_owners_training_split():
  x, y, splits = digits.federation()
  x, y = np.asarray(x), np.asarray(y)
  canaries = audit.InputCanaries.draw(1, 40, x.shape[1:], 10, len(splits.train))
  new_x, new_y, new_splits = job_lib._with_canaries(x, y, splits, canaries)
  added = len(new_x) - len(x)
  assert added == canaries.included.sum()
  np.testing.assert_array_equal(new_x[len(x):],
                                canaries.x[canaries.included])
  for k, (old, new) in enumerate(zip(splits.train, new_splits.train)):
    extra = np.setdiff1d(new, old)
    assert len(extra) == np.sum(canaries.included & (canaries.owner == k))
    assert (extra >= len(x)).all()
  assert new_splits.val == splits.val  # Validation splits are untouched.


def _client_level(quantile=0.0, **broken):
  mechanism = mechanisms.make_mechanism(
      "aggregate", "client", clients_per_round=100, clip_norm=1.0,
      arch_clip_norm=0.1, adaptive_quantile=quantile)
  if broken.get("noise_off"):
    release = mechanism.release
    mechanism = mechanism._replace(
        release=lambda sums, w, sigma, key, state: release(sums, w, 0.0, key,
                                                           state))
  if broken.get("clipping_off"):
    loose = mechanisms.make_mechanism(
        "aggregate", "client", clients_per_round=100, clip_norm=1e6,
        arch_clip_norm=1e5)
    mechanism = mechanism._replace(combine=loose.combine)
  return mechanism


# Canary clients: 100 rounds at q_c = 0.1, σ = 3: the same claim as above.
_CLIENT_SCHEDULE = _SCHEDULE._replace(clients=1)


@pytest.mark.parametrize("quantile", [0.0, 0.5])
def test_canary_clients_stay_below_the_client_level_claim(quantile):
  result = audit.white_box(_client_level(quantile), _CLIENT_SCHEDULE,
                           key=jax.random.key(4))
  assert 1.0 < result.epsilon_claimed < 1.6
  assert result.epsilon_lower_bound <= result.epsilon_claimed
  assert result.observation == "aggregate"


@pytest.mark.parametrize("broken", ["noise_off", "clipping_off"])
def test_canary_clients_catch_a_broken_client_level_mechanism(broken):
  result = audit.white_box(_client_level(**{broken: True}), _CLIENT_SCHEDULE,
                           key=jax.random.key(5))
  assert result.epsilon_lower_bound > 3 * result.epsilon_claimed
