"""The reward-ranking diagnostic: its noise redraw on hand numbers, and its
summary's rank correlations."""

import types

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from fedsearch.privacy import mechanisms
from tests.experiments.scripts import import_script

_SIZE = 40_000  # Coordinates: the empirical std is within ~1 %.
_SHARED_FLAGS = ("dataset", "seeds", "starts", "horizons", "data_dir",
                 "long_run", "rows", "out")


@pytest.fixture(scope="module")
def reward_horizon():
  yield from import_script("experiments.reward_horizon", _SHARED_FLAGS)


def _noise_optimizer(stddev, batch, learning_rate, momentum):
  return mechanisms.private_optimizer(
      stddev, jax.random.key(0), batch,
      optax.sgd(learning_rate, momentum or None))


@pytest.mark.parametrize("steps,momentum", [(1, 0.0), (4, 0.0), (4, 0.9),
                                            (3, 0.5)])
def test_noise_displacement_has_the_heavy_ball_sums_std(reward_horizon, steps,
                                                        momentum):
  # Step t's noise N(0, (σC/B)²) reaches the end through the heavy-ball
  # weights lr·Σ_{k<S−t} m^k: std = (σC/B)·lr·√Σ_t (Σ_{k<S−t} m^k)².
  stddev, batch, lr = 0.3, 8.0, 2.0
  z = reward_horizon.noise_displacement(
      _noise_optimizer(stddev, batch, lr, momentum), {"w": jnp.zeros(_SIZE)},
      steps, lambda index: None)["w"]
  reach = [sum(momentum**k for k in range(steps - t)) for t in range(steps)]
  expected = stddev / batch * lr * np.sqrt(np.sum(np.square(reach)))
  assert float(jnp.std(z)) == pytest.approx(expected, rel=0.03)
  assert abs(float(jnp.mean(z))) < 4 * expected / _SIZE**0.5


def test_noise_displacement_leaves_masked_weights_alone(reward_horizon):
  z = reward_horizon.noise_displacement(
      _noise_optimizer(0.3, 8.0, 2.0, 0.9),
      {"a": jnp.zeros(5), "b": jnp.zeros(3)}, 2,
      lambda index: {"a": jnp.bool_(True), "b": jnp.bool_(False)})
  assert np.all(np.asarray(z["b"]) == 0.0)
  assert np.all(np.asarray(z["a"]) != 0.0)


def _rows(reward):
  return [{"seed": 0, "start": 0, "config": c, "learning_rate": lr,
           "momentum": 0.5, "gain": reward(c), "released_1": float(c)}
          for c, lr in enumerate([0.5, 1.0, 2.0])]


@pytest.mark.parametrize("reward,rho", [(lambda c: 10.0 * c, "1.00"),
                                        (lambda c: -c, "-1.00")])
def test_summary_ranks_each_reward_against_the_targets(reward_horizon, reward,
                                                       rho):
  text = reward_horizon.summarise(
      _rows(reward), {(0.5, 0.5): 3.0, (1.0, 0.5): 2.0, (2.0, 0.5): 1.0})
  gain_line = next(l for l in text.splitlines() if l.startswith("| gain |"))
  # Against released_1, then against the long run (the reverse order).
  flipped = "-1.00" if rho == "1.00" else "1.00"
  assert gain_line == f"| gain | {rho} | {flipped} |"


def test_long_run_entries_are_parsed_or_named(reward_horizon):
  assert reward_horizon._long_run(["2:0.9:67.8"]) == {(2.0, 0.9): 67.8}
  with pytest.raises(ValueError, match="LR:MOMENTUM:ACCURACY"):
    reward_horizon._long_run(["2:67.8"])


def test_released_rewards_are_each_measures_decrease_at_each_horizon(
    reward_horizon):
  # A released model that is its round count; measures that read it on two
  # clients' splits: loss 1/(1 + t), error 0.5 − 0.1t, soft error 0.8 − 0.2t.
  table = {"loss": lambda t: 1.0 / (1.0 + t),
           "error": lambda t: 0.5 - 0.1 * t,
           "soft_error": lambda t: 0.8 - 0.2 * t}

  class _Released:
    def __init__(self, rounds):
      self.params = rounds

  def apply(state, x, y, inputs, key, round_, aggregate):
    return _Released(state.params + 1), None

  def measured(name, params):
    return np.full(3, table[name](params))

  fake = types.SimpleNamespace(
      phase=types.SimpleNamespace(algorithm=types.SimpleNamespace(apply=apply)),
      job=types.SimpleNamespace(federation=types.SimpleNamespace(x=None,
                                                                 y=None)),
      base_key=None, round_inputs=lambda round_, config: None)
  before = {name: measured(name, 0) for name in table}
  out = reward_horizon._Probe.released_rewards(
      fake, _Released(0), 0, 0, [(measured, before)] * 2, [1, 3])
  assert out == pytest.approx({
      "released_1": 0.5, "released_3": 0.75,
      "released_accuracy_1": 0.1, "released_accuracy_3": 0.3,
      "released_soft_error_1": 0.2, "released_soft_error_3": 0.6})
