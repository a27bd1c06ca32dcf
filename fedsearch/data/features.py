"""Handcrafted input features: the 2-D scattering transform (ScatterNet).

Tramer & Boneh (ICLR 2021) showed that under DP-SGD a small CNN on
ScatterNet features (Oyallon & Mallat's scattering, J = 2 scales, L = 8
orientations, order 2: 81 channels per input channel at a quarter of the
resolution) beats the end-to-end CNN at the same ε (MNIST 98.7 vs 98.1 %,
Fashion-MNIST 89.0 vs 86.0 %). The filters are data-independent and each
example is transformed on its own, so the features cost no privacy.

The filter bank follows Mallat's Morlet wavelets as kymatio builds them
(σ = 0.8·2^j, ξ = 3π/4·2^-j, slant 4/L, a Gaussian low-pass at scale J,
reflect padding to a multiple of 2^J with a one-pixel border cropped after
subsampling), so the output has kymatio's shape and channel order (order 0,
then order 1 by (j, θ), then order 2 by (j1, j2, θ1, θ2), kymatio's
order for J = 2). It computes every
map at the padded resolution and subsamples once at the end, where kymatio
subsamples along the way; the two agree up to the aliasing kymatio's
intermediate subsampling allows. (kymatio itself is not a dependency: its
0.3 release no longer imports with SciPy >= 1.14.)
"""

import functools
import hashlib
import os
import pathlib

import jax
import jax.numpy as jnp
import numpy as np

from fedsearch.errors import ConfigError

FEATURES = ("pixels", "scatter")
SCALES, ORIENTATIONS = 2, 8
# Transformed per chunk so that a dataset's complex maps never sit in memory
# at once (81 maps of 36x36 complex64 per image).
_CHUNK = 1024


def _gabor(size: int, sigma: float, theta: float, xi: float,
           slant: float = 1.0) -> np.ndarray:
  """A Gabor filter centred at pixel (0, 0) of a size x size periodic grid."""
  rotation = np.array([[np.cos(theta), -np.sin(theta)],
                       [np.sin(theta), np.cos(theta)]])
  curvature = (rotation @ np.diag([1.0, slant**2]) @ rotation.T
               / (2 * sigma**2))
  total = np.zeros((size, size), np.complex128)
  # Summing the shifted copies periodises the filter on the grid.
  for ex in range(-2, 3):
    for ey in range(-2, 3):
      xx, yy = np.mgrid[ex * size:(ex + 1) * size, ey * size:(ey + 1) * size]
      total += np.exp(
          -(curvature[0, 0] * xx**2 + (curvature[0, 1] + curvature[1, 0])
            * xx * yy + curvature[1, 1] * yy**2)
          + 1j * xi * (xx * np.cos(theta) + yy * np.sin(theta)))
  return total * slant / (2 * np.pi * sigma**2)


def _morlet(size, sigma, theta, xi, slant) -> np.ndarray:
  """Gabor minus its envelope scaled to zero mean: a band-pass wavelet."""
  wave = _gabor(size, sigma, theta, xi, slant)
  envelope = _gabor(size, sigma, theta, 0.0, slant)
  return wave - wave.sum() / envelope.sum() * envelope


