"""The workdir: atomic files, one configuration per workdir, checkpoints."""

import json
import stat

import jax.numpy as jnp
import numpy as np
import pytest

from fedsearch.errors import ConfigError
from fedsearch.privacy import randomness
from fedsearch.runner.workdir import Workdir, load_weights, write_atomic


def test_write_atomic_replaces_and_leaves_no_temporary(tmp_path):
  target = tmp_path / "f.json"
  write_atomic(target, "1")
  write_atomic(target, "2")
  assert target.read_text() == "2"
  assert [p.name for p in tmp_path.iterdir()] == ["f.json"]


def _started(path, config_json="{}", mode="seeded"):
  work = Workdir(path)
  work.start(config_json, randomness.Randomness(mode, 12345), 1, "{}")
  return work


def test_a_workdir_keeps_its_configuration(tmp_path):
  _started(tmp_path, json.dumps({"seed": 0})).close()
  _started(tmp_path, json.dumps({"seed": 0})).close()  # Same: resumes.
  with pytest.raises(ConfigError, match="different configuration"):
    Workdir(tmp_path).check_config(json.dumps({"seed": 1}))


def test_opening_a_workdir_writes_nothing_and_a_file_is_refused(tmp_path):
  Workdir(tmp_path / "new").check_config("{}")
  assert not (tmp_path / "new").exists()
  (tmp_path / "file").write_text("x")
  with pytest.raises(ConfigError, match=r"--workdir=.*file.* is a file"):
    Workdir(tmp_path / "file")


def test_the_secret_is_written_owner_only_and_never_in_the_config(tmp_path):
  _started(tmp_path, json.dumps({"seed": 0}), mode="secret").close()
  key_file = tmp_path / randomness.SECRET_FILE
  assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
  assert randomness.read_secret(tmp_path) == 12345
  assert f"{12345:032x}" not in (tmp_path / "config.json").read_text()
  # A second start keeps the first secret (resume draws the same noise).
  work = Workdir(tmp_path)
  work.start(json.dumps({"seed": 0}), randomness.Randomness("secret", 999), 1,
             "{}")
  work.close()
  assert randomness.read_secret(tmp_path) == 12345


def test_checkpoints_restore_the_latest_round_and_metrics_round_trip(tmp_path):
  work = _started(tmp_path)
  assert work.checkpointed_rounds() == [] and work.metrics() == []
  state = {"w": jnp.arange(3.0), "h": None}
  for r in (1, 2, 3):
    work.save_state(r, {"w": state["w"] * r, "h": None})
  assert work.checkpointed_rounds()[0] == 3
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
