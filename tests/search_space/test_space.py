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
