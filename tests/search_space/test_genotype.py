"""Genotypes: JSON round trip, the DARTS derivation rule, checks against the space."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fedsearch import search_space as ss
from fedsearch.errors import ConfigError


def test_genotype_json_round_trip():
  space = ss.SearchSpace(op_set="darts", channels=4, nodes=2, cells=2,
                         max_in_edges=2)
  arch = ss.init_arch_params(space, scale=2.0, key=jax.random.key(0))
  genotype = ss.derive(arch, space)
  assert ss.Genotype.from_json(genotype.to_json()) == genotype


def test_derive_follows_the_darts_rule():
  space = ss.SearchSpace(op_set="darts", channels=4, nodes=3, max_in_edges=2)
  names = space.op_names
  logits = np.zeros((space.num_edges, len(names)), np.float32)
  # `none` is never chosen even when it dominates an edge.
  logits[space.edge_index(1, 0), names.index("none")] = 10.0
  logits[space.edge_index(1, 0), names.index("dil_conv_5x5")] = 1.0
  # Node 3: edges from 0 and 2 are strongest, edge from 1 is dropped.
  logits[space.edge_index(3, 0), names.index("skip_connect")] = 5.0
  logits[space.edge_index(3, 2), names.index("sep_conv_3x3")] = 4.0
  logits[space.edge_index(3, 1), names.index("max_pool_3x3")] = 0.5
  genotype = ss.derive({"normal": jnp.asarray(logits)}, space)
  assert genotype.op_on(1, 0) == "dil_conv_5x5"
  assert genotype.op_on(3, 0) == "skip_connect"
  assert genotype.op_on(3, 2) == "sep_conv_3x3"
  assert genotype.op_on(3, 1) is None
  assert sum(1 for e in genotype.edges if e[0] == 3) == 2


def test_derive_keeps_every_edge_without_an_in_edge_limit():
  space = ss.SearchSpace(op_set="dpnas", channels=4, nodes=3, max_in_edges=0)
  genotype = ss.derive(ss.init_arch_params(space, scale=2.0,
                                           key=jax.random.key(0)), space)
  assert len(genotype.edges) == space.num_edges


def test_a_genotype_of_another_space_is_refused():
  space = ss.SearchSpace(op_set="darts", channels=4, nodes=2, max_in_edges=2)
  genotype = ss.derive(ss.init_arch_params(space), space)
  with pytest.raises(ConfigError, match="does not fit the space"):
    ss.check_genotype(genotype, ss.SearchSpace(op_set="darts", channels=4,
                                               nodes=3, max_in_edges=2))
  bad = ss.Genotype("darts", 2, ((2, 2, "skip_connect"),))  # No self-loop.
  with pytest.raises(ConfigError, match="not an edge of the space"):
    ss.check_genotype(bad, space)
