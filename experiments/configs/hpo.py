"""Joint architecture + hyperparameter search against a published recipe.

  --config=experiments/configs/hpo.py:DATASET,ROW

DATASET: digits (development: every choice below was made there) |
fashion_mnist (evaluation, run only with the frozen preset) | mnist.
ROW: none (the fixed recipe) | feathers | fedex | random (the methods as
published: a client's gain measures its own update) | feathers_round |
fedex_round | random_round (`hpo.reward = "round"`: one configuration a
round, whose gain every client measures on the released model; added after
the Fashion-MNIST rows, see experiments/README.md).

The fixed defaults are DPNAS's published retraining recipe (Cheng et al.
2022: Poisson batch 2048, learning rate 2, momentum 0.9, clip 0.1, 40
epochs), tuned by its authors on centralised data, not here; moved to a
federation of 10 label-skewed clients the way `dpnas.py` moves it (a round is
one local epoch of Poisson batches at the recipe's rate q, so the batch
summed over the clients is 2,048 and every client's accounting is the
centralised one). The searching rows run the same schedule and spend the
same total (ε, δ) = (3, 1e-5); their space is a grid that holds the
recipe's values (`hpo.pool_size = 0`): learning rate {0.5, 1, 2, 4, 8} ×
momentum {0.5, 0.9}, so no search can lose by a range that excludes the
recipe (the earlier comparison's FEATHERS range stopped at 0.1).

Every row searches the architecture too (Direct Federated NAS, one-stage,
over `dpnas.py`'s `cpu_plain` space on the 28x28 datasets) for the first
`SEARCH_ROUNDS` of the rounds, then trains the derived child with the
chosen configuration; hyperparameters are searched only while the
architecture is. Trust `local`: a client's feedback measures its own
update, which aggregate noise would leave share-noised (refused there).
The feedback gets 2 % of ε (`hpo.feedback_epsilon_fraction`, the default
since digits dev runs: 10 % raised the gradients' σ 9.5 % and cost
FEATHERS 11 points there; at 2 % the gradients' σ rises 1.6 % on
Fashion-MNIST, 2.04 -> 2.07). Equal compute: every row trains the same
rounds of the same local steps.

Frozen on 2026-11-30 after the digits runs, where the searches still lost,
and evaluated once on Fashion-MNIST (`experiments/results/hpo.md`). Then
changed, on digits evidence only: FEATHERS's exploration rounds restart
from the stored weights, as the paper runs them (`hpo.explore_aggregates =
False`, fedsearch's default since 2026-12-01). The preset frozen on 11-30
aggregated them; at eight digits seeds that form lost 12.7 ± 4.1 points to
the recipe and the paper's form 2.9 ± 2.8 (experiments/README.md, "Eight
seeds on digits"). The Fashion-MNIST FEATHERS row of the earlier preset is
kept, superseded, beside the re-run: this is the second look at
Fashion-MNIST for FEATHERS, and the table says so. The round-reward rows
aggregate exploration rounds, since their gain measures the released
model. Changed a second time on 2026-12-01, again on digits evidence only
(eight seeds, a decision rule written before the runs): FedEx's exploring
clients have their updates rescaled to the incumbent's step before
aggregation (`hpo.exploration_step = "incumbent"`), +6.5 ± 4.3 points over
FedEx as published there; random search and FEATHERS stay as published,
where the same rescaling did not help (experiments/README.md). Its own
digits row (secret randomness, two seeds) then fell to 27.3 %: where θ's
argmax settles on lr 8 every client trains at that step, so the rescaling
is only as safe as the incumbent (experiments/README.md). Withdrawn the
same day, on digits evidence only, by a rule written before the runs: with
the incumbent's step capped at the recipe's, eight seeds with secret
randomness (as the rows run) gave FedEx at the incumbent's step 49.2 %
against 55.9 % as published, though eight seeded ones gave +6.7 ± 4.4
points (experiments/README.md, "Capped, and withdrawn"). FedEx's rows are
again FedEx as published; its Fashion-MNIST row of the earlier preset is
that configuration's, so it stands, and the rescaled form's rows are kept,
superseded.

Changed a third time on 2026-12-02, again on digits evidence only (a rule
written before the runs): random search reads the soft-error gain
(`hpo.feedback_measure = "soft_error"`) on Fashion-MNIST and MNIST. On
digits, with the feedback's noise lowered to Fashion-MNIST's order (σ_f
0.49 instead of 28.6: a diagnostic at ε = 64, the gradients' σ unchanged),
eight paired seeds chose steps lr/(1 − momentum) of 4–40 with the soft
error (the recipe's 20 at four) and of 2–5 with the loss, and the soft
error scored 14.5 ± 3.5 points more (experiments/README.md). On digits'
own noise the soft error lost (session 22), so digits keeps the loss, as
FEATHERS and FedEx did then: neither was measured in that regime.

Changed a fourth time on 2026-12-03, by the same rule and diagnostic
(written before the runs): FEATHERS reads the soft-error gain on
Fashion-MNIST and MNIST too. Eight paired digits seeds, secret randomness,
gave the soft error 66.0 % against the loss's 54.8 % (+11.3 ± 8.8 points;
steps 4–80 chosen against 1–40). FedEx keeps the loss: not measured.
"""

