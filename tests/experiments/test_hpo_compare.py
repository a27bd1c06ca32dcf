"""The hyperparameter-search comparison: presets and rows (runs faked)."""

import pathlib
import sys

import pytest
from absl import flags

from experiments import cli, records
from experiments.configs import hpo
from fedsearch import hyperparameters as hp_lib
from fedsearch.runner import job as job_lib
from fedsearch.runner import tensorboard
from fedsearch.runner.workdir import Workdir
from tests.experiments.scripts import import_script

_SHARED_FLAGS = ("datasets", "seeds", "data_dir", "workdir", "strategies",
                 "extend")


@pytest.fixture(scope="module")
def hpo_compare():
  yield from import_script("experiments.hpo_compare", _SHARED_FLAGS)


@pytest.mark.parametrize("dataset", hpo.DATASETS)
def test_every_row_runs_the_recipe_schedule_and_the_grid_holds_the_recipe(
    dataset):
  plans = {}
  for row in hpo.ROWS:
    config = hpo.get_config(f"{dataset},{row}")
    f = config.federated
    plans[row] = (f.search_rounds, f.train_rounds, f.local_steps,
                  f.sampling_rate, config.privacy.epsilon,
                  config.privacy.delta, config.privacy.clip_norm)
    assert config.privacy.trust == "local"
    round_reward = row.endswith(hpo.ROUND_REWARD)
    assert config.hpo.reward == ("round" if round_reward else "client")
    # FEATHERS as published, except where a round reward must measure the
    # released model.
    assert config.hpo.explore_aggregates == round_reward
    assert config.hpo.exploration_step == "own"
    # The soft-error gain only where its development runs chose it: random
    # search and FEATHERS with client gains, where the feedback noise is
    # small.
    soft = row in ("random", "feathers") and dataset != "digits"
    assert config.hpo.feedback_measure == ("soft_error" if soft else "loss")
    if row != "none":
      pool = hp_lib.make_pool(
          hp_lib.space_from_dict(config.hpo.space.to_dict()),
          config.hpo.pool_size, config.seed)
      recipe = (config.client.learning_rate, config.client.momentum)
      assert recipe in set(zip(pool["learning_rate"], pool["momentum"]))
      assert hp_lib.pool_size(pool) == 10
  assert len(set(plans.values())) == 1  # Equal compute, equal (ε, δ).
  config = hpo.get_config(f"{dataset},none")
  assert (config.client.learning_rate, config.client.momentum,
          config.privacy.clip_norm, config.client.max_round_noise) == (
              2.0, 0.9, 0.1, 0.0)


def test_a_searching_preset_plans_its_feedback_inside_the_same_epsilon():
  fixed = job_lib.privacy_plan(hpo.get_config("digits,none"))
  searching = job_lib.privacy_plan(hpo.get_config("digits,feathers"))
  assert searching.noise_multipliers(0.0).gradient > fixed.noise_multipliers(
      0.0).gradient
  assert fixed.epsilon == searching.epsilon == 3.0


def _summary(config, workdir):
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  searching = config.hpo.strategy != "none"
  records_ = [{"round": r + 1, "monitor_accuracy": 0.1 * r,
               **({tensorboard.HYPERPARAMETERS: [0.1] * 10}
                  if searching and r < config.federated.search_rounds else {})}
              for r in range(3)]
  Workdir(workdir).write_metrics(records_)
  summary = {"dataset": config.dataset, "model": "", "genotype": None,
             "test_accuracy": 0.5, "epsilon": 3.0, "delta": 1e-5,
             "rounds": 3, "accountant": "pld",
             "noise_multiplier": job_lib.privacy_plan(config).noise_multipliers(
                 config.privacy.noise_multiplier).gradient,
             "randomness": "secret", "clients": 10, "model_parameters": 10,
             "deployed_cost": {"flops": 100, "hardware": "test cpu"},
             "wall_time_s": 60.0, "commit": "abc", "trust": "local",
             "unit": "example", "epsilon_breakdown": {}}
  if searching:
    summary["epsilon_breakdown"]["hp_feedback_only"] = 1.1
    summary["hyperparameters"] = {"chosen": {"learning_rate": 1.0,
                                             "momentum": 0.9}}
  return summary


