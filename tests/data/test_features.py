"""ScatterNet features: filters on hand numbers, shapes, symmetry, the cache."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fedsearch import data
from fedsearch.data import features
from fedsearch.errors import ConfigError


@pytest.mark.parametrize("size", [36, 40])
def test_wavelets_have_zero_mean_and_the_low_pass_keeps_constants(size):
  wavelets, low_pass = features.filter_bank(size)
  chex.assert_shape(wavelets, (16, size, size))
  # A Fourier transform's DC bin is the filter's sum.
  np.testing.assert_allclose(wavelets[:, 0, 0], 0.0, atol=1e-6)
  assert low_pass[0, 0] == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("shape,out", [((28, 28, 1), (7, 7, 81)),
                                       ((32, 32, 3), (8, 8, 243))])
def test_shape_is_kymatios(shape, out):
  x = jax.random.normal(jax.random.key(0), (2, *shape))
  chex.assert_shape(features.scattering(x), (2, *out))
  assert features.scattering_channels() == 81


def test_a_constant_image_has_only_its_order_zero_coefficient():
  out = features.scattering(jnp.full((1, 28, 28, 1), 0.7))
  np.testing.assert_allclose(out[..., 0], 0.7, atol=1e-5)
  np.testing.assert_allclose(out[..., 1:], 0.0, atol=1e-5)


def test_rotating_by_90_degrees_shifts_the_orientations_by_four():
  """θ steps by π/8, so a quarter turn maps orientation t to t + 4 (mod 8)
  at every scale. The image is zero near its border (as a digit is), so the
  one-pixel crop, which a quarter turn shifts, cuts nothing."""
  x = jax.random.normal(jax.random.key(1), (2, 28, 28, 1))
  x = x * jnp.zeros((28, 28, 1)).at[8:20, 8:20].set(1.0)
  turned = jnp.rot90(x, 1, axes=(1, 2))
  order1 = lambda s: s[..., 1:17].sum(axis=(1, 2)).reshape(2, 2, 8)
  a, b = order1(features.scattering(x)), order1(features.scattering(turned))
  np.testing.assert_allclose(np.roll(a, 4, axis=-1), b, rtol=0.01)
  assert not np.allclose(a, b, rtol=0.05)  # The check can fail.


def test_jit_equals_eager():
  x = jax.random.normal(jax.random.key(2), (3, 28, 28, 1))
  chex.assert_trees_all_close(jax.jit(features.scattering)(x),
                              features.scattering(x), atol=1e-5)


def test_non_square_images_are_refused():
  with pytest.raises(ValueError, match="square"):
    features.scattering(jnp.zeros((1, 28, 20, 1)))


def test_transform_refuses_unknown_features_and_passes_pixels():
  x = np.zeros((2, 8, 8, 1), np.float32)
  assert data.transform("pixels", x) is x
  with pytest.raises(ConfigError, match="features='wavelets'.*pixels"):
    data.transform("wavelets", x)


def test_cached_transform_reads_the_cache_the_first_call_wrote(
    tmp_path, monkeypatch):
  x = np.asarray(jax.random.normal(jax.random.key(3), (5, 16, 16, 1)))
  first = data.cached_transform("scatter", x, tmp_path)
  assert len(list(tmp_path.glob("scatter_*.npy"))) == 1
  def refuse(*_):
    raise AssertionError("recomputed despite the cache")
  monkeypatch.setattr(features, "transform", refuse)
  np.testing.assert_array_equal(data.cached_transform("scatter", x, tmp_path),
                                first)
  with pytest.raises(AssertionError, match="recomputed"):
    data.cached_transform("scatter", x + 1, tmp_path)
