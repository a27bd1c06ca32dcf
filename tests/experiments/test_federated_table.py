"""The federated table's rows and rendering (runs faked)."""

import pathlib

import pytest
from absl import flags

from experiments import cli, records
from experiments.configs import federated
from fedsearch.runner.workdir import Workdir
from tests.experiments.scripts import import_script

_SHARED_FLAGS = ("datasets", "seeds", "data_dir", "workdir")


@pytest.fixture(scope="module")
def federated_table():
  yield from import_script("experiments.federated_table", _SHARED_FLAGS)


def _summary(config, workdir):
  pathlib.Path(workdir).mkdir(parents=True, exist_ok=True)
  Workdir(workdir).write_metrics([{"round": 1, "monitor_accuracy": 0.9}])
  f, p = config.federated, config.privacy
  return {"dataset": config.dataset, "model": config.model,
          "test_accuracy": 0.95 if f.num_clients > 1 else 0.96,
          "epsilon": p.epsilon, "delta": p.delta,
          "rounds": f.train_rounds, "noise_multiplier": 6.3,
          "accountant": "pld", "randomness": "secret",
          "clients": f.num_clients, "clients_per_round": f.clients_per_round,
          "unit": p.unit, "trust": p.trust, "model_parameters": 10,
          "deployed_cost": {"flops": 100, "hardware": "test cpu"},
          "wall_time_s": 60.0, "commit": "abc"}


@pytest.fixture
def ran(tmp_path, monkeypatch, federated_table):
  flags.FLAGS.unparse_flags()
  flags.FLAGS(["federated_table", f"--workdir={tmp_path}/federated"])
  monkeypatch.setattr(cli, "run_labelled",
                      lambda config, workdir, label: _summary(config, workdir))
  monkeypatch.setattr(records, "RESULTS", tmp_path / "results")
  yield tmp_path
  flags.FLAGS.unparse_flags()


def test_matched_reference_is_a_centralised_row_beside_the_aggregate_one(
    ran, federated_table):
  aggregate = federated_table.run_row("mnist", "aggregate")
  matched = federated_table.run_row("mnist", federated.MATCHED)
  assert (aggregate["setting"], matched["setting"]) == ("federated",
                                                        "centralised")
  assert matched["epsilon_total"] == federated.MATCHED_EPSILON
  assert (matched["unit"], matched["population"]) == ("example", 1)
  for row in (aggregate, matched):
    assert set(records.REQUIRED) <= set(row)
  table = federated_table.render([aggregate, matched])
  lines = [l for l in table.splitlines() if l.startswith("| MNIST")]
  assert "example / aggregate | 100 (10) | **95.00 %**" in lines[0]
  assert "example / one trusted curator | the union of the data |" in (
      lines[1])
  assert f"{federated.MATCHED_EPSILON:.3f} (1e-05)" in lines[1]
