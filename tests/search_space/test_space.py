"""Search-space configuration: field-named errors."""

import pytest

from fedsearch import search_space as ss
from fedsearch.errors import ConfigError


@pytest.mark.parametrize("field,value", [("op_set", "resnet"),
                                         ("activation", "gelu2"),
                                         ("groups", 3), ("max_in_edges", 9),
                                         ("head", "attention")])
def test_bad_space_values_name_the_field(field, value):
  with pytest.raises(ConfigError, match=f"space.{field}"):
    ss.SearchSpace(**{field: value})


@pytest.mark.parametrize("field,value", [("stem", "patchify"),
                                         ("reduction", "avg_pool"),
                                         ("hidden", -1), ("groups", -1),
                                         ("preprocess", False)])
def test_bad_layout_values_name_the_field(field, value):
  with pytest.raises(ConfigError, match=f"space.{field}"):
    ss.SearchSpace(**{field: value})


@pytest.mark.parametrize("layout,image,expected", [
    # Tramer & Boneh on 28x28: (28 + 4 − 8)/2 + 1 = 13, pool at stride 1 →
    # 12; (12 − 4)/2 + 1 = 5, pool → 4.
    (dict(stem="strided", reduction="strided_conv"), 28, [(12, 12), (4, 4)]),
    (dict(stem="strided", reduction="max_pool"), 28, [(12, 12), (6, 6)]),
    (dict(), 28, [(28, 28), (14, 14)]),
    (dict(), 8, [(8, 8), (4, 4)]),
])
def test_cell_resolutions_follow_the_layout(layout, image, expected):
  space = ss.SearchSpace(cells=2, **layout)
  assert space.cell_resolutions(image, image) == expected


@pytest.mark.parametrize("ops_by_edge, connected", [
    (("none", "none", "none"), False),
    # Node 2's only live edge leaves node 1, which nothing reaches.
    (("none", "none", "skip_connect"), False),
    (("none", "max_pool_3x3", "none"), True),
    (("skip_connect", "none", "none"), True),
    (("skip_connect", "none", "sep_conv_3x3_relu"), True),
])
def test_reaches_a_node_follows_live_edges_from_the_input(ops_by_edge,
                                                          connected):
  space = ss.SearchSpace(channels=4, nodes=2, cells=2, head="flatten")
  assert space.edges == ((1, 0), (2, 0), (2, 1))
  choices = [space.op_names.index(op) for op in ops_by_edge]
  assert space.reaches_a_node(choices) is connected
