"""Which runs the DPNAS table makes: the ablations and their seeds."""

import pytest
from absl import flags

from experiments import dpnas_table
from experiments.configs import dpnas
from fedsearch.errors import ConfigError
from fedsearch.search_space.genotype import Genotype


@pytest.fixture
def ran(tmp_path, monkeypatch):
  flags.FLAGS.unparse_flags()
  def parse(*argv):
    flags.FLAGS(["dpnas_table", f"--workdir={tmp_path}", "--ablations",
                 "--fixed_op=skip_connect", *argv])
  runs = []
  monkeypatch.setattr(dpnas_table, "_run",
                      lambda config, workdir: runs.append(
                          (workdir.name, config.seed)) or {})
  monkeypatch.setattr(dpnas_table, "_row",
                      lambda *args, **kwargs: args[2])
  def found(op):
    search = tmp_path / "mnist_centralised" / "search"
    search.mkdir(parents=True, exist_ok=True)
    (search / "genotype.json").write_text(
        Genotype("dpnas", 1, ((1, 0, op),)).to_json())
  yield parse, found, runs
  flags.FLAGS.unparse_flags()


def test_fixed_cell_seeds_apply_to_the_fixed_cell_ablation(ran):
  parse, found, runs = ran
  parse("--fixed_cell_seeds=0,1,2")
  found("sep_conv_3x3_tanh")
  rows = dpnas_table.run_rows("mnist", "centralised", [0, 1, 2])
  assert rows == [dpnas_table.SEARCHED, dpnas_table.FREE_SEARCH,
                  dpnas_table.FIXED_CELL]
  assert runs[4:] == [("found_alone_s0", 0), ("fixed_cell_s0", 0),
                      ("fixed_cell_s1", 1), ("fixed_cell_s2", 2)]


def test_a_found_fixed_cell_takes_the_fixed_cell_seeds(ran):
  parse, found, runs = ran
  parse("--fixed_cell_seeds=0,1")
  found("skip_connect")
  rows = dpnas_table.run_rows("mnist", "centralised", [0, 1, 2])
  assert rows == [dpnas_table.SEARCHED, dpnas_table.FREE_SEARCH]
  assert runs[4:] == [("found_alone_s0", 0), ("found_alone_s1", 1)]


def test_reduced_epochs_shorten_only_the_retrainings(ran, monkeypatch):
  parse, found, runs = ran
  rounds = []
  monkeypatch.setattr(dpnas_table, "_run",
                      lambda config, workdir: rounds.append(
                          (workdir.name, config.federated.search_rounds,
                           config.federated.train_rounds)) or {})
  parse("--epochs=5")
  found("skip_connect")
  dpnas_table.run_rows("mnist", "centralised", [0])
  search_rounds = dpnas.get_config("mnist,centralised,search")
  assert rounds == [
      ("search", search_rounds.federated.search_rounds, 0),
      ("retrain_s0_e5", 0, 5), ("found_alone_s0_e5", 0, 5)]


@pytest.mark.parametrize("dataset, epochs, label", [
    ("mnist", 0, ""), ("mnist", 40, ""),
    ("mnist", 5, ", reduced (5 of 40 epochs)"),
    ("cifar10", 3, ", reduced (3 of 30 epochs)")])
def test_reduced_label(dataset, epochs, label):
  assert dpnas.reduced_label(dataset, epochs) == label


@pytest.mark.parametrize("epochs", [-1, 31])
def test_epochs_beyond_the_recipe_are_refused(epochs):
  with pytest.raises(ConfigError, match=r"--epochs=.*choose 0 .*1\.\.30"):
    dpnas.check_epochs("cifar10", epochs)
