"""Which runs the DPNAS table makes: the ablations and their seeds."""

import pytest
from absl import flags

from experiments import dpnas_table
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
