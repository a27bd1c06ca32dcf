"""The HyFreeDP comparison's rows: which runs, which fields (runs faked)."""

import pathlib

import pytest
from absl import flags

from experiments import cli, records
from fedsearch.runner.workdir import Workdir
from tests.experiments.scripts import import_script

# Flags every table script defines; the scripts run alone, but one pytest
# process imports several of them.
_SHARED_FLAGS = ("datasets", "seeds", "data_dir", "workdir")


@pytest.fixture(scope="module")
def hyfree_compare():
  yield from import_script("experiments.hyfree_compare", _SHARED_FLAGS)


def _summary(config, workdir):
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  lr = config.client.learning_rate
  # The monitor prefers lr 2; HyFreeDP ends at η 0.2.
  score = 0.9 - 0.01 * abs(lr - 2.0)
  record = {"round": 1, "monitor_accuracy": score}
  if config.client.optimizer == "hyfree":
    record["learning_rate"] = 0.2
  Workdir(workdir).write_metrics([record])
  return {"dataset": config.dataset, "model": config.model,
          "test_accuracy": score, "epsilon": 3.0, "delta": 1e-5,
          "rounds": config.federated.train_rounds,
          "noise_multiplier": 2.0, "accountant": config.privacy.accountant,
          "randomness": "secret", "clients": 1, "model_parameters": 10,
          "deployed_cost": {"flops": 100, "hardware": "test cpu"},
          "wall_time_s": 60.0, "commit": "abc", "client_learning_rate": lr,
          "final_learning_rate": 0.2}


@pytest.fixture
def ran(tmp_path, monkeypatch, hyfree_compare):
  flags.FLAGS.unparse_flags()
  flags.FLAGS(["hyfree_compare", f"--workdir={tmp_path}/hyfree",
               f"--baseline_workdir={tmp_path}/baseline",
               "--grid=1,2,4", "--tuning_mean_runs=2"])
  started = []
  monkeypatch.setattr(cli, "run_labelled", lambda config, workdir, label: (
      started.append(str(workdir)), _summary(config, workdir))[1])
  monkeypatch.setattr(records, "RESULTS", tmp_path / "results")
  yield tmp_path, started
  flags.FLAGS.unparse_flags()


def test_rows_are_the_published_lr_hyfree_and_the_charged_tuning(
    ran, hyfree_compare):
  tmp_path, started = ran
  rows = list(hyfree_compare.run_rows("mnist", [0]))
  assert [r["method"] for r in rows] == list(hyfree_compare.METHODS.values())
  published, paper, hyfree, tuned = rows
  # The published-lr row is the baseline's own run (reused when finished).
  assert started[0] == f"{tmp_path}/baseline/mnist_centralised_s0"
  assert published["client_learning_rate"] == [2.0]
  assert hyfree["final_learning_rate"] == [0.2]
  # The paper's η rule and fedsearch's run apart, each in its own workdir.
  assert started[1:3] == [f"{tmp_path}/hyfree/mnist_hyfree_paper_s0",
                          f"{tmp_path}/hyfree/mnist_hyfree_s0"]
  assert paper["method"] != hyfree["method"]
  runs = tuned["tuning_runs"][0]
  assert len(started) == 3 + runs
  assert tuned["accountant"] == "rdp"
  assert tuned["wall_time_s"] == 60.0 * runs
  assert tuned["gradient_steps"] == [runs * published["gradient_steps"][0]]
  scores = tuned["tuning_monitor_accuracies"][0]
  assert tuned["client_learning_rate"] == [float(
      tuned["tuning_choices"][0][scores.index(max(scores))])]
  for row in rows:
    assert set(records.REQUIRED) <= set(row)
  records.write(hyfree_compare.NAME, rows, hyfree_compare.render)
  table = (tmp_path / "results" / "hyfree.md").read_text()
  assert "**90.00 %** (seeds 0)" in table and "drawn:" in table
  # HyFreeDP's η per epoch is kept and drawn beside the accuracy.
  assert hyfree["learning_rate_per_epoch"] == [[0.2]]
  assert "learning_rate_per_epoch" not in tuned
  paths = hyfree_compare.plot("mnist", rows)
  assert [p.name for p in paths] == ["hyfree_mnist_accuracy.svg",
                                     "hyfree_mnist_eta.svg"]
  assert all(p.read_text().startswith("<svg") for p in paths)
  assert "hyfree_mnist_eta.svg" in table
  # A row from before rows recorded R is drawn with its config's.
  del hyfree["clip_norm"]
  assert hyfree_compare.step_bound(hyfree) == 0.1
  assert hyfree_compare.plot("mnist", rows)[1].read_text().startswith("<svg")