def test_rows_carry_the_choice_the_feedback_and_the_probabilities(
    tmp_path, monkeypatch, hpo_compare):
  flags.FLAGS.unparse_flags()
  flags.FLAGS(["hpo_compare", f"--workdir={tmp_path}/hpo"])
  started = []
  monkeypatch.setattr(cli, "run_labelled", lambda config, workdir, label: (
      started.append(str(workdir)), _summary(config, workdir))[1])
  monkeypatch.setattr(records, "RESULTS", tmp_path / "results")
  try:
    fixed = hpo_compare.run_row("digits", "none", [0])
    feathers = hpo_compare.run_row("digits", "feathers", [0])
    round_reward = hpo_compare.run_row("digits", "feathers_round", [0])
  finally:
    flags.FLAGS.unparse_flags()
  assert started == [f"{tmp_path}/hpo/digits_none_s0",
                     f"{tmp_path}/hpo/digits_feathers_s0",
                     f"{tmp_path}/hpo/digits_feathers_round_s0"]
  assert (fixed["reward"], feathers["reward"], round_reward["reward"]) == (
      None, "client", "round")
  assert round_reward["method"] == "joint search, FEATHERS, round reward"
  assert fixed["chosen"] == [{"learning_rate": 2.0, "momentum": 0.9}]
  assert fixed["epsilon_feedback_only"] == [None]
  assert feathers["epsilon_feedback_only"] == [1.1]
  assert feathers["hp_probabilities_per_round"] == [[[0.1] * 10] * 3]
  assert len(feathers["pool"]) == 10
  assert fixed["gradient_steps"] == feathers["gradient_steps"]
  for row in (fixed, feathers):
    assert set(records.REQUIRED) <= set(row)
  rows = records.write(hpo_compare.NAME, [fixed, feathers, round_reward],
                       hpo_compare.render)
  names = [p.name for p in hpo_compare.plot("digits", rows)]
  assert names == ["hpo_digits_accuracy.svg",
                   "hpo_digits_feathers_probabilities.svg",
                   "hpo_digits_feathers_round_probabilities.svg"]
  table = (tmp_path / "results" / "hpo.md").read_text()
  assert "learning_rate 1, momentum 0.9" in table and "| 1.10 |" in table


def test_a_row_names_a_gain_that_is_not_the_published_loss(hpo_compare):
  flags.FLAGS.unparse_flags()
  flags.FLAGS(["hpo_compare"])
  try:
    published = hpo_compare.preset_fields("digits", "random", 0)
    soft = hpo_compare.preset_fields("fashion_mnist", "random", 0)
    fixed = hpo_compare.preset_fields("digits", "none", 0)
  finally:
    flags.FLAGS.unparse_flags()
  assert (published["method"], published["feedback_measure"]) == (
      "joint search, random", "loss")
  assert (soft["method"], soft["feedback_measure"]) == (
      "joint search, random, soft-error gain", "soft_error")
  assert fixed["feedback_measure"] is None
  assert [hpo_compare._row(r) for r in (published, soft)] == [
      "random", "random_soft_error"]


def _main(hpo_compare, monkeypatch, tmp_path, *argv):
  argv = ["hpo_compare", f"--workdir={tmp_path}/hpo", *argv]
  monkeypatch.setattr(sys, "argv", argv)  # The rows' command.
  flags.FLAGS.unparse_flags()
  flags.FLAGS(argv)
  try:
    hpo_compare.main([])
  finally:
    flags.FLAGS.unparse_flags()


