"""experiments/tune.py end to end: a real tuning of the digits job; bad
input is one line."""

import json

import ml_collections
import pytest

from fedsearch.runner import job as job_lib
from fedsearch.runner import tuning
from tests.experiments.test_audit_cli import _run

_TUNED = ["--config.privacy.accountant=rdp",
          "--config.privacy.tuning_mean_runs=2",
          "--config.privacy.randomness=seeded",
          "--config.privacy.trust=local",
          "--config.federated.search_rounds=1",
          "--config.federated.train_rounds=2"]


@pytest.mark.parametrize("flags, named", [
    (["--grid=client.learning_rate"], "--grid="),
    (["--grid=privacy.delta=1e-6,1e-5"], "privacy.delta cannot be tuned"),
    (["--grid=client.learning_rate=1", "--config.privacy.accountant=pld"],
     "privacy.accountant='rdp'"),
])
def test_bad_tunings_are_one_line(tmp_path, flags, named):
  result = _run("experiments.tune", *_TUNED, *flags,
                f"--workdir={tmp_path}")
  assert result.returncode == 2
  errors = [l for l in result.stderr.splitlines() if l.startswith("error:")]
  assert len(errors) == 1 and named in errors[0]
  assert not (tmp_path / tuning.PLAN_FILE).exists()


@pytest.mark.slow
def test_a_tuning_keeps_its_best_run_and_spends_epsilon_in_all(tmp_path):
  result = _run("experiments.tune", *_TUNED,
                "--grid=client.learning_rate=0.3,1,3", f"--workdir={tmp_path}")
  assert result.returncode == 0, result.stderr[-2000:]
  written = json.loads((tmp_path / tuning.RESULT_FILE).read_text())
  scores = written["monitor_accuracies"]
  assert written["selected"] == scores.index(max(scores))
  kept = written["summary"]
  assert kept["tuning"] == {"mean_runs": 2.0, "shape": 0.0}
  assert kept["epsilon"] <= 3.0 * (1 + 1e-6)
  assert "kept run" in result.stdout and "for the whole tuning" in result.stdout
  # Each run's σ is the tuning's, above what one lone run would need.
  sigmas = {json.loads((tmp_path / f"run_{i}" / "summary.json").read_text())[
      "noise_multiplier"] for i in range(len(scores))}
  assert len(sigmas) == 1
  lone = ml_collections.ConfigDict(json.loads(
      (tmp_path / "run_0" / "config.json").read_text()))
  lone.privacy.tuning_mean_runs = 0.0
  assert job_lib.privacy_plan(lone).noise_multipliers(0.0).gradient < min(
      sigmas)
