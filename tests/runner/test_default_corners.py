"""The main job's defaults train across the grid a new user may pick.

No hyperparameter flag is set: only the federation, the privacy budget or
the NAS strategy changes, one corner at a time, from the digits job. At
every corner the public monitor loss must fall and the test accuracy reach
4x chance (#18's bar). The learning rate adapts to σ through the
data-independent cap (`client.max_round_noise`), and the default trust
model (`aggregate`) adds the noise once to each round's sum.
"""

import pytest

from experiments.configs import default
from fedsearch import runner

# (name, overrides): client counts 1-100, clients per round, Dirichlet
# α 0.1-10, ε 0.5-8 and every NAS strategy.
CORNERS = [
    ("one_client", {"federated.num_clients": 1,
                    "federated.clients_per_round": 1}),
    ("hundred_clients_twenty_a_round_alpha_10", {
        "federated.num_clients": 100, "federated.clients_per_round": 20,
        "federated.dirichlet_alpha": 10.0}),
    ("thirty_clients_five_a_round_alpha_0.3", {
        "federated.num_clients": 30, "federated.clients_per_round": 5,
        "federated.dirichlet_alpha": 0.3}),
    ("alpha_0.1", {"federated.dirichlet_alpha": 0.1}),
    ("alpha_10", {"federated.dirichlet_alpha": 10.0}),
    ("epsilon_0.5", {"privacy.epsilon": 0.5}),
    ("epsilon_8", {"privacy.epsilon": 8.0}),
    ("one_stage", {"nas.strategy": "one_stage"}),
    ("reinforce", {"nas.strategy": "reinforce"}),
    ("one_stage_thirty_clients_epsilon_1", {
        "nas.strategy": "one_stage", "federated.num_clients": 30,
        "federated.dirichlet_alpha": 0.3, "privacy.epsilon": 1.0}),
]


@pytest.mark.slow
@pytest.mark.parametrize("overrides", [c[1] for c in CORNERS],
                         ids=[c[0] for c in CORNERS])
def test_defaults_train_at_every_corner(tmp_path, overrides):
  config = default.get_config()
  config.privacy.randomness = "seeded"  # A failure can be reproduced.
  for path, value in overrides.items():
    section, field = path.split(".")
    config[section][field] = value
  summary = runner.run(config, tmp_path, report=lambda line: None)
  losses = [m["monitor_loss"] for m in summary["history"]]
  assert losses[-1] < losses[0], losses
  assert summary["test_accuracy"] >= 0.4, summary["test_accuracy"]
