"""The main job's command line: a bad value is one `error:` line and exit 2,
before any work and before anything is written."""

import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _cli(*flags):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  return subprocess.run([sys.executable, "-m", "experiments.search", *flags],
                        cwd=ROOT, capture_output=True, text=True, env=env,
                        timeout=300)


def test_bad_flag_value_gives_one_clear_line_and_writes_nothing(tmp_path):
  result = _cli("--config.federated.partition=round_robin",
                f"--workdir={tmp_path}/w")
  assert result.returncode == 2
  errors = [l for l in result.stderr.splitlines() if l.startswith("error:")]
  assert len(errors) == 1 and "federated.partition" in errors[0], result.stderr
  # Nothing written: the corrected command may use the same workdir.
  assert not (tmp_path / "w").exists()


def test_a_workdir_that_is_a_file_is_one_line(tmp_path):
  (tmp_path / "file").write_text("")
  result = _cli(f"--workdir={tmp_path}/file")
  assert result.returncode == 2
  errors = [l for l in result.stderr.splitlines() if l.startswith("error:")]
  assert len(errors) == 1 and "is a file" in errors[0], result.stderr


def test_missing_data_file_is_one_line(tmp_path):
  result = _cli("--config.dataset=fashion_mnist",
                f"--config.data_dir={tmp_path}", f"--workdir={tmp_path}/w")
  assert result.returncode == 2
  errors = [l for l in result.stderr.splitlines() if l.startswith("error:")]
  assert len(errors) == 1
  assert "fashion-mnist/train-images-idx3-ubyte.gz" in errors[0]
