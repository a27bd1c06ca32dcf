"""The local mechanism: noise std, bounded scalar releases, registry, jit == eager."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from fedsearch import privacy
from fedsearch.errors import ConfigError
from fedsearch.privacy import accounting, mechanisms


@pytest.mark.parametrize("sigma,clip,expected_batch", [(1.0, 1.0, 1.0),
                                                       (0.7, 2.0, 8.0)])
@pytest.mark.parametrize("source", ["module", "mechanism"])
def test_noise_std_is_sigma_times_clip_over_expected_batch(
    sigma, clip, expected_batch, source):
  make = (privacy.private_optimizer if source == "module"
          else privacy.make_mechanism("local").private_optimizer)
  opt = make(sigma * clip, jax.random.key(3), expected_batch, optax.identity())
  zeros = jnp.zeros(200_000)
  noisy, _ = opt.update(zeros, opt.init(zeros))
  std = float(jnp.std(noisy))
  assert std == pytest.approx(sigma * clip / expected_batch, rel=0.01)
  assert float(jnp.mean(noisy)) == pytest.approx(0.0, abs=0.01 * std)


def test_private_optimizer_divides_by_the_expected_batch_then_steps():
  # No noise: (sum / expected batch) then SGD's -lr·g.
  opt = mechanisms.private_optimizer(0.0, jax.random.key(0), 4.0,
                                     optax.sgd(0.5))
  total = {"w": jnp.array([8.0, -4.0])}
  update, _ = opt.update(total, opt.init(total), total)
  chex.assert_trees_all_close(update, {"w": jnp.array([-1.0, 0.5])})


_ADVERSARIAL = jnp.array([0.3, 1e30, -1e30, jnp.nan, jnp.inf, -jnp.inf, 0.69,
                          -0.7, 5.0])


@pytest.mark.parametrize("bound", [0.7, 2.0])
@pytest.mark.parametrize("normaliser", [1.0, 7.0])
def test_privatized_mean_moves_by_at_most_the_bound(bound, normaliser):
  # Remove each example in turn (as padding): the noiseless release moves
  # by at most bound / normaliser, whatever the values (±1e30, NaN, ±inf).
  padding = jnp.zeros(len(_ADVERSARIAL), bool)
  release = lambda pad: mechanisms.privatized_mean(
      _ADVERSARIAL, pad, bound, 0.0, jax.random.key(0), normaliser)
  full = release(padding)
  assert np.isfinite(float(full))
  moves = [abs(float(full - release(padding.at[i].set(True))))
           for i in range(len(_ADVERSARIAL))]
  assert max(moves) <= bound / normaliser * (1 + 1e-6)
  # The bound is reached (±1e30 are clipped to ±bound), so it is the
  # sensitivity and not a loose upper bound.
  assert max(moves) == pytest.approx(bound / normaliser, rel=1e-6)
  # Non-finite values count as 0: removing them changes nothing.
  for i in (3, 4, 5):
    assert moves[i] == 0.0


def test_privatized_mean_on_hand_numbers():
  # clip(v, ±1) = (0.5, 1, -1, 0 [NaN], [padding]) -> sum 0.5, / 4.
  values = jnp.array([0.5, 3.0, -2.0, jnp.nan, 100.0])
  padding = jnp.array([False, False, False, False, True])
  got = mechanisms.privatized_mean(values, padding, 1.0, 0.0,
                                   jax.random.key(0), 4.0)
  assert float(got) == pytest.approx(0.125)
  # A padding row adds nothing: the same as leaving it out.
  chex.assert_trees_all_close(
      got, mechanisms.privatized_mean(values[:4], padding[:4], 1.0, 0.0,
                                      jax.random.key(0), 4.0))


@pytest.mark.parametrize("sigma,bound,normaliser", [(3.0, 2.0, 10.0),
                                                    (1.0, 0.5, 20.0)])
def test_privatized_mean_noise_std_is_sigma_times_bound_over_normaliser(
    sigma, bound, normaliser):
  keys = jax.random.split(jax.random.key(1), 4000)
  draws = jax.vmap(lambda k: mechanisms.privatized_mean(
      jnp.zeros(5), jnp.zeros(5, bool), bound, sigma, k, normaliser))(keys)
  assert float(jnp.std(draws)) == pytest.approx(sigma * bound / normaliser,
                                                rel=0.05)
  assert float(jnp.mean(draws)) == pytest.approx(
      0.0, abs=4 * sigma * bound / normaliser / np.sqrt(4000))


def test_privatized_mean_noise_is_the_add_noise_hook():
  # The mechanism's noised_sum receives the clipped sum and σ·bound.
  seen = []

  def add_noise(total, stddev, key):
    del key
    seen.append(float(stddev))
    return total + 10.0

  got = mechanisms.privatized_mean(jnp.array([1.0, 5.0]), jnp.zeros(2, bool),
                                   2.0, 3.0, jax.random.key(0), 2.0,
                                   add_noise)
  assert float(got) == pytest.approx((1.0 + 2.0 + 10.0) / 2.0)
  assert seen == [6.0]


def test_noised_sum_is_the_gaussian_mechanism():
  keys = jax.random.split(jax.random.key(2), 4000)
  draws = jax.vmap(lambda k: mechanisms.noised_sum(jnp.float32(3.0), 0.5, k))(
      keys)
  assert float(jnp.mean(draws)) == pytest.approx(3.0, abs=0.05)
  assert float(jnp.std(draws)) == pytest.approx(0.5, rel=0.05)


def test_local_mechanism_members():
  mechanism = mechanisms.make_mechanism("local")
  assert mechanism.name == "local" and mechanism.unit == "example"
  assert mechanism.release_stream is accounting.ReleaseStream
  # FedAvg: weights (1, 3) -> 0.25·a + 0.75·b on every leaf.
  stacked = {"w": jnp.array([[0.0, 4.0], [8.0, 0.0]])}
  chex.assert_trees_all_close(
      mechanism.aggregate(stacked, jnp.array([1.0, 3.0])),
      {"w": jnp.array([6.0, 1.0])})


def test_unknown_trust_is_refused_with_the_choices():
  with pytest.raises(ConfigError,
                     match=r"privacy\.trust='central'.*\['aggregate', 'local'\]"):
    mechanisms.make_mechanism("central")


def test_unknown_dp_backend_is_refused():
  with pytest.raises(ConfigError, match="privacy.dp_backend.*'ghost'"):
    mechanisms.local(dp_backend="opacus")
  with pytest.raises(ConfigError, match="privacy.dp_backend='bad'"):
    mechanisms.make_mechanism("local", dp_backend="bad")


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("expected_batch", [1.0, 6.0])
def test_private_optimizer_update_jit_equals_eager(masked, expected_batch):
  # Noise included: the same key draws the same noise under jit.
  opt = mechanisms.private_optimizer(0.8, jax.random.key(5), expected_batch,
                                     optax.adam(0.1))
  grads = {"a": jnp.linspace(-1.0, 1.0, 7), "b": jnp.ones((2, 3))}
  mask = {"a": jnp.bool_(True), "b": jnp.bool_(False)} if masked else None

  def two_steps(grads):
    state = opt.init(grads)
    first, state = opt.update(grads, state, grads, noise_mask=mask)
    second, state = opt.update(grads, state, grads, noise_mask=mask)
    return first, second

  with jax.disable_jit():
    eager = two_steps(grads)
  jitted = jax.jit(two_steps)(grads)
  chex.assert_trees_all_close(jitted, eager, rtol=1e-5, atol=1e-6)
  # And the noise is really there (an update differs from noiseless Adam).
  noiseless = mechanisms.private_optimizer(0.0, jax.random.key(5),
                                           expected_batch, optax.adam(0.1))
  plain, _ = noiseless.update(grads, noiseless.init(grads), grads)
  assert not np.allclose(eager[0]["a"], plain["a"])
  # The two steps draw different noise (the privatizer's key advances).
  assert not np.allclose(eager[0]["a"], eager[1]["a"])


@pytest.mark.parametrize("sigma", [0.0, 2.0])
@pytest.mark.parametrize("padded", [False, True])
def test_privatized_mean_jit_equals_eager(sigma, padded):
  padding = jnp.zeros(len(_ADVERSARIAL), bool).at[1].set(padded)
  release = lambda key: mechanisms.privatized_mean(
      _ADVERSARIAL, padding, 0.7, sigma, key, 3.0)
  key = jax.random.key(7)
  with jax.disable_jit():
    eager = release(key)
  chex.assert_trees_all_close(jax.jit(release)(key), eager, rtol=1e-6)


@pytest.mark.parametrize("clients", [1, 4, 10])
def test_aggregate_shares_sum_to_the_stated_noise(clients):
  """Each client's share has std σ·S/√m; the sum of the m shares has σ·S
  (fixed seed, 20,000 coordinates: the sample std is within 2 %)."""
  stddev, dim = 1.5, 20_000
  mechanism = mechanisms.make_mechanism("aggregate", clients_per_round=clients)
  zeros = {"w": jnp.zeros(dim)}
  shares = []
  for k in range(clients):
    opt = mechanism.private_optimizer(stddev, jax.random.key(k), 1.0,
                                      optax.identity())
    shares.append(opt.update(zeros, opt.init(zeros), zeros)[0]["w"])
  shares = jnp.stack(shares)
  assert float(shares[0].std()) == pytest.approx(stddev / clients**0.5,
                                                 rel=0.02)
  assert float(shares.sum(0).std()) == pytest.approx(stddev, rel=0.02)
  # Scalar releases (rewards, probes, feedback): one draw per key.
  release = jax.vmap(lambda key: mechanism.noised_sum(0.0, stddev, key))
  scalar = jnp.stack([release(jax.random.split(jax.random.key(100 + k), dim))
                      for k in range(clients)])
  assert float(scalar.sum(0).std()) == pytest.approx(stddev, rel=0.02)
