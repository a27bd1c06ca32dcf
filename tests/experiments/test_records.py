"""Results records: required fields, row replacement, monitor curves, plots."""

import json
import pathlib
import sys
import xml.etree.ElementTree as ElementTree

import pytest

from experiments import plots, records


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