@functools.lru_cache(maxsize=None)
def filter_bank(size: int, scales: int = SCALES,
                orientations: int = ORIENTATIONS
                ) -> tuple[np.ndarray, np.ndarray]:
  """(wavelets (scales * orientations, size, size), low-pass (size, size)),
  real Fourier transforms on a size x size grid, wavelets ordered by (j, θ)."""
  wavelets = [
      np.fft.fft2(_morlet(size, 0.8 * 2**j,
                          (orientations // 2 - 1 - t) * np.pi / orientations,
                          0.75 * np.pi / 2**j, 4.0 / orientations)).real
      for j in range(scales) for t in range(orientations)]
  low_pass = np.fft.fft2(_gabor(size, 0.8 * 2**(scales - 1), 0.0, 0.0)).real
  return (np.stack(wavelets).astype(np.float32),
          low_pass.astype(np.float32))


def padded_size(size: int, scales: int = SCALES) -> int:
  return ((size + 2**scales) // 2**scales + 1) * 2**scales


def scattering(images: jax.Array, scales: int = SCALES,
               orientations: int = ORIENTATIONS) -> jax.Array:
  """Order-2 scattering of square NHWC images: (N, H/2^J, W/2^J, K·C) with
  K = 1 + J·L + J(J-1)/2·L² channels per input channel (81 for J=2, L=8)."""
  n, height, width, channels = images.shape
  if height != width:
    raise ValueError(f"scattering takes square images, got {height}x{width}")
  size = padded_size(height, scales)
  before = (size - height) // 2
  x = jnp.moveaxis(images, -1, 1)  # (N, C, H, W)
  x = jnp.pad(x, ((0, 0), (0, 0), (before, size - height - before),
                  (before, size - height - before)), mode="reflect")
  wavelets, low_pass = (jnp.asarray(f) for f in filter_bank(
      size, scales, orientations))
  step = 2**scales

  def smooth(maps_hat):
    """Low-pass, subsample by 2^J, crop the one-pixel padded border."""
    out = jnp.fft.ifft2(maps_hat * low_pass).real[..., ::step, ::step]
    return out[..., 1:-1, 1:-1]

  x_hat = jnp.fft.fft2(x)
  u1_hat = jnp.fft.fft2(jnp.abs(jnp.fft.ifft2(x_hat[:, :, None] * wavelets)))
  order2 = []
  for j1 in range(scales):
    for j2 in range(j1 + 1, scales):
      first = u1_hat[:, :, j1 * orientations:(j1 + 1) * orientations, None]
      second = wavelets[j2 * orientations:(j2 + 1) * orientations]
      u2 = jnp.abs(jnp.fft.ifft2(first * second))
      order2.append(u2.reshape(n, channels, -1, size, size))
  paths = [smooth(x_hat)[:, :, None], smooth(u1_hat)]
  paths += [smooth(jnp.fft.fft2(u2)) for u2 in order2]
  out = jnp.concatenate(paths, axis=2)  # (N, C, K, h, w)
  out = out.reshape(n, -1, *out.shape[-2:])
  return jnp.moveaxis(out, 1, -1)


def scattering_channels(scales: int = SCALES,
                        orientations: int = ORIENTATIONS) -> int:
  return 1 + scales * orientations + (
      scales * (scales - 1) // 2 * orientations**2)


def transform(features: str, images: np.ndarray) -> np.ndarray:
  """`images` (normalised NHWC float) as the model's input `features`."""
  if features not in FEATURES:
    raise ConfigError(f"features={features!r} is not allowed; choose one of"
                      f" {list(FEATURES)}")
  if features == "pixels":
    return images
  run = jax.jit(scattering)
  return np.concatenate([np.asarray(run(jnp.asarray(images[i:i + _CHUNK])))
                         for i in range(0, len(images), _CHUNK)])


def transform_flops(features: str, image_shape) -> float:
  """FLOPs of transforming one image of `image_shape` (XLA's count)."""
  if features == "pixels":
    return 0.0
  compiled = jax.jit(scattering).lower(
      jnp.zeros((1, *image_shape))).compile()
  return float(compiled.cost_analysis().get("flops", 0.0))


def cached_transform(features: str, images: np.ndarray,
                     cache_dir: str | os.PathLike) -> np.ndarray:
  """`transform`, memoised on disk by the images' digest: every run of a
  table transforms the same 70,000 images (about a minute on 2 cores)."""
  if features == "pixels":
    return images
  digest = hashlib.sha256(images.tobytes()).hexdigest()[:20]
  path = pathlib.Path(cache_dir) / f"{features}_{digest}.npy"
  if path.is_file():
    return np.load(path)
  out = transform(features, images)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_suffix(".tmp.npy")
  np.save(tmp, out)
  os.replace(tmp, path)  # Atomic: a crash never leaves a truncated cache.
  return out
