"""The server's aggregation: FedAvg weights, the server optimiser's step on
the mean client delta, and the plug-ins' server-carried states."""

import chex
import jax
import jax.numpy as jnp
import optax
import pytest

from fedsearch.federated import ClientState, ModelParams
from fedsearch.federated.server import server_init, server_update
from fedsearch.nas import RewardBaseline
from fedsearch.optimizers import dpsgd, hyfree
from fedsearch.privacy import auto_lr, mechanisms


def test_weighted_average_on_hand_numbers():
  stacked = {"a": jnp.array([[1.0, 2.0], [3.0, 4.0], [10.0, 0.0]]),
             "b": jnp.array([1.0, 2.0, 4.0])}
  weights = jnp.array([1.0, 3.0, 0.0])  # A zero-weight (padding) client.
  want = {"a": jnp.array([2.5, 3.5]), "b": jnp.array(1.75)}
  chex.assert_trees_all_close(mechanisms.weighted_average(stacked, weights),
                              want)
  # The local mechanism's server aggregation is that FedAvg mean.
  chex.assert_trees_all_close(mechanisms.local().aggregate(stacked, weights),
                              want)


def _stacked_deltas(params: ModelParams, clients: jnp.ndarray,
                    nas=None) -> ClientState:
  """Two clients' ClientState deltas from `params` to weights `clients`."""
  return ClientState(
      ModelParams({"w": clients - params.weights["w"]},
                  {"normal": clients[:, :1] - params.arch["normal"]}),
      None, nas)


def test_fedavg_server_step_with_sgd_one_is_the_weighted_mean_model():
  params = ModelParams({"w": jnp.array([0.0, 0.0])},
                       {"normal": jnp.array([1.0])})
  clients = jnp.array([[2.0, 4.0], [6.0, 8.0]])
  opt = optax.sgd(1.0)
  state = server_init(params, opt)
  mean = mechanisms.weighted_average(_stacked_deltas(params, clients),
                                     jnp.array([3.0, 1.0]))
  state = server_update(state, mean, opt, dpsgd())
  chex.assert_trees_all_close(state.params.weights["w"], jnp.array([3.0, 5.0]))
  # The architecture is aggregated like the weights.
  chex.assert_trees_all_close(state.params.arch["normal"], jnp.array([3.0]))
  # DP-SGD carries nothing between rounds.
  assert state.client_optimizer is None and state.nas is None


@pytest.mark.parametrize("server_lr", [0.5, 1.0])
def test_plugin_states_move_by_their_mean_delta_outside_the_server_optimizer(
    server_lr):
  # The server optimiser scales the model's pseudo-gradient only: the NAS
  # strategy's state (here REINFORCE's reward baseline) is the clients' mean.
  params = ModelParams({"w": jnp.array([0.0, 0.0])},
                       {"normal": jnp.array([0.0])})
  clients = jnp.array([[2.0, 4.0], [6.0, 8.0]])
  start = RewardBaseline(jnp.float32(0.2), jnp.float32(0.5))
  nas_deltas = RewardBaseline(jnp.array([0.1, 0.5]), jnp.array([0.0, 0.4]))
  opt = optax.sgd(server_lr)
  state = server_init(params, opt, None, start)
  mean = mechanisms.weighted_average(
      _stacked_deltas(params, clients, nas_deltas), jnp.array([3.0, 1.0]))
  state = server_update(state, mean, opt, dpsgd())
  chex.assert_trees_all_close(state.params.weights["w"],
                              server_lr * jnp.array([3.0, 5.0]))
  chex.assert_trees_all_close(
      state.nas, RewardBaseline(jnp.float32(0.2 + 0.2),
                                jnp.float32(0.5 + 0.1)))


def test_hyfree_refits_eta_on_the_clients_mean_report():
  # The fit is nonlinear: the server averages the clients' probe reports
  # (so their noise shrinks) and fits η once, on that mean.
  config = auto_lr.AutoLRConfig(initial_learning_rate=0.1)
  opt = hyfree(config)
  params = ModelParams({"w": jnp.zeros(2)}, {})
  start = opt.init()
  reports = [jnp.array([2.0, 1.9, 1.9]), jnp.array([2.0, 1.7, 1.2])]
  ends = [start._replace(report=auto_lr.ProbeReport(r, jnp.float32(1.0)))
          for r in reports]
  stacked = jax.tree.map(lambda *leaves: jnp.stack(leaves), *ends)
  deltas = ClientState(ModelParams({"w": jnp.zeros((2, 2))}, {}),
                       jax.tree.map(jnp.subtract, stacked, start), None)
  server_opt = optax.sgd(1.0)
  state = server_init(params, server_opt, start)
  mean = mechanisms.weighted_average(deltas, jnp.array([3.0, 1.0]))
  state = server_update(state, mean, server_opt, opt)
  mean_report = 0.75 * reports[0] + 0.25 * reports[1]
  want = auto_lr.update(start.learning_rate, mean_report, config)
  chex.assert_trees_all_close(state.client_optimizer.learning_rate, want,
                              rtol=1e-5)
  # Not the mean of the clients' own fits.
  fits = [float(auto_lr.update(start.learning_rate, r, config).learning_rate)
          for r in reports]
  assert abs(float(want.learning_rate) - (0.75 * fits[0] + 0.25 * fits[1])
             ) > 1e-3
  # The report is consumed by the fit.
  assert float(state.client_optimizer.report.probed) == 0.0
