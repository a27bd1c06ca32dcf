"""Secret or seeded randomness: the seeded mode keeps the old draws, the
secret one comes from the OS and lives in the workdir only."""

import jax
import numpy as np
import pytest

from fedsearch.errors import ConfigError
from fedsearch.privacy import randomness


def test_seeded_mode_draws_what_the_seed_always_drew():
  r = randomness.seeded(7)
  np.testing.assert_array_equal(
      jax.random.key_data(r.noise_key()),
      jax.random.key_data(jax.random.key(8)))
  np.testing.assert_array_equal(
      r.rng(3, 2, 1).random(5), np.random.default_rng([7, 3, 2, 1]).random(5))


def test_fresh_secrets_differ_and_are_not_the_seed():
  a = randomness.fresh("secret", seed=0)
  b = randomness.fresh("secret", seed=0)
  assert a.mode == "secret" and a.entropy != b.entropy
  assert 0 <= a.entropy < 2**128
  draws = lambda r: jax.random.normal(r.noise_key(), (4,))
  assert not np.allclose(draws(a), draws(b))
  assert not np.allclose(draws(a), draws(randomness.seeded(0)))


def test_a_run_reads_back_its_secret_and_draws_the_same(tmp_path):
  first = randomness.for_run("secret", 0, tmp_path)
  randomness.write_secret(tmp_path, first.entropy)
  again = randomness.for_run("secret", 0, tmp_path)
  assert again == first
  np.testing.assert_array_equal(
      jax.random.normal(again.noise_key(), (3,)),
      jax.random.normal(first.noise_key(), (3,)))
  assert again.rng(1, 2).integers(1 << 30) == first.rng(1, 2).integers(1 << 30)
  # The seeded mode ignores the file.
  assert randomness.for_run("seeded", 5, tmp_path) == randomness.seeded(5)


@pytest.mark.parametrize("text", ["not hex", "-1", "1" * 40])
def test_a_damaged_secret_is_named(tmp_path, text):
  (tmp_path / randomness.SECRET_FILE).write_text(text)
  with pytest.raises(ConfigError, match="secret_key is damaged"):
    randomness.for_run("secret", 0, tmp_path)


def test_an_unknown_mode_is_named():
  with pytest.raises(ConfigError, match=r"privacy\.randomness='os'.*secret"):
    randomness.fresh("os", 0)
