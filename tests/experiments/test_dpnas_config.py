"""The DPNAS reproduction presets: DPNAS's retraining settings, centralised
= one client, bad arguments named."""

import pytest

from experiments.configs import dpnas
from fedsearch.runner import job as job_lib
from fedsearch.errors import ConfigError


@pytest.mark.parametrize("dataset,epochs", [("mnist", 40),
                                            ("fashion_mnist", 40),
                                            ("cifar10", 30)])
def test_retraining_defaults_are_dpnas(dataset, epochs):
  config = dpnas.get_config(f"{dataset},centralised,retrain")
  f, p = config.federated, config.privacy
  examples = dpnas.TRAIN_EXAMPLES[dataset] * (1 - config.monitor_fraction)
  assert f.sampling_rate * examples == pytest.approx(2048)
  assert f.local_steps * 2048 == pytest.approx(examples, rel=0.05)
  assert (f.search_rounds, f.train_rounds) == (0, epochs)
  assert (config.client.learning_rate, config.client.momentum) == (2.0, 0.9)
  assert (p.clip_norm, p.epsilon, p.delta) == (0.1, 3.0, 1e-5)
  assert (f.num_clients, f.clients_per_round, f.partition) == (1, 1, "iid")


def test_federated_search_preset_is_ten_dirichlet_clients_with_reinforce():
  config = dpnas.get_config("cifar10,federated,search")
  f = config.federated
  assert (f.num_clients, f.partition, f.dirichlet_alpha) == (
      10, "dirichlet", 0.5)
  assert config.nas.strategy == "reinforce"
  assert 0 < config.nas.controller_warmup_rounds < f.search_rounds
  # One budget: the search takes its share of the total.
  assert (config.privacy.epsilon, config.privacy.stage_share) == (
      dpnas.TOTAL_EPSILON, dpnas.SEARCH_SHARE)
  # The privacy plan of the preset is valid as it stands.
  plan = job_lib.privacy_plan(config)
  counts = plan.counts(f.search_rounds)
  assert counts["arch_steps_search"] == f.local_steps * (
      f.search_rounds - config.nas.controller_warmup_rounds)


@pytest.mark.parametrize("dataset", dpnas.DATASETS)
def test_the_baseline_is_the_hand_set_cnn_with_the_retraining_recipe(dataset):
  baseline = dpnas.get_config(f"{dataset},centralised,baseline")
  retrain = dpnas.get_config(f"{dataset},centralised,retrain")
  assert baseline.model == dpnas.BASELINE_MODEL[dataset] and not retrain.model
  baseline.model = ""
  # The backend computes the same clipped sums (faster on the CIFAR CNN).
  assert baseline.privacy.dp_backend == (
      "ghost" if dataset == "cifar10" else "vmap")
  baseline.privacy.dp_backend = retrain.privacy.dp_backend
  assert baseline.to_dict() == retrain.to_dict()
  assert baseline.privacy.stage_share == 1.0


@pytest.mark.parametrize("arg,named", [("mnist,centralised", "DATASET,SETTING"),
                                       ("svhn,centralised,search", "DATASET"),
                                       ("mnist,cross_silo,search", "SETTING"),
                                       ("mnist,centralised,search,tpu",
                                        "DESIGN")])
def test_bad_preset_argument_is_named(arg, named):
  with pytest.raises(ValueError, match=named):
    dpnas.get_config(arg)


def test_warmup_is_refused_for_strategies_without_a_controller():
  config = dpnas.get_config("mnist,centralised,search")
  config.nas.strategy = "darts"
  with pytest.raises(ConfigError, match="nas.controller_warmup_rounds"):
    job_lib.privacy_plan(config)


@pytest.mark.parametrize("dataset", ["mnist", "fashion_mnist"])
@pytest.mark.parametrize("design,groups,preprocess,layout", [
    ("cpu", 4, True, ("strided", "strided_conv", "pixels")),
    ("cpu_plain", 0, False, ("strided", "strided_conv", "pixels")),
    ("cpu_scatter", 0, False, ("scatter", "conv3x3", "scatter"))])
def test_cpu_design_is_tramer_boneh_layout_searched_with_the_recipe(
    dataset, design, groups, preprocess, layout):
  search = dpnas.get_config(f"{dataset},centralised,search,{design}")
  retrain = dpnas.get_config(f"{dataset},centralised,retrain,{design}")
  space = job_lib.search_space_from(search, 10)
  assert (space.stem, space.reduction, search.features) == layout
  assert retrain.features == search.features and space.hidden == 32
  assert (space.groups, space.preprocess) == (groups, preprocess)
  assert space == job_lib.search_space_from(retrain, 10)
  # The supernet trains with the retraining recipe; the controller starts
  # after a sixth of the search.
  assert (search.client.learning_rate, search.privacy.clip_norm) == (2.0, 0.1)
  assert search.nas.controller_warmup_rounds == search.federated.search_rounds // 6
  assert retrain.federated.train_rounds == 40
  job_lib.privacy_plan(search)  # Valid as it stands.


def test_the_scatter_designs_baseline_is_still_the_end_to_end_cnn():
  config = dpnas.get_config("mnist,centralised,baseline,cpu_scatter")
  assert (config.model, config.features) == ("tanh_cnn_small", "pixels")
  job_lib.privacy_plan(config)
