"""Supernet with one-hot logits == derived model; models as `privacy.Model`; jit == eager."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fedsearch import models
from fedsearch import search_space as ss
from fedsearch.privacy import Model

_SHAPE = (8, 8, 1)


def _space(op_set, **kw):
  kw.setdefault("max_in_edges", 2 if op_set == "darts" else 0)
  kw.setdefault("cells", 2)
  return ss.SearchSpace(op_set=op_set, channels=4, nodes=2, **kw)


def genotype_arch_params(genotype, space):
  """Logits whose softmax is exactly one-hot on the genotype (0 / -inf).

  Dropped edges are one-hot on `none`. With these logits the supernet computes
  exactly the derived model. (Removed from the library, which never used it.)
  """
  ss.check_genotype(genotype, space)
  names = space.op_names
  logits = np.full((space.num_edges, len(names)), -np.inf, np.float32)
  logits[:, names.index("none")] = 0.0
  for to, src, op in genotype.edges:
    row = space.edge_index(to, src)
    logits[row, :] = -np.inf
    logits[row, names.index(op)] = 0.0
  return {"normal": jnp.asarray(logits)}


@pytest.mark.parametrize("op_set", ["dpnas", "darts"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_one_hot_supernet_equals_derived_model(op_set, seed):
  space = _space(op_set)
  keys = jax.random.split(jax.random.key(seed), 3)
  weights = ss.init_supernet(space, keys[0], _SHAPE)
  # Large random logits: a genotype far from uniform, different per seed.
  arch = ss.init_arch_params(space, scale=3.0, key=keys[1])
  genotype = ss.derive(arch, space)
  x = jax.random.normal(keys[2], (6, *_SHAPE))
  supernet_out = ss.supernet_model(space).apply(
      weights, genotype_arch_params(genotype, space), x)
  derived_weights = ss.extract_weights(weights, space, genotype, _SHAPE)
  network_out = ss.derived_network(space, genotype).apply(
      {"params": derived_weights}, x)
  chex.assert_trees_all_close(supernet_out, network_out, atol=1e-6)
  # The derived `Model` runs the same network (architecture and key unused).
  chex.assert_trees_all_close(
      ss.derived_model(space, genotype).apply(derived_weights, None, x,
                                              jax.random.key(9)),
      network_out, atol=1e-6)
  # The derived model really is smaller.
  n = lambda t: sum(v.size for v in jax.tree.leaves(t))
  assert n(derived_weights) < n(weights)


@pytest.mark.parametrize("make", ["supernet", "derived"])
def test_models_carry_a_probed_twin_with_the_same_logits(make):
  # The ghost backend's probed apply returns the plain apply's logits, and
  # creates one zero tape per probed layer.
  space = ss.SearchSpace(op_set="dpnas", channels=4, nodes=1, cells=1)
  weights = ss.init_supernet(space, jax.random.key(0), _SHAPE)
  arch = ss.init_arch_params(space, key=jax.random.key(1))
  if make == "supernet":
    model = ss.supernet_model(space)
  else:
    genotype = ss.derive(arch, space)
    model = ss.derived_model(space, genotype)
    weights = ss.extract_weights(weights, space, genotype, _SHAPE)
  assert isinstance(model, Model) and model.probed is not None
  x = jax.random.normal(jax.random.key(2), (3, *_SHAPE))
  probed = jax.jit(model.probed)
  logits, probes = probed(weights, None, arch, x)
  chex.assert_trees_all_close(logits, jax.jit(model.apply)(weights, arch, x),
                              atol=1e-6)
  assert jax.tree.leaves(probes)
  assert all(float(jnp.abs(t).sum()) == 0.0 for t in jax.tree.leaves(probes))
  again, _ = probed(weights, probes, arch, x)
  chex.assert_trees_all_close(again, logits, atol=1e-6)


def test_supernet_needs_edge_weights():
  space = _space("dpnas")
  with pytest.raises(ValueError, match="edge_weights"):
    ss.CellNetwork(space).init(jax.random.key(0), jnp.zeros((1, *_SHAPE)))


def test_supernet_jit_equals_eager():
  # One cell (two nodes, three mixed edges): eager dispatch of a second cell
  # doubled the time and tested nothing new.
  space = _space("dpnas", cells=1)
  weights = ss.init_supernet(space, jax.random.key(0), _SHAPE)
  arch = ss.init_arch_params(space, key=jax.random.key(1))
  x = jax.random.normal(jax.random.key(2), (3, *_SHAPE))
  apply = ss.supernet_model(space).apply
  with jax.disable_jit():
    eager = apply(weights, arch, x)
  chex.assert_trees_all_close(jax.jit(apply)(weights, arch, x), eager,
                              rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("op_set", [
    # ~25 s on one CPU core; darts's ops end in the same GroupNorm before
    # the cell's max-pool, so the default run still covers the pattern.
    pytest.param("dpnas", marks=pytest.mark.slow),
    "darts"])
def test_supernet_gradient_jit_equals_eager(op_set):
  # XLA:CPU once miscompiled the jitted gradient of GroupNorm followed by a
  # reshape-and-reduce max-pool (off by up to 100 %); see layers.max_pool_2x2.
  space = ss.SearchSpace(op_set=op_set, channels=4, nodes=1, cells=1,
                         num_classes=3, head="flatten")
  weights = ss.init_supernet(space, jax.random.key(0), (6, 6, 1))
  arch = ss.init_arch_params(space, key=jax.random.key(1))
  x = jax.random.normal(jax.random.key(3), (6, 6, 6, 1))
  y = jnp.arange(6) % 3
  apply = ss.supernet_model(space).apply

  def loss(w):
    logits = apply(w, arch, x)
    return -jnp.sum(jax.nn.log_softmax(logits)[jnp.arange(6), y])

  with jax.disable_jit():
    eager = jax.grad(loss)(weights)
  chex.assert_trees_all_close(jax.jit(jax.grad(loss))(weights), eager,
                              rtol=1e-3, atol=1e-5)


def _tramer_boneh_space(nodes=1, **plain):
  return ss.SearchSpace(op_set="dpnas", channels=16, stem_multiplier=1,
                        nodes=nodes, cells=2, head="flatten", stem="strided",
                        reduction="strided_conv", hidden=32, **plain)


_PLAIN = dict(groups=0, preprocess=False)


def test_strided_layout_is_tramer_boneh_with_searched_cells():
  space = _tramer_boneh_space()
  genotype = ss.Genotype("dpnas", 1, ((1, 0, "skip_connect"),))
  weights = ss.derived_network(space, genotype).init(
      jax.random.key(0), jnp.zeros((1, 28, 28, 1)))["params"]
  shapes = jax.tree.map(jnp.shape, weights)
  # Tramer & Boneh's kernels: 8x8x1 → 16 at stride 2, 4x4 → 32 at stride 2,
  # dense 4·4·32 → 32 → 10; a cell (1x1 preprocessing) after each conv.
  assert shapes["stem"]["kernel"] == (8, 8, 1, 16)
  assert shapes["reduce0"]["kernel"] == (4, 4, 16, 32)
  assert shapes["cell0"]["preprocess"]["kernel"] == (1, 1, 16, 16)
  assert shapes["cell1"]["preprocess"]["kernel"] == (1, 1, 32, 32)
  assert shapes["hidden"]["kernel"] == (4 * 4 * 32, 32)
  assert shapes["classifier"]["kernel"] == (32, 10)
  assert "reduce1" not in shapes  # The last cell feeds the head.


def test_plain_skip_cells_compute_tramer_boneh_cnn():
  """Without norms and cell preprocessing, the child of skip connections is
  the baseline CNN itself: same parameters, same function."""
  space = _tramer_boneh_space(**_PLAIN)
  genotype = ss.Genotype("dpnas", 1, ((1, 0, "skip_connect"),))
  x = jax.random.normal(jax.random.key(1), (4, 28, 28, 1))
  baseline = models.make_module("tanh_cnn_small")
  weights = baseline.init(jax.random.key(0), x[:1])["params"]
  renamed = {"stem": weights["conv0"], "reduce0": weights["conv1"],
             "hidden": weights["hidden"], "classifier": weights["classifier"]}
  child = ss.derived_network(space, genotype)
  chex.assert_trees_all_equal_shapes(
      child.init(jax.random.key(0), x[:1])["params"], renamed)
  chex.assert_trees_all_close(child.apply({"params": renamed}, x),
                              baseline.apply({"params": weights}, x),
                              atol=1e-5)


def test_plain_ops_have_biases_and_no_norms():
  space = _tramer_boneh_space(**_PLAIN)
  genotype = ss.Genotype("dpnas", 1, ((1, 0, "sep_conv_3x3_relu"),))
  shapes = jax.tree.map(jnp.shape, ss.derived_network(space, genotype).init(
      jax.random.key(0), jnp.zeros((1, 28, 28, 1)))["params"])
  op = shapes["cell1"]["edge0_sep_conv_3x3_relu"]["layer0"]
  assert op["pointwise"] == {"kernel": (1, 1, 32, 32), "bias": (32,)}
  assert "norm" not in op and "preprocess" not in shapes["cell1"]
  assert "stem_norm" not in shapes and shapes["stem"]["bias"] == (16,)


@pytest.mark.parametrize("seed,layout,shape", [
    (0, "strided", (28, 28, 1)), (1, "strided", (28, 28, 1)),
    (0, "plain", (28, 28, 1)), (0, "scatter", (7, 7, 81)),
    (1, "scatter", (7, 7, 81))])
def test_strided_layouts_one_hot_supernet_equals_derived_model(seed, layout,
                                                               shape):
  space = {"strided": lambda: _tramer_boneh_space(nodes=2),
           "plain": lambda: _tramer_boneh_space(nodes=2, **_PLAIN),
           "scatter": lambda: _scatter_space(nodes=2)}[layout]()
  keys = jax.random.split(jax.random.key(seed), 3)
  weights = ss.init_supernet(space, keys[0], shape)
  genotype = ss.derive(ss.init_arch_params(space, scale=3.0, key=keys[1]),
                       space)
  x = jax.random.normal(keys[2], (3, *shape))
  supernet_out = ss.supernet_model(space).apply(
      weights, genotype_arch_params(genotype, space), x)
  network_out = ss.derived_network(space, genotype).apply(
      {"params": ss.extract_weights(weights, space, genotype, shape)}, x)
  chex.assert_shape(network_out, (3, 10))
  chex.assert_trees_all_close(supernet_out, network_out, atol=1e-5)


def _scatter_space(nodes=1, **kw):
  return ss.SearchSpace(op_set="dpnas", channels=16, stem_multiplier=1,
                        nodes=nodes, cells=2, head="flatten", stem="scatter",
                        reduction="conv3x3", hidden=32, **_PLAIN, **kw)


def _conv(x, kernel, bias, stride, padding):
  out = jax.lax.conv_general_dilated(
      x, kernel, (stride, stride), [(padding, padding)] * 2,
      dimension_numbers=("NHWC", "HWIO", "NHWC"))
  return out + bias


def test_scatter_skip_cells_compute_tramer_boneh_scatternet_cnn():
  """Their ScatterNet CNN, written out: GroupNorm(27 groups, no affine) of
  81 x 7 x 7 features -> conv 16 3x3 stride 2 pad 1 -> tanh -> conv 32 3x3
  pad 1 -> tanh -> dense 32 -> tanh -> dense 10."""
  space = _scatter_space()
  assert space.cell_resolutions(7, 7) == [(4, 4), (4, 4)]
  genotype = ss.Genotype("dpnas", 1, ((1, 0, "skip_connect"),))
  x = jax.random.normal(jax.random.key(3), (4, 7, 7, 81)) * 3 + 1
  child = ss.derived_network(space, genotype)
  w = child.init(jax.random.key(0), x[:1])["params"]
  shapes = jax.tree.map(jnp.shape, w)
  assert shapes["stem"]["kernel"] == (3, 3, 81, 16)
  assert shapes["reduce0"]["kernel"] == (3, 3, 16, 32)
  assert shapes["hidden"]["kernel"] == (4 * 4 * 32, 32)
  groups = x.reshape(4, 7, 7, 27, 3)
  mean = groups.mean(axis=(1, 2, 4), keepdims=True)
  var = groups.var(axis=(1, 2, 4), keepdims=True)
  h = ((groups - mean) / jnp.sqrt(var + 1e-6)).reshape(x.shape)
  h = jnp.tanh(_conv(h, w["stem"]["kernel"], w["stem"]["bias"], 2, 1))
  h = jnp.tanh(_conv(h, w["reduce0"]["kernel"], w["reduce0"]["bias"], 1, 1))
  h = jnp.tanh(h.reshape(4, -1) @ w["hidden"]["kernel"] + w["hidden"]["bias"])
  expected = h @ w["classifier"]["kernel"] + w["classifier"]["bias"]
  chex.assert_trees_all_close(child.apply({"params": w}, x), expected,
                              atol=1e-4)
