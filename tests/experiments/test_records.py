"""Results records: required fields, row replacement, monitor curves, plots."""

import json
import pathlib
import sys
import xml.etree.ElementTree as ElementTree

import chex
import pytest

from experiments import plots, records
from fedsearch.errors import ConfigError


def _row(**kw):
  row = {field: "x" for field in records.REQUIRED}
  row.update(dataset="mnist", setting="centralised", method="m", model="a",
             test_accuracy=0.9)
  row.update(kw)
  return row


@pytest.fixture
def results(tmp_path, monkeypatch):
  monkeypatch.setattr(records, "RESULTS", tmp_path)
  return tmp_path


def test_a_row_lacking_a_required_field_is_refused(results):
  row = _row()
  del row["epsilon_total"]
  with pytest.raises(ValueError, match="epsilon_total"):
    records.write("t", [row], lambda rows: "")


def test_a_new_row_replaces_the_one_with_its_key_only(results):
  records.write("t", [_row(model="a"), _row(model="b")], lambda rows: "")
  rows = records.write("t", [_row(model="a", test_accuracy=0.5)],
                       lambda rows: f"{len(rows)} rows\n")
  assert sorted((r["model"], r["test_accuracy"]) for r in rows) == [
      ("a", 0.5), ("b", 0.9)]
  assert (results / "t.md").read_text() == "2 rows\n"
  assert json.loads((results / "t.json").read_text()) == rows


def _seeds(seeds, accuracies, **kw):
  return _row(**{"seeds": seeds, "test_accuracies": accuracies,
                 "test_accuracy": sum(accuracies) / len(accuracies),
                 "monitor_accuracy_per_epoch": [[a] for a in accuracies],
                 "noise_multiplier": 2.0, "wall_time_s": 10.0 * len(seeds),
                 **kw})


def test_extend_adds_seeds_to_the_row_on_record_in_place(results):
  records.write("t", [_seeds([0], [0.8], commit="a", command="c0"),
                      _row(method="other")], lambda rows: "")
  rows = records.extend(
      "t", _seeds([1, 2], [0.6, 0.7], commit="b a", command="c1",
                  model="another cell", noise_multiplier=2.0 + 1e-9,
                  hardware="gpu"),
      lambda rows: f"{len(rows)} rows\n")
  row = rows[0]
  assert row["seeds"] == [0, 1, 2]
  assert row["monitor_accuracy_per_epoch"] == [[0.8], [0.6], [0.7]]
  chex.assert_trees_all_close(
      (row["test_accuracy"], row["test_accuracy_sd"]), (0.7, 0.1))
  assert (row["wall_time_s"], row["commit"], row["command"], row["model"],
          row["hardware"]) == (30.0, "a b", "c0 && c1", "a", "x; gpu")
  assert rows[1] == _row(method="other")
  assert json.loads((results / "t.json").read_text()) == rows
  assert (results / "t.md").read_text() == "2 rows\n"


_AMD = "cpu x1 (cpu; host AMD EPYC, 2 cores)"
_XEON = "cpu x1 (cpu; host Intel(R) Xeon(R) Processor, 2 cores)"


@pytest.mark.parametrize("hardware, want", [
    (_AMD, [_AMD]),
    (f"{_AMD}; {_XEON}", [_AMD, _XEON]),
    (f"{_XEON}; {_AMD}; {_XEON}", [_XEON, _AMD, _XEON]),
    ("x; gpu", ["x", "gpu"]),
])
def test_hosts_split_only_outside_a_hosts_parentheses(hardware, want):
  assert records.hosts(hardware) == want


@pytest.mark.parametrize("on_record, added, want", [
    (_AMD, _AMD, _AMD),
    (_AMD, _XEON, f"{_AMD}; {_XEON}"),
    (f"{_AMD}; {_XEON}", _AMD, f"{_AMD}; {_XEON}"),
    # A row extended before hosts were kept once lists repeats; they fold.
    (f"{_XEON}; {_AMD}; {_AMD}; {_XEON}", _XEON, f"{_XEON}; {_AMD}"),
])
def test_extend_keeps_each_host_once(on_record, added, want):
  row = records.extend_row(_seeds([0], [0.5], hardware=on_record),
                           _seeds([1], [0.6], hardware=added))
  assert row["hardware"] == want


@pytest.mark.parametrize("on_record, new, refusal", [
    ([], _seeds([1], [0.5]), "no row on record"),
    ([_seeds([0], [0.5], superseded=True)], _seeds([1], [0.5]),
     "no row on record"),
    ([_seeds([0, 1], [0.5, 0.6])], _seeds([1], [0.5]),
     r"already holds seeds \[1\]"),
    ([_seeds([0], [0.5])], _seeds([1], [0.5], noise_multiplier=2.1),
     "noise_multiplier=2.0"),
    ([_seeds([0], [0.5])], _seeds([1], [0.5], delta=1e-6), "delta"),
])
def test_extend_refuses_what_is_not_more_seeds_of_the_row(
    results, on_record, new, refusal):
  records.write("t", on_record, lambda rows: "")
  with pytest.raises(ConfigError, match=refusal):
    records.extend("t", new, lambda rows: "")
  assert records.read("t") == on_record


def test_seeds_summary_is_mean_and_sample_sd():
  out = records.seeds_summary([0.9, 0.8, 1.0])
  assert out["test_accuracy"] == pytest.approx(0.9)
  assert out["test_accuracy_sd"] == pytest.approx(0.1)


def test_monitor_curve_reads_each_round(tmp_path):
  lines = [{"round": r + 1, "monitor_accuracy": a}
           for r, a in enumerate([0.5, 0.75])]
  (tmp_path / "metrics.jsonl").write_text(
      "\n".join(json.dumps(line) for line in lines) + "\n")
  assert records.monitor_curve(tmp_path) == [0.5, 0.75]


def test_line_plot_draws_one_line_per_run_and_a_legend(tmp_path):
  path = tmp_path / "p.svg"
  plots.line_plot({"a": [[0.1, 0.5, 0.9], [0.2, 0.4, 0.8]], "b": [[0.3]]},
                  "title", "accuracy", path, (0.0, 1.0))
  root = ElementTree.parse(path).getroot()  # Well-formed XML.
  lines = root.findall("{http://www.w3.org/2000/svg}polyline")
  assert len(lines) == 3
  # Epoch 1 at the left edge, the last epoch at the right; 0.9 above 0.1.
  first = [tuple(map(float, p.split(","))) for p in
           lines[0].get("points").split()]
  assert first[0][0] < first[-1][0] and first[-1][1] < first[0][1]
  texts = [t.text for t in root.iter("{http://www.w3.org/2000/svg}text")]
  assert "a" in texts and "b" in texts and "title" in texts


def test_line_plot_refuses_no_data(tmp_path):
  with pytest.raises(ValueError):
    plots.line_plot({"a": [[]]}, "t", "y", tmp_path / "p.svg")


def test_command_names_the_module_wherever_the_records_go(results,
                                                          monkeypatch):
  script = pathlib.Path(records.__file__).with_name("dpnas_table.py")
  monkeypatch.setattr(sys, "argv", [str(script), "--cpu"])
  assert records.command() == "python -m experiments.dpnas_table --cpu"


@pytest.mark.parametrize("epsilons,want", [([2.9, 3.0], 3.0),
                                           ([3.0, float("inf")], None),
                                           ([None, None], None)])
def test_total_epsilon_is_null_for_a_run_without_privacy(epsilons, want):
  assert records.total_epsilon([{"epsilon": e} for e in epsilons]) == want
