"""The main job end to end: budget, resume, export, each plug-in's path."""

import json

import chex
import jax
import numpy as np
import pytest

from fedsearch import runner
from fedsearch import search_space as ss
from fedsearch.data import load_dataset, normalize
from fedsearch.errors import DivergedError
from fedsearch.runner import workdir as workdir_lib
from fedsearch.runner.workdir import Workdir
from fedsearch.search_space import cost
from tests.runner.test_job import small_config


def _quiet(_):
  pass


def _metrics(workdir):
  return [{k: v for k, v in json.loads(line).items() if k != "elapsed_s"}
          for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def _reload_accuracy(workdir, summary, which="final"):
  """Test accuracy of the exported genotype + weights, outside the runner."""
  genotype = ss.Genotype.from_json((workdir / "genotype.json").read_text())
  model = ss.derived_network(ss.SearchSpace(**summary["space"]), genotype)
  like = model.init(jax.random.key(0),
                    np.zeros((1, *summary["input_shape"])))["params"]
  weights = runner.load_weights(workdir, like, which)
  ds = load_dataset("digits")
  logits = model.apply({"params": weights},
                       normalize("digits", ds.test_x, ds.pixel_max))
  return float(np.mean(np.argmax(logits, -1) == ds.test_y)), weights


def test_run_spends_epsilon_resumes_and_exports(tmp_path):
  config = small_config(**{"privacy.randomness": "secret"})
  straight = runner.run(config, tmp_path / "a", report=_quiet)
  # The noise comes from a secret kept in the workdir, never in the config.
  assert straight["randomness"] == "secret"
  secret = (tmp_path / "a" / "secret_key").read_text()
  assert secret.strip() not in (tmp_path / "a" / "config.json").read_text()
  # The run in "b" is given the same secret, so that, resumed, it must
  # equal the uninterrupted one.
  (tmp_path / "b").mkdir()
  (tmp_path / "b" / "secret_key").write_text(secret)
  assert straight["epsilon"] <= config.privacy.epsilon + 1e-9
  assert straight["epsilon"] > 0.99 * config.privacy.epsilon  # Calibrated.
  assert straight["releases_accounted"] == {
      "client_sizes": 1, "weight_steps_search": 4, "arch_steps_search": 4,
      "weight_steps_train": 4}
  assert straight["trust"] == "local" and straight["optimizer"] == "dpsgd"
  eps = [m["epsilon"] for m in _metrics(tmp_path / "a")]
  assert len(eps) == 4 and eps == sorted(eps) and eps[-1] == straight["epsilon"]
  # Interrupted once in the search phase and once at the phase boundary.
  for stop in (1, 2):
    assert runner.run(config, tmp_path / "b", report=_quiet,
                      stop_after_round=stop) == {}
  resumed = runner.run(config, tmp_path / "b", report=_quiet)
  for key in ("test_accuracy", "epsilon", "genotype", "noise_multiplier"):
    assert resumed[key] == straight[key]
  assert _metrics(tmp_path / "a") == _metrics(tmp_path / "b")
  accuracy, weights = _reload_accuracy(tmp_path / "a", straight)
  assert accuracy == pytest.approx(straight["test_accuracy"], abs=1e-6)
  chex.assert_trees_all_equal(weights,
                              _reload_accuracy(tmp_path / "b", resumed)[1])
  # A finished run is not run again.
  assert runner.run(config, tmp_path / "a", report=_quiet) == straight


@pytest.mark.slow
def test_a_fixed_network_trains_by_the_main_jobs_path(tmp_path):
  config = small_config(**{"model": "tanh_cnn", "federated.search_rounds": 0,
                           "federated.train_rounds": 2})
  summary = runner.run(config, tmp_path, report=_quiet)
  assert summary["model"] == "tanh_cnn" and summary["genotype"] == {
      "model": "tanh_cnn"}
  assert "deployed_test_accuracy" not in summary
  assert summary["deployed_cost"]["params"] == summary["model_parameters"]
  assert summary["epsilon"] == pytest.approx(config.privacy.epsilon, rel=1e-3)
  assert [m["phase"] for m in _metrics(tmp_path)] == ["train", "train"]


def test_a_diverging_run_stops_with_the_round_and_the_field(tmp_path):
  # Without the round-noise cap, which would otherwise take the rate down.
  config = small_config(**{"client.learning_rate": 1e30,
                           "client.max_round_noise": 0.0})
  with pytest.raises(DivergedError,
                     match=r"round 1: .*no longer finite.*client\.learning_rate"):
    runner.run(config, tmp_path, report=_quiet)
  assert not (tmp_path / "summary.json").exists()
  assert not (tmp_path / "checkpoints" / "1").exists()


def test_the_summary_is_strict_json():
  summary = {"a": float("nan"), "b": [1.0, float("inf")], "c": {"d": 2}}
  assert workdir_lib.finite_json(summary) == {"a": None, "b": [1.0, None],
                                                 "c": {"d": 2}}


def test_workdir_of_another_config_is_not_reused(tmp_path):
  runner.run(small_config(), tmp_path, report=_quiet, stop_after_round=1)
  with pytest.raises(runner.job.ConfigError, match="different configuration"):
    runner.run(small_config(seed=1), tmp_path, report=_quiet)


@pytest.mark.slow
def test_end_to_end_learns_at_epsilon_3(tmp_path):
  # Measured 0.69 (seed 0) and 0.72 (seed 1); the default space with 2 nodes
  # reached 0.65-0.81 over seeds 0-2.
  config = small_config(**{"federated.search_rounds": 3,
                           "federated.train_rounds": 30,
                           "federated.local_steps": 1})
  summary = runner.run(config, tmp_path, report=_quiet)
  assert summary["epsilon"] <= config.privacy.epsilon + 1e-9
  assert summary["test_accuracy"] > 0.45  # Chance is 0.1.


@pytest.mark.slow
@pytest.mark.parametrize("strategy,reward,exploration_step,random_option", [
    ("feathers", "client", "own", {}), ("fedex", "client", "incumbent", {}),
    ("fedex", "round", "own", {}),
    # The blocked estimate reads the clients' ids from the loop; halving
    # every round keeps 2, then 1 of the 4 configurations in its state.
    ("random", "client", "own", {"hpo.random_estimate": "blocked"}),
    ("random", "round", "own", {"hpo.random_halving_rounds": 1})])
def test_joint_hyperparameter_search_spends_at_most_epsilon_and_resumes(
    tmp_path, strategy, reward, exploration_step, random_option):
  # The default FEATHERS, the paper's (exploration rounds only measure),
  # and a 10 % feedback share, so that both show in the records.
  config = small_config(**{"hpo.strategy": strategy, "hpo.pool_size": 4,
                           "hpo.reward": reward,
                           "hpo.exploration_step": exploration_step,
                           **random_option,
                           "hpo.period": 2, "hpo.gamma": 1.0,
                           "hpo.feedback_epsilon_fraction": 0.1,
                           "federated.search_rounds": 3})
  straight = runner.run(config, tmp_path / "a", report=_quiet)
  assert straight["epsilon"] <= config.privacy.epsilon * (1 + 1e-6)
  breakdown = straight["epsilon_breakdown"]
  # The gradients and the sizes share 90 % of ε; the feedback the rest.
  assert (0.8 * config.privacy.epsilon < breakdown["gradients_only"]
          < 0.9 * config.privacy.epsilon)
  assert 0 < breakdown["hp_feedback_only"] < breakdown["total"]
  assert straight["releases_accounted"]["hp_feedback"] == 3
  chosen = straight["hyperparameters"]["chosen"]
  assert 1e-3 <= chosen["learning_rate"] <= 1e-1  # From the pool's range.
  lines = _metrics(tmp_path / "a")
  assert all("hp_mean_gain" in l for l in lines[:3])
  for l in lines[:3]:  # Every client's released gain, configuration, id.
    assert (len(l["hp_client_gains"]) == len(l["hp_client_configurations"])
            == len(l["hp_clients"]) == len(l["hp_client_weights"])
            == config.federated.clients_per_round)
    assert all(0 <= c < 4 for c in l["hp_client_configurations"])
    assert len(set(l["hp_clients"])) == len(l["hp_clients"])
    assert min(l["hp_client_gains"]) <= l["hp_mean_gain"] <= max(
        l["hp_client_gains"])
  if reward == "round":  # One configuration a round, in its record.
    assert all(set(l["hp_round_configuration"]) == set(config.hpo.space)
               for l in lines[:3])
  # Rescaled to the incumbent's step: the factors in the record.
  assert all(("hp_mean_update_scale" in l)
             == (exploration_step == "incumbent") for l in lines[:3])
  if "hpo.random_halving_rounds" in random_option:
    assert [l["hp_survivors"] for l in lines[:3]] == [2, 1, 1]
  if strategy == "feathers":  # Exploration rounds only measure.
    assert [l["hp_measure_only"] for l in lines[:3]] == [True, False, True]
    assert [l["hp_exploring"] for l in lines[:3]] == [True, False, True]
  runner.run(config, tmp_path / "b", report=_quiet, stop_after_round=2)
  resumed = runner.run(config, tmp_path / "b", report=_quiet)
  assert resumed["hyperparameters"] == straight["hyperparameters"]
  assert resumed["test_accuracy"] == pytest.approx(straight["test_accuracy"])


@pytest.mark.slow
def test_feathers_client_exploration_aggregates_the_incumbents_clients(
    tmp_path):
  # Round 1 explores before any feedback (measures only), round 2 exploits,
  # round 3 explores per client: part of the clients enter the mean.
  config = small_config(**{"hpo.strategy": "feathers", "hpo.pool_size": 4,
                           "hpo.feathers_exploration": "client",
                           "hpo.period": 2, "hpo.gamma": 1.0,
                           "federated.search_rounds": 3})
  summary = runner.run(config, tmp_path, report=_quiet)
  assert summary["epsilon"] <= config.privacy.epsilon * (1 + 1e-6)
  lines = _metrics(tmp_path)
  assert [l["hp_exploring"] for l in lines[:3]] == [True, False, True]
  shares = [l["hp_aggregated_share"] for l in lines[:3]]
  assert shares[:2] == [0.0, 1.0]
  assert 0.0 < shares[2] < 1.0, shares
  assert [l["hp_measure_only"] for l in lines[:3]] == [True, False, False]


@pytest.mark.slow
def test_search_over_local_steps_and_sampling_rate_charges_the_maxima(
    tmp_path):
  config = small_config(**{"hpo.strategy": "random", "hpo.pool_size": 4,
                           "federated.search_rounds": 2,
                           "federated.train_rounds": 1})
  config.hpo.space = {
      "learning_rate": {"scale": "log", "low": 0.1, "high": 1.0},
      "local_steps": {"scale": "categorical", "choices": [1, 3]},
      "sampling_rate": {"scale": "uniform", "low": 0.4, "high": 0.8},
  }
  summary = runner.run(config, tmp_path, report=_quiet)
  max_steps = int(max(runner.build_job(config).hpo.pool["local_steps"]))
  releases = summary["releases_accounted"]
  # Every client is charged the pool's largest step count (and rate).
  assert releases["weight_steps_search"] == 2 * max_steps
  assert releases["weight_steps_train"] == max_steps
  assert summary["epsilon"] <= config.privacy.epsilon * (1 + 1e-6)
  chosen = summary["hyperparameters"]["chosen"]
  assert chosen["local_steps"] in (1, 3)
  assert 0.4 <= chosen["sampling_rate"] <= 0.8


@pytest.mark.slow
def test_one_stage_search_deploys_its_child_without_retraining(tmp_path):
  config = small_config(**{"nas.strategy": "one_stage",
                           "federated.search_rounds": 3,
                           "federated.train_rounds": 0})
  # A parameter budget only parameter-free ops fit: a hard constraint.
  space = ss.SearchSpace(num_classes=10, **config.space.to_dict())
  fixed = cost.build_cost_table(space, (8, 8, 1), 4, 1).fixed["params"]
  config.nas.cost_metric = "params"
  config.nas.cost_penalty = 0.5
  config.nas.cost_budget = fixed + 1
  summary = runner.run(config, tmp_path, report=_quiet)
  assert summary["cost_table"]["deployed"] <= fixed + 1
  assert summary["deployed_cost"]["params"] == summary["model_parameters"]
  # One joint release per local step: no separate architecture steps.
  assert summary["releases_accounted"] == {
      "client_sizes": 1, "weight_steps_search": 6, "arch_steps_search": 0,
      "weight_steps_train": 0}
  assert summary["epsilon"] == pytest.approx(config.privacy.epsilon, rel=1e-3)
  assert summary["deployed_epsilon"] == summary["epsilon"]
  assert summary["deployed_test_accuracy"] == summary["test_accuracy"]
  accuracy, _ = _reload_accuracy(tmp_path, summary, "deployed")
  assert accuracy == pytest.approx(summary["deployed_test_accuracy"], abs=1e-6)


@pytest.mark.slow
def test_reinforce_search_then_centralised_retraining(tmp_path):
  """DPNAS's two stages: a REINFORCE search whose rewards are counted as
  architecture releases, then the found genotype retrained from fresh
  weights by one client holding all data (the centralised mode)."""
  config = small_config(**{"nas.strategy": "reinforce",
                           "nas.controller_warmup_rounds": 1,
                           "federated.search_rounds": 3,
                           "federated.train_rounds": 0,
                           "privacy.stage_share": 0.5})
  search = runner.run(config, tmp_path / "search", report=_quiet)
  # The warm-up round releases no reward.
  assert search["releases_accounted"] == {
      "client_sizes": 1, "weight_steps_search": 6, "arch_steps_search": 4,
      "weight_steps_train": 0}
  # Half of the total budget (the retraining spends the rest).
  assert search["epsilon"] == pytest.approx(1.5, rel=1e-3)
  metrics = _metrics(tmp_path / "search")
  assert [m["phase"] for m in metrics] == ["warmup", "search", "search"]
  baselines = [m["reward_baseline"] for m in metrics]
  assert baselines[0] == 0 and all(0 < b < 1.5 for b in baselines[1:])
  genotype = (tmp_path / "search" / "genotype.json").read_text()

  retrain_config = small_config(**{
      "nas.genotype": str(tmp_path / "search"),
      "federated.search_rounds": 0, "federated.train_rounds": 20,
      "federated.local_steps": 1, "federated.num_clients": 1,
      "federated.clients_per_round": 1, "federated.partition": "iid",
      "federated.server_momentum": 0.0, "privacy.clip_norm": 0.1,
      "client.learning_rate": 2.0})
  retrain = runner.run(retrain_config, tmp_path / "retrain", report=_quiet)
  assert retrain["retrained_from"] == str(tmp_path / "search")
  assert json.dumps(retrain["genotype"]) == json.dumps(json.loads(genotype))
  assert retrain["clients"] == 1
  assert retrain["releases_accounted"]["weight_steps_train"] == 20
  # One accountant over both stages: the total is ε = 3, the search's
  # releases (read from its workdir) included.
  assert retrain["epsilon"] == pytest.approx(config.privacy.epsilon, rel=1e-3)
  assert retrain["earlier_stage_events"].endswith("privacy_events.json")
  assert retrain["releases_of_earlier_stages"]["arch_steps_search"] == 4
  breakdown = retrain["epsilon_breakdown"]
  assert breakdown["earlier_stages_only"] == pytest.approx(1.5, rel=0.02)
  assert breakdown["this_stage_only"] < retrain["epsilon"]
  # Measured 0.30 (seed 0): 20 steps from fresh weights; chance is 0.1.
  assert retrain["test_accuracy"] > 0.2
  assert "deployed_test_accuracy" not in retrain


@pytest.mark.slow
@pytest.mark.parametrize("trust", ["local", "aggregate"])
def test_main_job_runs_hyfree_within_budget_and_resumes(tmp_path, trust):
  # Under aggregate the probes follow the last released update (round 1
  # has none: its probes read one point, and η moves from round 2 on).
  config = small_config(**{"client.optimizer": "hyfree",
                           "privacy.trust": trust,
                           "federated.local_steps": 1,
                           "hyfree.probe_every": 1,
                           "hyfree.initial_learning_rate": 0.05,
                           # Refit on every probe, so that η must move.
                           "hyfree.significance": 0.0})
  straight = runner.run(config, tmp_path / "a", report=_quiet)
  assert straight["optimizer"] == "hyfree"
  assert straight["epsilon"] <= config.privacy.epsilon * (1 + 1e-6)
  assert set(straight["epsilon_breakdown"]) == {
      "total", "gradients_only", "client_sizes_only", "loss_probes_only"}
  rates = [l["learning_rate"] for l in _metrics(tmp_path / "a")]
  assert len(set(rates)) > 1  # η was refitted.
  assert straight["final_learning_rate"] == pytest.approx(rates[-1])
  # Interrupted in the search phase, then resumed: same result.
  runner.run(config, tmp_path / "b", report=_quiet, stop_after_round=1)
  resumed = runner.run(config, tmp_path / "b", report=_quiet)
  for key in ("test_accuracy", "epsilon", "final_learning_rate"):
    assert resumed[key] == pytest.approx(straight[key], rel=1e-5)


@pytest.mark.slow
def test_every_stop_resumes_to_the_uninterrupted_result(tmp_path, monkeypatch):
  config = small_config()  # 2 search + 2 training rounds, seeded.
  straight = runner.run(config, tmp_path / "a", report=_quiet)

  # Killed after the genotype is derived and before the first derived-model
  # checkpoint (round 3) is written: the window that used to fail to resume.
  save_state = Workdir.save_state

  def killed_at_round_3(self, rounds_done, state, force=False):
    if rounds_done == 3:
      raise KeyboardInterrupt
    return save_state(self, rounds_done, state, force)

  with monkeypatch.context() as patch:
    patch.setattr(Workdir, "save_state", killed_at_round_3)
    with pytest.raises(KeyboardInterrupt):
      runner.run(config, tmp_path / "b", report=_quiet)
  assert (tmp_path / "b" / "genotype.json").exists()
  assert Workdir(tmp_path / "b").path.joinpath("checkpoints", "2").exists()
  resumed = runner.run(config, tmp_path / "b", report=_quiet)
  assert resumed["test_accuracy"] == straight["test_accuracy"]
  assert _metrics(tmp_path / "a") == _metrics(tmp_path / "b")

  # A damaged latest checkpoint: one warning line, the one before is used.
  runner.run(config, tmp_path / "c", report=_quiet, stop_after_round=3)
  latest = tmp_path / "c" / "checkpoints" / "3"
  for file in latest.rglob("*"):
    if file.is_file():
      file.write_bytes(b"\0" * 16)
  lines = []
  repaired = runner.run(config, tmp_path / "c", report=lines.append)
  warnings = [l for l in lines if l.startswith("warning:")]
  assert len(warnings) == 1 and "round 3" in warnings[0], lines
  assert "resuming after round 2" in lines
  assert repaired["test_accuracy"] == straight["test_accuracy"]
  assert _metrics(tmp_path / "a") == _metrics(tmp_path / "c")


@pytest.mark.slow
@pytest.mark.parametrize("searched", [None, "one_stage", "reinforce"])
def test_aggregate_trust_in_chunks_resumes_to_the_uninterrupted_result(
    tmp_path, searched):
  """The `aggregate` trust model (one local step; a given genotype, a
  one-stage search, or REINFORCE after a warm-up round, the architecture's
  Adam on the server), with the clients in chunks: a run stopped after
  round 2 and resumed ends where the uninterrupted one does, and names its
  trust model."""
  genotype = tmp_path / "genotype.json"
  genotype.write_text(ss.Genotype(
      "dpnas", 1, ((1, 0, "sep_conv_3x3_tanh"),)).to_json())
  fixed = {"federated.search_rounds": 0, "federated.train_rounds": 4,
           "nas.genotype": str(genotype)}
  search = {"federated.search_rounds": 4, "federated.train_rounds": 0,
            "nas.strategy": searched or "darts",
            "nas.controller_warmup_rounds": 2 if searched == "reinforce"
                                            else 0}
  config = small_config(**{
      "privacy.trust": "aggregate", "federated.local_steps": 1,
      "federated.client_chunk": 4, **(search if searched else fixed)})
  straight = runner.run(config, tmp_path / "a", report=_quiet)
  assert straight["trust"] == "aggregate" and straight["client_chunk"] == 4
  assert straight["epsilon"] <= config.privacy.epsilon * (1 + 1e-6)
  runner.run(config, tmp_path / "b", report=_quiet, stop_after_round=2)
  resumed = runner.run(config, tmp_path / "b", report=_quiet)
  assert resumed["test_accuracy"] == straight["test_accuracy"]
  assert _metrics(tmp_path / "a") == _metrics(tmp_path / "b")


@pytest.mark.parametrize("strategy", [
    "darts", pytest.param("reinforce", marks=pytest.mark.slow)])
def test_client_level_run_resumes_to_the_same_secret_draws(tmp_path,
                                                           strategy):
  """DP-FedAvg over 60 clients: who takes part is secret, a resumed run
  draws exactly the same clients and noise, and the summary names the unit
  and releases no client size (a REINFORCE search's rewards stay on the
  clients)."""
  config = small_config(**{
      "nas.strategy": strategy,
      "privacy.unit": "client", "privacy.trust": "aggregate",
      "privacy.randomness": "secret", "federated.num_clients": 60,
      "federated.clients_per_round": 20, "federated.partition": "iid",
      "privacy.clip_norm": 0.5, "privacy.arch_clip_norm": 0.05,
      "privacy.adaptive_clip_quantile": 0.5})
  straight = runner.run(config, tmp_path / "a", report=_quiet)
  (tmp_path / "b").mkdir()
  (tmp_path / "b" / "secret_key").write_text(
      (tmp_path / "a" / "secret_key").read_text())
  assert runner.run(config, tmp_path / "b", report=_quiet,
                    stop_after_round=3) == {}
  resumed = runner.run(config, tmp_path / "b", report=_quiet)
  assert _metrics(tmp_path / "a") == _metrics(tmp_path / "b")
  assert resumed["test_accuracy"] == straight["test_accuracy"]
  assert straight["unit"] == "client" and straight["trust"] == "aggregate"
  assert "client_sizes_released" not in straight
  assert straight["releases_accounted"] == {"client_updates": 4}
  assert straight["client_sampling_rate"] == pytest.approx(1 / 3)
  assert 0.99 * 3.0 < straight["epsilon"] <= 3.0 + 1e-9
  # Adaptive clipping moved the bounds (carried across the phase change and
  # the resume, as the equal metrics show), keeping their ratio.
  bounds = [(m["clip_norm"], m["arch_clip_norm"])
            for m in _metrics(tmp_path / "a")]
  assert len(set(bounds)) == 4
  for weights, arch in bounds:
    assert weights == pytest.approx(10 * arch)


@pytest.mark.parametrize("strategy,why", [("darts", "retrain it"),
                                          ("one_stage", "deployable as is")])
def test_final_block_names_each_release_and_what_the_deployed_child_is(
    strategy, why):
  from fedsearch.runner.search import final_block
  summary = {"test_accuracy": 0.8, "epsilon": 3.0, "wall_time_s": 12.0,
             "epsilon_breakdown": {"total": 3.0, "gradients_only": 2.5,
                                   "client_sizes_only": 0.3},
             "deployed_test_accuracy": 0.1, "deployed_epsilon": 0.5,
             "nas_strategy": strategy}
  lines = final_block(summary, 1e-5, "wd")
  assert lines[0].startswith("test accuracy 0.8000 at ε=3.000")
  assert "gradients 2.500, client sizes 0.300" in lines[1]
  assert "test accuracy 0.1000" in lines[2] and why in lines[2]
  assert "fedsearch.load" in lines[-1]
  del summary["deployed_test_accuracy"]  # A retraining: no deployed child.
  assert len(final_block(summary, 1e-5, "wd")) == 3


def test_epsilon_inf_runs_the_same_schedule_without_noise(tmp_path):
  """privacy.epsilon=inf is the non-private ceiling: σ = 0, nothing
  accounted, said so in the closing lines and as null ε in the summary."""
  config = small_config(**{"privacy.epsilon": float("inf"),
                           "federated.search_rounds": 1,
                           "federated.train_rounds": 1})
  lines = []
  summary = runner.run(config, tmp_path / "a", report=lines.append)
  # Strict JSON everywhere (ε is null, not Infinity), and the pictures.
  for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines():
    assert json.loads(line, parse_constant=pytest.fail)["epsilon"] is None
  assert (tmp_path / "a" / "curves.png").exists()
  assert summary["noise_multiplier"] == 0.0
  assert summary["epsilon"] == float("inf")
  written = json.loads((tmp_path / "a" / "summary.json").read_text())
  assert written["epsilon"] is None
  assert any("NO PRIVACY" in line for line in lines)
  assert any("WITHOUT privacy" in line for line in lines)
