"""The federated round over a mesh spanning two processes started with
jax.distributed (CPU, 2 forced devices each) equals the one-process round
over 4 devices."""

import os
import pathlib
import socket
import subprocess
import sys

import numpy as np
import pytest

from fedsearch import federated as fed
from tests.federated import multihost_round

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_equal_one_process(tmp_path):
  port, out = _free_port(), tmp_path / "two_processes.npz"
  env = dict(os.environ,
             XLA_FLAGS="--xla_force_host_platform_device_count=2",
             PYTHONPATH=str(ROOT))
  workers = [subprocess.Popen(
      [sys.executable, "-m", "tests.federated.multihost_round", str(port),
       str(rank), str(out)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT, text=True) for rank in (0, 1)]
  logs = [w.communicate(timeout=600)[0] for w in workers]
  assert all(w.returncode == 0 for w in workers), logs[0][-3000:]
  distributed = dict(np.load(out))
  single = multihost_round.two_rounds(fed.client_mesh(4))
  assert distributed.keys() == single.keys()
  # Weights and architecture both (a DARTS round moves both).
  assert any(name.startswith("weights/") for name in single)
  assert any(name.startswith("arch/") for name in single)
  for name, value in single.items():
    np.testing.assert_allclose(distributed[name], value, rtol=1e-5,
                               atol=1e-6, err_msg=name)
  # The secret key: process 0's, in both processes (`randomness.fresh`).
  secrets = [pathlib.Path(f"{out}.secret{rank}").read_text()
             for rank in (0, 1)]
  assert secrets[0] == secrets[1] and int(secrets[0], 16) > 0