def test_extend_adds_seeds_to_the_row_on_record_checked_before_any_run(
    tmp_path, monkeypatch, capsys, hpo_compare):
  started = []
  monkeypatch.setattr(cli, "run_labelled", lambda config, workdir, label: (
      started.append(pathlib.Path(workdir).name),
      _summary(config, workdir))[1])
  monkeypatch.setattr(records, "RESULTS", tmp_path / "results")
  run = lambda *argv: _main(hpo_compare, monkeypatch, tmp_path, *argv)
  run("--strategies=feathers", "--seeds=0")
  run("--strategies=feathers", "--seeds=1,2", "--extend")
  assert started == ["digits_feathers_s0", "digits_feathers_s1",
                     "digits_feathers_s2"]
  (row,) = records.read(hpo_compare.NAME)
  assert row["seeds"] == [0, 1, 2] and len(row["chosen"]) == 3
  assert len(row["hp_probabilities_per_round"]) == 3
  assert row["wall_time_s"] == 180.0
  assert row["command"].count(" && ") == 1 and "--extend" in row["command"]
  for argv, refusal in (
      (["--strategies=feathers", "--seeds=2,3"], "already holds seeds [2]"),
      (["--strategies=none", "--seeds=1"], "no row on record")):
    with pytest.raises(SystemExit):
      run(*argv, "--extend")
    assert refusal in capsys.readouterr().err
  assert len(started) == 3  # Refused before any run.


_RECORD_FIELDS = {
    "test_accuracy": 0.7, "test_accuracy_sd": 0.1, "epsilon_total": 3.0,
    "delta": 1e-5, "noise_multiplier": 2.0, "chosen": [], "train_rounds": 2,
    "local_steps": 1, "wall_time_s": 60.0, "hardware": "cpu",
    "commit": "abc", "command": "python -m experiments.hpo_compare",
    "epsilon_feedback_only": []}


def _seeded_row(method, seeds, tests, monitors, search_rounds=2):
  return {"dataset": "fashion_mnist", "method": method, "seeds": seeds,
          "test_accuracies": tests, "monitor_accuracy_per_epoch": monitors,
          "search_rounds": search_rounds}


def test_a_search_row_is_paired_with_the_recipe_seed_by_seed(hpo_compare):
  recipe = _seeded_row(hpo_compare.METHOD["none"], [0, 1, 2],
                       [0.70, 0.80, 0.60],
                       [[0.5, 0.6, 0.7, 0.7]] * 3)
  # Seed 3 has no recipe run: it is left out of the pairing.
  search = _seeded_row(hpo_compare.METHOD["random"], [1, 0, 3],
                       [0.77, 0.74, 0.99],
                       [[0.3, 0.2, 0.6, 0.8], [0.3, 0.4, 0.8, 0.6],
                        [0.0] * 4])
  paired = hpo_compare.paired_with_recipe(search, recipe, window=2)
  assert paired["seeds"] == [1, 0]
  assert paired["test"] == pytest.approx([-3.0, 4.0])
  assert paired["mean"] == pytest.approx(0.5)
  # sd of (-3, 4) is 7/√2; over √2 seeds.
  assert paired["standard_error"] == pytest.approx(3.5)
  # Search rounds 1-2: (0.25 - 0.55) and (0.35 - 0.55); last two: 0 and 0.
  assert paired["monitor_end_of_search"] == pytest.approx(-25.0)
  assert paired["monitor_end_of_run"] == pytest.approx(0.0)
  table = hpo_compare.render([recipe | _RECORD_FIELDS,
                              search | _RECORD_FIELDS])
  # The render's windows (MONITOR_WINDOW rounds, at least these rows' 4) hold
  # the whole search and the whole run here.
  assert hpo_compare.MONITOR_WINDOW >= 4
  assert "| 1, 0 | -3.00, +4.00 | **+0.50** (3.50) | -25.0 | -12.5 |" in table
  assert f"last {hpo_compare.MONITOR_WINDOW} search rounds" in table


def test_rows_without_a_shared_seed_are_not_paired(hpo_compare):
  recipe = _seeded_row(hpo_compare.METHOD["none"], [0], [0.7], [[0.5] * 4])
  search = _seeded_row(hpo_compare.METHOD["random"], [1], [0.8], [[0.6] * 4])
  assert hpo_compare.paired_with_recipe(search, recipe) is None
  table = hpo_compare.render([recipe | _RECORD_FIELDS,
                              search | _RECORD_FIELDS])
  assert "Paired with the fixed recipe" not in table
