"""Pictures of a run: written when it finishes and by experiments.report on
a partial workdir; non-empty PNGs."""

import os
import pathlib
import subprocess
import sys

from PIL import Image

from fedsearch import runner
from fedsearch.runner.workdir import Workdir
from tests.runner.test_job import small_config

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _is_picture(path: pathlib.Path) -> bool:
  with Image.open(path) as image:
    pixels = image.convert("L").getextrema()
    return image.size[0] > 200 and pixels[0] < pixels[1]  # Not blank.


def test_a_finished_run_draws_its_curves_architecture_and_cell(tmp_path):
  lines = []
  runner.run(small_config(), tmp_path, report=lines.append)
  for name in ("curves.png", "architecture.png", "cell.png"):
    assert _is_picture(tmp_path / name), name
  assert any(line.startswith("pictures: curves.png") for line in lines)


def test_report_draws_a_partial_run_and_refuses_a_non_workdir(tmp_path):
  runner.run(small_config(), tmp_path / "run", report=lambda _: None,
             stop_after_round=1)
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  done = subprocess.run(
      [sys.executable, "-m", "experiments.report", str(tmp_path / "run")],
      cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)
  assert done.returncode == 0, done.stderr[-2000:]
  assert _is_picture(tmp_path / "run" / "curves.png")
  assert _is_picture(tmp_path / "run" / "architecture.png")
  assert not (tmp_path / "run" / "cell.png").exists()  # Not searched yet.
  bad = subprocess.run(
      [sys.executable, "-m", "experiments.report", str(tmp_path)],
      cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)
  assert bad.returncode == 2 and "no config.json" in bad.stderr


def test_a_hyperparameter_search_draws_its_configurations_probabilities(
    tmp_path):
  config = small_config(**{"hpo.strategy": "fedex", "hpo.pool_size": 4})
  runner.run(config, tmp_path, report=lambda _: None)
  metrics = [m for m in Workdir(tmp_path).metrics()
             if "hp_probabilities" in m]
  assert metrics and all(len(m["hp_probabilities"]) == 4 for m in metrics)
  assert all(abs(sum(m["hp_probabilities"]) - 1) < 1e-4 for m in metrics)
  assert _is_picture(tmp_path / "hyperparameters.png")
