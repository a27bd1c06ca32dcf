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
