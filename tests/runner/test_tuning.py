"""Private random-search tuning: its draws, its resume, its selection."""

import json

import pytest

from fedsearch.errors import ConfigError
from fedsearch.privacy import accounting
from fedsearch.runner import tuning
from fedsearch.runner.workdir import Workdir
from tests.runner.test_job import small_config

GRID = {"client.learning_rate": ["0.5", "1", "2", "4"]}


def _config(**overrides):
  return small_config(**{"privacy.accountant": "rdp",
                         "privacy.tuning_mean_runs": 3.0, **overrides})


class FakeRuns:
  """Stands in for the main job: a run's final monitor accuracy is a fixed
  function of its learning rate; it records which runs were started."""

  def __init__(self):
    self.started = []

  def __call__(self, config, workdir):
    self.started.append((workdir.name, config.client.learning_rate,
                         config.seed))
    workdir.mkdir(parents=True, exist_ok=True)
    score = 1.0 / (1.0 + abs(config.client.learning_rate - 2.0))
    Workdir(workdir).write_metrics([{"round": 1, "monitor_accuracy": 0.1},
                                    {"round": 2, "monitor_accuracy": score}])
    return {"test_accuracy": score / 2, "epsilon": 3.0,
            "learning_rate": config.client.learning_rate, "wall_time_s": 1.5}


def test_grid_points_are_the_product_of_the_fields():
  points = tuning.grid_points({"b": [1, 2], "a": ["x"]})
  assert points == [{"a": "x", "b": 1}, {"a": "x", "b": 2}]


def test_the_best_monitor_accuracy_is_kept(tmp_path):
  runs = FakeRuns()
  result = tuning.tune(_config(), GRID, tmp_path, runs)
  assert len(runs.started) == len(result.choices) >= 1
  rates = [float(c["client.learning_rate"]) for c in result.choices]
  best = max(range(len(rates)), key=lambda i: (
      1.0 / (1.0 + abs(rates[i] - 2.0)), -i))
  assert result.selected == best
  assert result.summary["learning_rate"] == rates[best]
  assert result.wall_time_s == 1.5 * len(rates)
  # Each run has its own seed and folder; the values keep the field's type.
  assert [s[2] for s in runs.started] == [
      small_config().seed + i for i in range(len(rates))]
  assert all(isinstance(s[1], float) for s in runs.started)
  written = json.loads((tmp_path / tuning.RESULT_FILE).read_text())
  assert written["selected"] == best


def test_a_resumed_tuning_repeats_its_draws(tmp_path):
  first = tuning.tune(_config(), GRID, tmp_path, FakeRuns())
  again = tuning.tune(_config(), GRID, tmp_path, FakeRuns())
  assert again.choices == first.choices
  with pytest.raises(ConfigError, match="another configuration or grid"):
    tuning.tune(_config(), {"client.learning_rate": ["1"]}, tmp_path,
                FakeRuns())


def test_secret_draws_differ_between_tunings_and_stay_in_their_workdir(
    tmp_path):
  config = _config(**{"privacy.randomness": "secret",
                      "privacy.tuning_mean_runs": 6.0})
  drawn = [tuning.tune(config, GRID, tmp_path / str(i), FakeRuns()).choices
           for i in range(4)]
  assert len(set(map(str, drawn))) > 1
  assert (tmp_path / "0" / "secret_key").stat().st_mode & 0o077 == 0


@pytest.mark.parametrize("shape", [0.0, 1.0])
def test_the_number_of_runs_follows_the_tunings_distribution(shape):
  # Seeded draws over many seeds: K's mean is the configured mean.
  from fedsearch.privacy import randomness
  config = _config(**{"privacy.tuning_shape": shape})
  counts = [len(tuning.draw_runs(config, GRID, randomness.seeded(seed)))
            for seed in range(3000)]
  assert sum(counts) / len(counts) == pytest.approx(3.0, rel=0.1)
  assert min(counts) >= 1


@pytest.mark.parametrize("overrides, grid, match", [
    ({"privacy.tuning_mean_runs": 0.0}, GRID, r"privacy\.tuning_mean_runs"),
    ({"privacy.accountant": "pld"}, GRID, r"privacy\.accountant='rdp'"),
    ({}, {"privacy.epsilon": ["1", "3"]}, r"privacy\.epsilon cannot be"),
    ({}, {"client.learnin_rate": ["1"]}, r"client\.learnin_rate is not"),
    ({}, {"client.learning_rate": ["fast"]}, r"takes float values"),
    ({}, {"client.learning_rate": []}, r"at least one value"),
])
def test_bad_tunings_are_refused_before_any_run(tmp_path, overrides, grid,
                                                match):
  runs = FakeRuns()
  with pytest.raises(ConfigError, match=match):
    tuning.tune(_config(**overrides), grid, tmp_path, runs)
  assert runs.started == []


def test_each_run_is_calibrated_for_the_tuning():
  from fedsearch.runner import job as job_lib
  plan = job_lib.privacy_plan(_config())
  assert plan.tuning == accounting.Tuning(3.0, 0.0)