import ml_collections

from experiments.configs import default, dpnas

DATASETS = ("digits", "fashion_mnist", "mnist")
STRATEGIES = ("none", "feathers", "fedex", "random")
ROUND_REWARD = "_round"
ROWS = STRATEGIES + tuple(s + ROUND_REWARD for s in STRATEGIES[1:])
CLIENTS = 10
ROUNDS = {"digits": 40, "fashion_mnist": 40, "mnist": 40}
SEARCH_ROUNDS = 15  # One FEATHERS period: exploration, then exploitation.
# Development evidence: experiments/README.md, "The soft-error gain at
# Fashion-MNIST's feedback noise".
SOFT_ERROR_STRATEGIES = ("random", "feathers")
GRID = {"learning_rate": {"scale": "categorical",
                          "choices": [0.5, 1.0, 2.0, 4.0, 8.0]},
        "momentum": {"scale": "categorical", "choices": [0.5, 0.9]}}


def _parse(arg: str) -> tuple[str, str, str]:
  """(dataset, strategy, reward) of `DATASET,ROW`."""
  parts = [p.strip() for p in arg.split(",") if p.strip()]
  if len(parts) != 2 or parts[0] not in DATASETS or parts[1] not in ROWS:
    raise ValueError(f"hpo config argument {arg!r}: expected DATASET,ROW"
                     f" with DATASET in {list(DATASETS)} and ROW in"
                     f" {list(ROWS)}")
  dataset, row = parts
  if row.endswith(ROUND_REWARD):
    return dataset, row.removesuffix(ROUND_REWARD), "round"
  return dataset, row, "client"


def get_config(arg: str = "digits,none") -> ml_collections.ConfigDict:
  dataset, strategy, reward = _parse(arg)
  if dataset == "digits":
    config = default.get_config()
    # ~130 training examples a client: a local epoch of 4 Poisson batches.
    batch_fraction = 0.25
  else:
    config = dpnas.get_config(f"{dataset},federated,search,cpu_plain")
    batch_fraction = None
  f, c, p, h = config.federated, config.client, config.privacy, config.hpo
  config.nas.strategy = "one_stage"
  config.nas.controller_warmup_rounds = 0
  f.num_clients = f.clients_per_round = CLIENTS
  f.partition, f.dirichlet_alpha = "dirichlet", 0.5
  f.search_rounds = SEARCH_ROUNDS
  f.train_rounds = ROUNDS[dataset] - SEARCH_ROUNDS
  f.server_optimizer, f.server_learning_rate, f.server_momentum = (
      "sgd", 1.0, 0.0)
  if batch_fraction is not None:
    f.sampling_rate = batch_fraction
    f.local_steps = round(1 / batch_fraction)
  # The recipe, as published (no data-independent cap on its rate).
  c.learning_rate, c.momentum, c.max_round_noise = 2.0, 0.9, 0.0
  c.arch_learning_rate = 0.0  # The strategy's default.
  p.clip_norm = 0.1
  p.trust = "local"
  p.epsilon, p.delta = 3.0, 1e-5
  p.stage_share = 1.0
  h.strategy, h.reward = strategy, reward
  h.explore_aggregates = reward == "round"
  # Every strategy aggregates its clients at their own steps, as published
  # (the incumbent's step was tried for FedEx and withdrawn: docstring).
  h.exploration_step = "own"
  # The soft-error gain (1 − p_y) for random search and FEATHERS where a
  # client's gain noise σ_f·c/n_val is small (Fashion-MNIST, MNIST: ~0.013,
  # public from σ_f and the released sizes); the loss, as published, on
  # digits, where that noise is 0.4–2.0 and the soft error lost (docstring).
  h.feedback_measure = ("soft_error" if strategy in SOFT_ERROR_STRATEGIES
                        and reward == "client" and dataset != "digits"
                        else "loss")
  h.space = GRID
  h.pool_size = 0
  config.checkpoint_every = 1
  return config
