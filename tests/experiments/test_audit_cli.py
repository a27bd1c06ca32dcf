"""experiments/audit.py end to end: white box on a finished run, black box
as a run with canaries; bad input is one line."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

from experiments import records

ROOT = pathlib.Path(__file__).resolve().parents[2]
_SHORT = ["--config.federated.search_rounds=1",
          "--config.federated.train_rounds=2"]


def _run(module, *flags, results=None):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  if results:
    env["FEDSEARCH_RESULTS_DIR"] = str(results)
  return subprocess.run([sys.executable, "-m", module, *flags], cwd=ROOT,
                        capture_output=True, text=True, env=env, timeout=600)


def test_too_few_canaries_is_one_line(tmp_path):
  result = _run("experiments.audit", "--canaries=10",
                f"--workdirs={tmp_path}", results=tmp_path)
  assert result.returncode == 2
  errors = [l for l in result.stderr.splitlines() if l.startswith("error:")]
  assert len(errors) == 1 and "--canaries" in errors[0]


@pytest.mark.slow
def test_white_and_black_box_audits_write_bounds_and_rows(tmp_path):
  run = tmp_path / "run"
  assert _run("experiments.search", *_SHORT,
              f"--workdir={run}").returncode == 0
  white = _run("experiments.audit", f"--workdirs={run}", results=tmp_path)
  assert white.returncode == 0, white.stderr[-2000:]
  summary = json.loads((run / "summary.json").read_text())
  found = summary["audit"]
  assert 0 <= found["epsilon_lower_bound"] <= found["epsilon_claimed"]
  assert found["canaries"] == 1000 and found["trust"] == "aggregate"
  black = _run("experiments.audit", "--mode=black_box", *_SHORT,
               f"--workdir={tmp_path / 'bb'}", results=tmp_path)
  assert black.returncode == 0, black.stderr[-2000:]
  rows = json.loads((tmp_path / "audit.json").read_text())
  assert sorted(r["mode"] for r in rows) == ["black_box", "white_box"]
  for row in rows:
    assert all(field in row for field in records.REQUIRED)
    assert 0 <= row["empirical_epsilon_lower_bound"] <= row["epsilon_total"]
    assert row["confidence"] == pytest.approx(0.95)