def test_each_row_is_yielded_before_the_next_method_trains(
    ran, hyfree_compare):
  _, started = ran
  rows = hyfree_compare.run_rows("mnist", [0, 1])
  assert next(rows)["method"] == hyfree_compare.PUBLISHED
  assert len(started) == 2  # Both seeds' baselines, no HyFreeDP run yet.
  assert next(rows)["method"] == hyfree_compare.HYFREE_PAPER
  assert len(started) == 4


def test_the_papers_rule_is_the_papers_constants(ran, hyfree_compare):
  config = hyfree_compare.hyfree_paper_config("mnist", 0)
  h = config.hyfree
  assert (h.initial_learning_rate, h.max_change, h.significance,
          h.evidence_decay, h.loss_clip_shrinks) == (1e-4, 10.0, 0.0, 0.0,
                                                     True)
  assert config.client.optimizer == "hyfree"
  assert config.privacy.clip_norm == 1.0  # The paper's R.
  # Everything else is the recipe fedsearch's HyFreeDP row runs.
  default = hyfree_compare.hyfree_config("mnist", 0)
  h2 = default.hyfree
  h2.initial_learning_rate, h2.max_change, h2.significance = 1e-4, 10.0, 0.0
  h2.evidence_decay, h2.loss_clip_shrinks = 0.0, True
  default.privacy.clip_norm = 1.0
  assert config.to_dict() == default.to_dict()


def test_methods_flag_runs_only_the_named_rows(ran, hyfree_compare):
  _, started = ran
  flags.FLAGS["methods"].value = ["hyfree"]
  rows = list(hyfree_compare.run_rows("mnist", [0]))
  assert [r["method"] for r in rows] == [hyfree_compare.HYFREE]
  assert len(started) == 1


def test_federated_setting_runs_the_aggregate_preset_in_its_own_folders(
    ran, hyfree_compare):
  tmp_path, started = ran
  flags.FLAGS["setting"].value = "federated"
  flags.FLAGS["methods"].value = ["published", "hyfree"]
  config = hyfree_compare.hyfree_config("mnist", 0)
  assert (config.privacy.trust, config.privacy.unit) == ("aggregate",
                                                         "example")
  assert config.federated.num_clients == 100
  rows = list(hyfree_compare.run_rows("mnist", [0]))
  assert started == [f"{tmp_path}/hyfree/mnist_federated_published_s0",
                     f"{tmp_path}/hyfree/mnist_federated_hyfree_s0"]
  assert {r["setting"] for r in rows} == {"federated"}
  # Written beside centralised rows of the same methods, not over them.
  centralised = dict(rows[0], setting="centralised")
  on_record = records.write(hyfree_compare.NAME, [centralised, *rows],
                            hyfree_compare.render)
  assert len(on_record) == 3
  paths = hyfree_compare.plot("mnist", on_record)
  assert [p.name for p in paths] == ["hyfree_mnist_federated_accuracy.svg",
                                     "hyfree_mnist_federated_eta.svg"]
  table = (tmp_path / "results" / "hyfree.md").read_text()
  assert "| MNIST | federated |" in table
