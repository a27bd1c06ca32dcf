"""Default search: digits (embedded), 10 Dirichlet(0.5) clients, (ε, δ) = (3, 1e-5).

Sized to finish within 10 minutes on 2 CPU cores. Override any field from the
command line, e.g. `--config.dataset=mnist --config.federated.train_rounds=60`.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.dataset = "digits"  # digits | mnist | fashion_mnist | cifar10
  # Folder with mnist/, fashion-mnist/, cifar10-jpeg/ (not needed for digits).
  config.data_dir = "../shared/data"
  # Decoded CIFAR-10 and transformed features; "" = $XDG_CACHE_HOME/fedsearch.
  config.cache_dir = ""
  # The model's input: pixels | scatter (ScatterNet features, J=2, L=8:
  # data-independent, no privacy cost; needs space.stem="scatter").
  config.features = "pixels"
  config.seed = 0
  # "" searches an architecture; a name from fedsearch/models.py trains that
  # hand-designed network instead (needs federated.search_rounds=0):
  # tanh_cnn_small (Tramer & Boneh's MNIST CNN), tanh_cnn (their CIFAR-10 one).
  config.model = ""
  # Server-held split of the training set, used only to print per-round
  # progress; it is in no client's data and takes no decision.
  config.monitor_fraction = 0.1

  config.space = ml_collections.ConfigDict()
  config.space.op_set = "dpnas"  # dpnas | darts
  config.space.channels = 4
  config.space.stem_multiplier = 1
  config.space.nodes = 2
  config.space.cells = 1
  config.space.groups = 4  # GroupNorm groups; 0: no norm (biases instead)
  config.space.activation = "tanh"
  config.space.max_in_edges = 0  # 0 keeps all edges (DPNAS); DARTS uses 2
  # A global average pool over a few channels of an 8x8 map loses most of
  # the signal (measured: 80 % noise-free, 60 % at centralised ε=3 vs 92 %
  # with flatten); DPNAS's gap head is for 32x32 inputs.
  config.space.head = "flatten"  # gap | flatten
  # Layout (fedsearch/search_space/space.py): conv3x3 | strided (Tramer &
  # Boneh's 8x8 stride-2 first layer); max_pool | strided_conv between
  # cells; a dense hidden layer of that many units before the classifier.
  config.space.stem = "conv3x3"
  config.space.reduction = "max_pool"
  config.space.hidden = 0
  # False: a cell's node 0 is its input as is (no 1x1 conv + norm), so a
  # cell of skip connections adds nothing (see SearchSpace.preprocess).
  config.space.preprocess = True

  # Architecture search strategy (fedsearch/nas/, one module each):
  # darts: the mixture supernet, alternating DARTS steps, then retraining
  # (train_rounds). one_stage: Direct Federated NAS, one sampled child per
  # client step, the most likely child deployed with its trained weights;
  # train_rounds is then an optional DP fine-tune.
  config.nas = ml_collections.ConfigDict()
  # reinforce: DPNAS's controller, one sampled child per weight step and a
  # policy-gradient step on its privatised validation accuracy.
  config.nas.strategy = "darts"  # darts | one_stage | reinforce
  # Retrain a found architecture instead of searching: a search's
  # genotype.json or its workdir (needs federated.search_rounds=0).
  config.nas.genotype = ""
  # reinforce: search rounds that train sampled children (uniform policy)
  # before the controller's first step, so that it does not first learn
  # that untrained convolutions lose to parameter-free ops (DPNAS starts
  # its controller at epoch 20 of 120). No architecture release meanwhile.
  config.nas.controller_warmup_rounds = 0
  # Hardware awareness (fedsearch/search_space/cost.py): the architecture
  # objective gains cost_penalty·E[cost]/max cost, and with cost_budget > 0
  # also budget_weight·max(0, E[cost] − budget)/max cost; the deployed child
  # is then made to fit the budget (hard). Costs from cost_table (a JSON
  # written by experiments/op_costs.py on the target machine), or measured
  # here when it is "".
  config.nas.cost_metric = "flops"  # params | flops | latency_ms
  config.nas.cost_penalty = 0.0
  config.nas.cost_budget = 0.0
  config.nas.budget_weight = 10.0
  config.nas.cost_table = ""

  config.federated = ml_collections.ConfigDict()
  config.federated.num_clients = 10
  config.federated.clients_per_round = 10
  config.federated.partition = "dirichlet"  # iid | dirichlet | shards
  config.federated.dirichlet_alpha = 0.5
  config.federated.shards_per_client = 2
  config.federated.val_fraction = 0.2  # client-local split for arch steps
  config.federated.search_rounds = 5  # supernet + architecture
  config.federated.train_rounds = 40  # derived model, weights only
  # One full-batch step per round: with ~100 examples per client, every
  # local step costs as much privacy as a round; under the same ε, 40 rounds
  # of 1 step reached 80.8 % against 57-64 % for 20 rounds of 2-4 steps.
  config.federated.local_steps = 1
  config.federated.sampling_rate = 1.0  # Poisson q of every local batch
  config.federated.server_optimizer = "sgd"  # sgd (FedAvg) | adam (FedAdam)
  config.federated.server_learning_rate = 1.0
  # Momentum of the server optimiser (Adam's b1 for "adam"). Post-processing
  # of the noised client updates, so free in privacy; it averages their noise
  # over rounds, which is what stateless clients cannot do.
  config.federated.server_momentum = 0.5
  config.federated.num_devices = 0  # 0 = all local devices
  # Clients run this many at a time (a scan over chunks, each vmapped and
  # sharded over the devices), so memory grows with the chunk, not with
  # clients_per_round; 0 runs the round's clients all at once.
  config.federated.client_chunk = 0

  config.client = ml_collections.ConfigDict()
  # dpsgd: flat clipping at privacy.clip_norm, fixed learning_rate.
  # hyfree: HyFreeDP, automatic clipping and learning rate (see hyfree below);
  # learning_rate is then unused.
  config.client.optimizer = "dpsgd"
  config.client.learning_rate = 1.0
  # A data-independent cap on the learning rate (fedsearch/runner/job.py,
  # client_learning_rate): the noise one round adds to each parameter of the
  # server's model (std, through the server momentum) stays within this, so
  # the defaults keep training when σ grows or clients shrink (fewer
  # clients' examples per batch, a smaller ε). 0: the rate as given.
  config.client.max_round_noise = 0.06
  config.client.momentum = 0.9
  config.client.weight_decay = 0.0
  # 0: the strategy's default (darts 3e-2, one_stage 1.0, reinforce 0.05;
  # see fedsearch/nas/).
  config.client.arch_learning_rate = 0.0
  config.client.arch_weight_decay = 1e-3

  config.privacy = ml_collections.ConfigDict()
  # inf: no privacy, the same schedule with no noise and nothing accounted
  # (a ceiling to measure the privacy's cost against; never a private result).
  config.privacy.epsilon = 3.0
  config.privacy.delta = 1e-5
  config.privacy.clip_norm = 1.0
  config.privacy.arch_clip_norm = 0.1
  # pld: privacy loss distributions (pessimistic discretisation), the
  # tightest sound accountant here; rdp: Rényi DP (looser, ~8 % more ε for
  # the same σ on the default run).
  config.privacy.accountant = "pld"  # pld | rdp
  # 0 calibrates σ to spend exactly ε over the whole schedule; a positive
  # value is used as given, and the run refuses to start if it overspends.
  config.privacy.noise_multiplier = 0.0
  # Part of δ set aside for truncating Poisson batches to a static size.
  config.privacy.truncation_delta_fraction = 0.1
  config.privacy.nan_safe = True  # vmap backend; ghost is always NaN-safe
  # Per-example clipping of weight steps: vmap (jax-privacy, per-example
  # gradients) | ghost (per-example norms without per-example gradients).
  config.privacy.dp_backend = "vmap"
  # Who is trusted with what (fedsearch/privacy/mechanisms.py):
  # aggregate (default) = each client adds a 1/clients_per_round share of
  # the noise and only the round's sum is seen (secure aggregation,
  # simulated): the noise of centralised DP-SGD, so the default digits job
  # reaches 88.6-89.4 % where local noise reaches 64-81 % (seeds 0-2;
  # experiments/README.md).
  # Needs one local step, no hpo and no HyFreeDP (refused otherwise, naming
  # the field) unless a round has one client. local = each client adds the
  # full noise to each of its releases; nothing is trusted; any schedule.
  config.privacy.trust = "aggregate"
  # What one neighbouring dataset adds or removes: example (example-level
  # DP) | client (a whole client: DP-FedAvg, McMahan et al. 2018; needs
  # trust = aggregate). Under client, clip_norm and arch_clip_norm bound a
  # client's whole round delta of the weights and of the architecture,
  # clients take part by Poisson(clients_per_round / num_clients) sampling,
  # and local steps are plain (no per-example clipping, no noise).
  config.privacy.unit = "example"
  # unit = client: adaptive clipping (Andrew et al. 2021) scales both bounds
  # so that they follow this quantile of the clients' update norms, from a
  # privatised count released with each round (σ_b = clients_per_round/20);
  # 0 keeps them fixed. The learning rate is the scale's geometric step.
  config.privacy.adaptive_clip_quantile = 0.0
  config.privacy.adaptive_clip_learning_rate = 0.2
  # Noise and Poisson draws (fedsearch/privacy/randomness.py): secret = from
  # the OS entropy, kept owner-only in the workdir's secret_key; seeded =
  # from `seed` (reproducible simulation: whoever knows the config knows the
  # noise).
  config.privacy.randomness = "secret"  # secret | seeded
  # Each client releases its size once, plus N(0, σ_n²) (sensitivity 1); the
  # FedAvg weights, normalisers and padded shapes are computed from that
  # (fedsearch/privacy/client_sizes.py).
  config.privacy.size_noise_multiplier = 10.0
  # Share of privacy.epsilon this run spends. A search that a retraining
  # stage will follow (nas.genotype = its workdir) gets a share < 1; the
  # retraining then composes the search's releases (privacy_events.json) and
  # spends the rest, so privacy.epsilon is the total of both stages.
  config.privacy.stage_share = 1.0
  # This run is one of a private random-search tuning (Papernot & Steinke,
  # ICLR 2022; fedsearch/privacy/accounting.py:Tuning): the tuning trains K
  # runs, K drawn with this mean (truncated negative binomial of
  # tuning_shape: 0 logarithmic, 1 geometric, inf Poisson), each with its
  # hyperparameters drawn from a fixed set, and keeps the best by the
  # monitor split; σ is calibrated so that the selected run spends ε.
  # Needs privacy.accountant=rdp. 0: not a tuning's run.
  config.privacy.tuning_mean_runs = 0.0
  config.privacy.tuning_shape = 0.0

  # HyFreeDP (client.optimizer=hyfree); constants from Liu, Bu et al. 2025.
  config.hyfree = ml_collections.ConfigDict()
  config.hyfree.probe_every = 10  # K: global steps between loss probes
  config.hyfree.probe_scales = (0.0, 1.0, 2.0)  # probes at s·η along the update
  # η0 and the two below depart from the paper (fedsearch/privacy/auto_lr.py:
  # its 1e-4 and ×10 moves on every fit trained nothing on digits). 0: the
  # rate DP-SGD would take (client.learning_rate after the round-noise cap),
  # with automatic clipping at R = privacy.clip_norm: DP-SGD's first steps.
  config.hyfree.initial_learning_rate = 0.0
  config.hyfree.initial_loss_clip = 1.0  # R_l before the first privatised loss
  config.hyfree.max_change = 2.0  # η moves by at most this factor per fit
  # z: η moves only where the probes' fit is significant at this many
  # standard errors of their public noise (3: ~0.4 % false moves a probe);
  # 0 moves it on every fit (paper).
  config.hyfree.significance = 3.0
  config.hyfree.loss_clip_factor = 2.0  # R_l = factor × last privatised loss
  # False: R_l only grows (auto_lr.py: following the clipped loss down
  # collapses it); True: it follows the loss both ways (paper).
  config.hyfree.loss_clip_shrinks = False
  # λ: probes pool their evidence while η stays, an earlier one's weight
  # decaying by λ per later probe (auto_lr.py); 0: each probe alone (paper).
  config.hyfree.evidence_decay = 0.9
  config.hyfree.kappa = 0.01  # σ_g = (1 + κ)·σ_ref; the loss probes get the rest
  config.hyfree.gamma = 0.01  # automatic clipping g/(‖g‖ + γ)

  # Hyperparameter search jointly with the architecture (search rounds); the
  # training rounds then use the chosen configuration. Each search round, a
  # client reports its validation-loss decrease, clipped per example to
  # ±feedback_clip and noised (σ calibrated so the feedback spends
  # feedback_epsilon_fraction of ε; the gradients get the rest).
  config.hpo = ml_collections.ConfigDict()
  config.hpo.strategy = "none"  # none | feathers | fedex | random
  config.hpo.pool_size = 40  # 0: every combination of categorical choices
  config.hpo.period = 15  # FEATHERS: rounds between exploration phases
  config.hpo.gamma = 6.0  # FEATHERS: phase length = round(γ·entropy)
  config.hpo.alpha = 0.5  # FEATHERS: reward step
  # FEATHERS: "decay" (as published: r ← r + α(gain − r) when drawn, α·r
  # otherwise) | "mean" (r = the FedAvg-weighted mean of every gain released
  # for the configuration; hyperparameters/feathers.py).
  config.hpo.feathers_memory = "decay"
  # FEATHERS: "round" (as published: every client of an exploration round
  # explores, none is aggregated) | "client" (once feedback has arrived, a
  # client explores with probability explore_share; the others run the
  # incumbent and only they are aggregated; hyperparameters/feathers.py).
  config.hpo.feathers_exploration = "round"
  config.hpo.explore_share = 0.5
  # FEATHERS: exploration rounds restart from the stored weights, as the
  # paper does. True aggregates them too (their gradients cost ε either
  # way), but the clients that draw large steps then carry their noise into
  # the model: on digits (8 seeds) that cost 9.8 points
  # (fedsearch/hyperparameters/feathers.py, experiments/README.md).
  config.hpo.explore_aggregates = False
  # FedEx, random (and FEATHERS with explore_aggregates): "own" aggregates
  # each client's update as trained (as published); "incumbent" rescales it
  # to the step of the strategy's best, capped at this config's default step
  # (post-processing, no ε;
  # fedsearch/hyperparameters/exploration.py).
  config.hpo.exploration_step = "own"
  config.hpo.fedex_step = 1.0  # FedEx: exponentiated-gradient step size
  # What a gain measures: "client" (its own update, as the methods are
  # published) | "round" (the round's released model; every client of a
  # round on one configuration). Under `local` noise a client's own update
  # carries √(clients a round) times the noise of the released model.
  config.hpo.reward = "client"
  config.hpo.feedback_clip = 0.5
  # What a gain's per-example decrease reads: "loss" (cross-entropy, as the
  # methods are published) | "error" (0/1: the accuracy an update added) |
  # "soft_error" (1 − p_y) | "brier" (the Brier score). Same clip and ε
  # (hyperparameters/feedback.py).
  config.hpo.feedback_measure = "loss"
  # Random search's best: "mean" (the highest mean gain, as published) |
  # "blocked" (the configuration effect fitted with round and client
  # effects, hyperparameters/random_search.py). No ε either way.
  config.hpo.random_estimate = "mean"
  # Random search's draws: 0 uniform over the pool every round (as
  # published); k > 0 successive halving every k search rounds
  # (hyperparameters/random_search.py). No ε.
  config.hpo.random_halving_rounds = 0
  # 2 %: the gradients' σ rises 1.6 % on Fashion-MNIST's 10-client schedule
  # (`configs/hpo.py`) and 1.7 % on digits, where 10 % cost 9.5 % and, on
  # digits dev runs, 11 points of FEATHERS's accuracy (55.9 -> 67.0 %,
  # seeds 0-1). A client's gain noise is σ_f·feedback_clip/n_val: 0.013
  # for a median Fashion-MNIST client (~1,100 validation examples).
  config.hpo.feedback_epsilon_fraction = 0.02
  # {name: {scale, low, high | choices}}; names from client hyperparameters.
  # FEATHERS's ranges.
  config.hpo.space = {
      "learning_rate": {"scale": "log", "low": 1e-3, "high": 1e-1},
      "weight_decay": {"scale": "log", "low": 1e-6, "high": 1e-4},
      "momentum": {"scale": "uniform", "low": 0.6, "high": 1.0},
      "arch_learning_rate": {"scale": "log", "low": 1e-4, "high": 1e-2},
      "arch_weight_decay": {"scale": "log", "low": 1e-4, "high": 1e-2},
  }

  config.checkpoint_every = 1  # rounds
  return config
