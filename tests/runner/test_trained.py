"""`fedsearch.load(workdir)`: the found model, its weights and predict()."""

import contextlib
import io
import pathlib
import re

import numpy as np
import pytest

import fedsearch
from fedsearch import runner
from tests.runner.test_job import small_config

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("run")
  summary = runner.run(small_config(), workdir, report=lambda _: None)
  return workdir, summary


def test_load_predicts_the_runs_test_accuracy(finished):
  workdir, summary = finished
  model = fedsearch.load(workdir)
  test = fedsearch.data.load_dataset("digits")
  logits = np.asarray(model.predict(test.test_x))
  assert logits.shape == (len(test.test_y), 10)
  accuracy = np.mean(np.argmax(logits, -1) == test.test_y)
  assert accuracy == pytest.approx(summary["test_accuracy"], abs=1e-6)
  assert model.genotype is not None and model.parameters == (
      summary["model_parameters"])
  # One-channel images may come without their channel axis.
  np.testing.assert_allclose(model.predict(test.test_x[..., 0]), logits,
                             rtol=1e-6)
  with pytest.raises(ValueError, match="this model takes"):
    model.predict(np.zeros((1, 28, 28, 1), np.uint8))


def test_a_scatter_model_predicts_from_raw_images(tmp_path):
  """The scattering is part of the model's input pipeline: predict() takes
  the same raw images as a pixel model."""
  config = small_config(**{"features": "scatter", "space.stem": "scatter",
                           "space.reduction": "conv3x3",
                           "federated.search_rounds": 1,
                           "federated.train_rounds": 1,
                           "cache_dir": str(tmp_path / "cache")})
  summary = runner.run(config, tmp_path / "run", report=lambda _: None)
  # 8x8 digits: 2x2 maps of 81 scattering channels.
  assert summary["features"] == "scatter"
  assert summary["input_shape"] == [2, 2, 81]
  test = fedsearch.data.load_dataset("digits")
  logits = fedsearch.load(tmp_path / "run").predict(test.test_x)
  accuracy = np.mean(np.argmax(logits, -1) == test.test_y)
  assert accuracy == pytest.approx(summary["test_accuracy"], abs=1e-6)


def test_load_takes_a_retraining_whose_genotype_came_from_its_search(
    finished, tmp_path):
  workdir, summary = finished
  config = small_config(**{"federated.search_rounds": 0,
                           "nas.genotype": str(workdir),
                           "privacy.epsilon": 6.0})  # The search spent 3.
  retrained = runner.run(config, tmp_path, report=lambda _: None)
  model = fedsearch.load(tmp_path)
  assert not (tmp_path / "genotype.json").exists()
  assert (tmp_path / "cell.png").exists()  # Drawn from the summary.
  assert model.genotype == fedsearch.search_space.Genotype.from_json(
      (workdir / "genotype.json").read_text())
  test = fedsearch.data.load_dataset("digits")
  accuracy = np.mean(np.argmax(model.predict(test.test_x), -1) == test.test_y)
  assert accuracy == pytest.approx(retrained["test_accuracy"], abs=1e-6)


def test_load_refuses_an_unfinished_run(tmp_path):
  with pytest.raises(fedsearch.ConfigError, match="no finished run"):
    fedsearch.load(tmp_path)


def test_readme_example_runs(finished):
  workdir, summary = finished
  text = (ROOT / "README.md").read_text()
  block = re.search(r"<!-- load example[^>]*-->\s*```python\n(.*?)```", text,
                    re.S).group(1)
  assert '"workdir/search"' in block
  out = io.StringIO()
  with contextlib.redirect_stdout(out):
    exec(block.replace('"workdir/search"', repr(str(workdir))), {})
  accuracy = float(out.getvalue().split()[0])
  assert accuracy == pytest.approx(summary["test_accuracy"], abs=1e-6)
