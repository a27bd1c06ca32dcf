"""The workdir: atomic files, one configuration per workdir, checkpoints."""

import json

import jax.numpy as jnp
import numpy as np
import pytest

from fedsearch.errors import ConfigError
from fedsearch.runner.workdir import Workdir, load_weights, write_atomic


def test_write_atomic_replaces_and_leaves_no_temporary(tmp_path):
  target = tmp_path / "f.json"
  write_atomic(target, "1")
  write_atomic(target, "2")
  assert target.read_text() == "2"
  assert [p.name for p in tmp_path.iterdir()] == ["f.json"]


def test_a_workdir_keeps_its_configuration(tmp_path):
  Workdir(tmp_path, json.dumps({"seed": 0}), 1).close()
  Workdir(tmp_path, json.dumps({"seed": 0}), 1).close()  # Same: resumes.
  with pytest.raises(ConfigError, match="different configuration"):
    Workdir(tmp_path, json.dumps({"seed": 1}), 1)


def test_checkpoints_restore_the_latest_round_and_metrics_round_trip(tmp_path):
  work = Workdir(tmp_path, "{}", 1)
  assert work.latest_round() == 0 and work.metrics() == []
  state = {"w": jnp.arange(3.0), "h": None}
  for r in (1, 2, 3):
    work.save_state(r, {"w": state["w"] * r, "h": None})
  assert work.latest_round() == 3
  restored = work.restore_state(3, state)
  np.testing.assert_array_equal(restored["w"], np.arange(3.0) * 3)
  assert restored["h"] is None
  records = [{"round": 1, "loss": 0.5}, {"round": 2, "loss": 0.25}]
  work.write_metrics(records)
  assert work.metrics() == records
  work.save_weights("final", {"w": jnp.ones(2)})
  work.close()
  np.testing.assert_array_equal(
      load_weights(tmp_path, {"w": jnp.zeros(2)})["w"], np.ones(2))
