"""The benchmark scripts run end to end in a tiny form (not timed here)."""

import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.parametrize("module,args,row", [
    ("benchmarks.dp_step",
     ["--models=cnn", "--batches=4", "--steps=1", "--rounds=1",
      "--cases=non_dp,vmap,ghost"],
     r"\| cnn \| 0\.55 M \| 4 \| [\d.]+ \(1\.00×\) \| [\d.]+ \([\d.]+×\) \|"),
    ("benchmarks.federation",
     ["--clients=2", "--steps=1", "--batch=4", "--rounds=1"],
     r"\| vectorised round \| [\d.]+ \| [\d,]+ \| [\d.]+× the loop \|"),
])
def test_benchmark_runs_and_prints_its_table(module, args, row):
  out = subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT,
                       capture_output=True, text=True, timeout=900)
  assert out.returncode == 0, out.stderr[-2000:]
  assert re.search(row, out.stdout), out.stdout
  assert "jax" in out.stdout.splitlines()[0]  # The machine/versions line.
