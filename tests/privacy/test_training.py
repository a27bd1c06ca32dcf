"""`make_private`: σ from the accountant, padding adds nothing, the README example."""

import contextlib
import io
import pathlib
import re

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import fedsearch
from fedsearch import privacy
from fedsearch.privacy import accounting

ROOT = pathlib.Path(__file__).resolve().parents[2]


class Tiny(nn.Module):
  @nn.compact
  def __call__(self, x):
    return nn.Dense(3)(jnp.tanh(nn.Dense(4)(x)))


def _private(backend="vmap", **overrides):
  kwargs = dict(examples=1000, expected_batch_size=50, steps=40, epsilon=2.0,
                delta=1e-5, clip_norm=0.5, backend=backend)
  kwargs.update(overrides)
  return privacy.make_private(Tiny(), optax.sgd(0.1), jax.random.key(7),
                              **kwargs)


def test_sigma_spends_the_target_at_the_delta_left_after_truncation():
  dp = _private()
  assert dp.sampling_rate == pytest.approx(0.05)
  stream = lambda sigma: [accounting.ReleaseStream("weights", 0.05, 40,
                                                   sigma)]
  assert dp.noise_multiplier == pytest.approx(
      accounting.calibrate_noise_multiplier(stream, 2.0, 0.99e-5), rel=1e-9)
  assert dp.epsilon(40) == pytest.approx(2.0, rel=1e-3)
  assert dp.epsilon(40) <= 2.0 and dp.epsilon(10) < dp.epsilon(40)
  # The static batch is well above the expected 50 (a rare truncation).
  assert 60 < dp.batch_size < 120


def test_batches_are_poisson_rows_padded_to_the_static_size():
  dp = _private()
  draws = list(dp.batches(np.random.default_rng(0)))
  assert len(draws) == dp.steps
  sizes = [int((~padding).sum()) for _, padding in draws]
  assert 35 < np.mean(sizes) < 65
  for rows, padding in draws:
    chex.assert_shape((rows, padding), (dp.batch_size,))
    assert len(set(rows[~padding].tolist())) == (~padding).sum()


@pytest.mark.parametrize("backend", ["vmap", "ghost"])
def test_padding_rows_add_nothing_and_backends_agree(backend):
  dp, reference = _private(backend), _private("vmap")
  x = jax.random.normal(jax.random.key(0), (dp.batch_size, 5))
  y = jnp.arange(dp.batch_size) % 3
  padding = jnp.arange(dp.batch_size) >= 40
  params = Tiny().init(jax.random.key(1), x[:1])["params"]
  garbage = x.at[40:].set(1e6)
  stepped = dp.step(params, dp.init(params), garbage, y, padding)[0]
  expected = reference.step(params, reference.init(params), x, y, padding)[0]
  chex.assert_trees_all_close(stepped, expected, atol=1e-5)


@pytest.mark.parametrize("field,value", [("examples", 0), ("epsilon", -1.0),
                                         ("backend", "opacus"),
                                         ("expected_batch_size", 5000)])
def test_bad_arguments_are_named(field, value):
  with pytest.raises(fedsearch.ConfigError, match=field):
    _private(**{field: value})


@pytest.mark.parametrize("backend", ["ghost", "vmap"])
def test_readme_example_trains_a_stock_flax_model_privately(backend):
  text = (ROOT / "README.md").read_text()
  block = re.search(r"<!-- make_private example[^>]*-->\s*```python\n(.*?)```",
                    text, re.S).group(1)
  assert 'backend="ghost"' in block
  block = block.replace('backend="ghost"', f'backend="{backend}"')
  assert len([line for line in block.splitlines() if line.strip()]) <= 20
  out = io.StringIO()
  with contextlib.redirect_stdout(out):
    exec(block, {})
  printed = out.getvalue()
  accuracy, epsilon = re.fullmatch(r"([\d.]+) at epsilon ([\d.]+), sigma"
                                   r" [\d.]+\n", printed).groups()
  assert float(accuracy) >= 0.4, printed  # 4x chance, at the stated ε.
  assert float(epsilon) == pytest.approx(3.0, abs=0.01)
