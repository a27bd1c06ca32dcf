"""The main job: a federated DP architecture search ending in a trained model.

Phase 1 (search rounds): clients train the supernet's weights and the
architecture parameters, both DP, with the strategy `nas.strategy` names
(`search_space/strategies.py`): the DARTS mixture (alternating first-order
DARTS steps) or one-stage sampled children (Direct Federated NAS). At its end
the derived genotype is deployed with the weights it already has
(`deployed_weights/`). Phase 2 (train rounds, optional for one-stage): the
genotype is fixed and its model, starting from those weights, is trained by
DP FedAvg (retraining for DARTS, a fine-tune for one-stage). Both phases draw
on one privacy budget calibrated before round one. Test data is read once,
at the end, for the report of both the deployed and the final model.

With `nas.strategy=reinforce` the first `nas.controller_warmup_rounds`
search rounds train sampled children only (phase "warmup"). With
`nas.genotype` set there is no search: the named genotype is trained from
fresh weights (DPNAS's retraining stage, a separate budget).
"""

import dataclasses
import functools
import json
import pathlib
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from fedsearch import data as data_lib
from fedsearch import federated as fed
from fedsearch import search_space as ss
from fedsearch.errors import ConfigError
from fedsearch import hyperparameters as hp_lib
from fedsearch.hyperparameters import strategy as hp_strategy
from fedsearch.privacy import auto_lr
from fedsearch.runner.plan import NoiseMultipliers, PrivacyPlan, make_plan
from fedsearch.runner.workdir import GENOTYPE_FILE, Workdir, load_weights
from fedsearch.runner.workdir import write_atomic
from fedsearch.search_space import cost as cost_lib
from fedsearch.search_space import genotype as genotype_lib
from fedsearch.search_space import strategies

# FedAvg(M) with server momentum, or FedAdam (Reddi et al. 2021).
_SERVER_OPTIMIZERS = {
    "sgd": lambda lr, momentum: optax.sgd(lr, momentum or None),
    "adam": lambda lr, momentum: optax.adam(lr, b1=momentum),
}


@dataclasses.dataclass(frozen=True)
class Federation:
  """Device-resident examples and the host-side description of the clients."""

  x: jax.Array
  y: jax.Array
  splits: fed.ClientSplits
  monitor_x: np.ndarray
  monitor_y: np.ndarray
  test_x: np.ndarray
  test_y: np.ndarray
  input_shape: tuple[int, ...]
  num_classes: int


def build_federation(config) -> Federation:
  ds = data_lib.load_dataset(config.dataset, config.data_dir,
                             config.cache_dir or None)
  x = data_lib.normalize(ds.name, ds.train_x, ds.pixel_max)
  if not 0 <= config.monitor_fraction < 1:
    raise ConfigError("monitor_fraction must be in [0, 1), got"
                      f" {config.monitor_fraction}")
  if not 0 < config.federated.val_fraction < 1:
    raise ConfigError("federated.val_fraction must be in (0, 1), got"
                      f" {config.federated.val_fraction}")
  client_rows, monitor_rows = data_lib.carve(len(x), config.monitor_fraction,
                                             config.seed)
  f = config.federated
  parts = data_lib.partition(ds.train_y[client_rows], f.partition,
                             f.num_clients, config.seed, f.dirichlet_alpha,
                             f.shards_per_client)
  splits = fed.split_clients([client_rows[p] for p in parts], f.val_fraction,
                             config.seed)
  return Federation(jnp.asarray(x), jnp.asarray(ds.train_y), splits,
                    x[monitor_rows], ds.train_y[monitor_rows],
                    data_lib.normalize(ds.name, ds.test_x, ds.pixel_max),
                    ds.test_y, x.shape[1:], ds.num_classes)


def build_plan(config) -> PrivacyPlan:
  f = config.federated
  for field in ("search_rounds", "train_rounds"):
    if f[field] < 0:
      raise ConfigError(f"federated.{field} must be >= 0, got {f[field]}")
  if f.search_rounds + f.train_rounds < 1 or f.local_steps < 1:
    raise ConfigError("federated.search_rounds + federated.train_rounds and"
                      " federated.local_steps must be >= 1")
  if not 1 <= f.clients_per_round <= f.num_clients:
    raise ConfigError(
        f"federated.clients_per_round must be in [1, federated.num_clients="
        f"{f.num_clients}], got {f.clients_per_round}")
  schedule = fed.client_schedule(f.num_clients, f.clients_per_round,
                                 f.search_rounds + f.train_rounds, config.seed)
  p = config.privacy
  lr_config = auto_lr_config(config)
  steps, rate = round_shape(config)
  return make_plan(schedule, search_rounds=f.search_rounds,
                   local_steps=steps, sampling_rate=rate,
                   num_clients=f.num_clients, epsilon=p.epsilon,
                   delta=p.delta,
                   truncation_delta_fraction=p.truncation_delta_fraction,
                   accountant=p.accountant,
                   probe_every=lr_config.probe_every if lr_config else 0,
                   releases_per_probe=(lr_config.releases_per_probe
                                       if lr_config else 0),
                   kappa=config.hyfree.kappa,
                   feedback=config.hpo.strategy != "none",
                   feedback_fraction=config.hpo.feedback_epsilon_fraction,
                   arch_steps=not strategies.traits(config.nas.strategy).one_stage,
                   arch_warmup_rounds=warmup_rounds(config))


def warmup_rounds(config) -> int:
  """Search rounds that train sampled children before the controller moves."""
  rounds = config.nas.controller_warmup_rounds
  if rounds and config.nas.strategy != "reinforce":
    raise ConfigError("nas.controller_warmup_rounds applies to"
                      " nas.strategy='reinforce' only; set it to 0 for"
                      f" {config.nas.strategy!r}")
  return rounds


def arch_learning_rate(config) -> float:
  """`client.arch_learning_rate`, or the strategy's default when it is 0."""
  if config.client.arch_learning_rate < 0:
    raise ConfigError("client.arch_learning_rate must be >= 0 (0: the"
                      f" strategy's default), got {config.client.arch_learning_rate}")
  return (config.client.arch_learning_rate
          or strategies.traits(config.nas.strategy).arch_learning_rate)


def hpo_from(config):
  """(strategy or None, pool {name: (P,) values} or None)."""
  h = config.hpo
  strategy = hp_strategy.make_strategy(
      h.strategy, period=h.period, gamma=h.gamma, alpha=h.alpha,
      fedex_step=h.fedex_step)
  if strategy is None:
    return None, None
  space = hp_lib.space_from_dict(h.space.to_dict())
  allowed = (*fed.TUNABLE, *fed.ROUND_HYPERPARAMETERS)
  unknown = {p.name for p in space} - set(allowed)
  if unknown:
    raise ConfigError(f"hpo.space: {sorted(unknown)} cannot be tuned; allowed:"
                      f" {list(allowed)}")
  pool = hp_lib.draw_pool(space, h.pool_size, config.seed)
  if "local_steps" in pool:
    steps = pool["local_steps"]
    if np.any(steps < 1) or np.any(steps != np.round(steps)):
      raise ConfigError("hpo.space.local_steps must draw integers >= 1; use"
                        " a categorical scale, e.g. choices [1, 2, 4]")
  if "sampling_rate" in pool and not np.all(
      (pool["sampling_rate"] > 0) & (pool["sampling_rate"] <= 1)):
    raise ConfigError("hpo.space.sampling_rate must lie in (0, 1]")
  return strategy, pool


def round_shape(config) -> tuple[int, float]:
  """Static local steps and the Poisson rate the accountant charges.

  When a search draws them per client (`local_steps`, `sampling_rate` in
  `hpo.space`), every client is charged the pool's maxima, whatever it
  drew: an upper bound that keeps the plan data-independent.
  """
  f = config.federated
  _, pool = hpo_from(config)
  pool = pool or {}
  steps = int(max(pool["local_steps"])) if "local_steps" in pool else f.local_steps
  rate = (float(max(pool["sampling_rate"])) if "sampling_rate" in pool
          else f.sampling_rate)
  return steps, rate


def auto_lr_config(config, loss_noise_multiplier: float = 1.0
                   ) -> auto_lr.AutoLRConfig | None:
  """HyFreeDP's learning-rate constants, or None for plain DP-SGD."""
  fed.check_optimizer(config.client.optimizer)
  if config.client.optimizer != "hyfree":
    return None
  h = config.hyfree
  return auto_lr.AutoLRConfig(
      probe_every=h.probe_every, probe_scales=tuple(h.probe_scales),
      initial_learning_rate=h.initial_learning_rate,
      initial_loss_clip=h.initial_loss_clip, max_change=h.max_change,
      loss_clip_factor=h.loss_clip_factor,
      loss_noise_multiplier=loss_noise_multiplier)


def read_named_file(field: str, value: str, path, parse: Callable,
                    problem: str, remedy: str):
  """`parse` of the text of the file a config field names, or one
  ConfigError naming the field, what went wrong and what to do."""
  try:
    return parse(pathlib.Path(path).read_text())
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise ConfigError(f"{field}={value!r} {problem} ({type(e).__name__}:"
                      f" {e}); {remedy}") from e


def given_genotype(config, space: ss.SearchSpace) -> ss.Genotype | None:
  """The genotype `nas.genotype` names (a genotype.json or a search's
  workdir), or None: then the run searches."""
  path = config.nas.genotype
  if not path:
    return None
  if config.federated.search_rounds:
    raise ConfigError(
        f"nas.genotype={path!r} retrains a found architecture: set"
        " federated.search_rounds=0 (got"
        f" {config.federated.search_rounds})")
  file = pathlib.Path(path)
  genotype = read_named_file(
      "nas.genotype", path,
      file / GENOTYPE_FILE if file.is_dir() else file, ss.Genotype.from_json,
      "is not a readable genotype",
      "name the genotype.json a search wrote or its workdir")
  try:
    genotype_lib.check_genotype(genotype, space)
  except ConfigError as e:
    raise ConfigError(f"nas.genotype={config.nas.genotype!r}: {e}; set"
                      " config.space as in the search") from e
  return genotype


def search_space_from(config, num_classes: int) -> ss.SearchSpace:
  return ss.SearchSpace(num_classes=num_classes, **config.space.to_dict())


def client_config(config, sigmas: NoiseMultipliers) -> fed.ClientConfig:
  c = config.client
  lr_config = auto_lr_config(config, sigmas.loss)
  return fed.ClientConfig(
      clip_norm=config.privacy.clip_norm,
      arch_clip_norm=config.privacy.arch_clip_norm,
      noise_multiplier=sigmas.gradient,
      learning_rate=c.learning_rate, momentum=c.momentum,
      weight_decay=c.weight_decay, arch_learning_rate=arch_learning_rate(config),
      arch_weight_decay=c.arch_weight_decay, nan_safe=config.privacy.nan_safe,
      dp_backend=config.privacy.dp_backend,
      optimizer=c.optimizer, auto_clip_gamma=config.hyfree.gamma,
      feedback_clip=config.hpo.feedback_clip,
      feedback_noise_multiplier=sigmas.feedback,
      **({"auto_lr": lr_config} if lr_config else {}))


def server_optimizer(config) -> optax.GradientTransformation:
  name = config.federated.server_optimizer
  if name not in _SERVER_OPTIMIZERS:
    raise ConfigError(f"federated.server_optimizer={name!r} is not allowed;"
                      f" choose one of {sorted(_SERVER_OPTIMIZERS)}")
  momentum = config.federated.server_momentum
  if not 0 <= momentum < 1:
    raise ConfigError("federated.server_momentum must be in [0, 1), got"
                      f" {momentum}")
  return _SERVER_OPTIMIZERS[name](config.federated.server_learning_rate,
                                  momentum)


def make_mesh(config):
  available = len(jax.devices())
  wanted = config.federated.num_devices or available
  if not 1 <= wanted <= available:
    raise ConfigError(f"federated.num_devices must be in [0, {available}],"
                      f" got {config.federated.num_devices}")
  return fed.client_mesh(wanted) if wanted > 1 else None


def accuracy_and_loss(predict: Callable, x, y, batch: int = 1024):
  correct, loss = 0.0, 0.0
  for i in range(0, len(y), batch):
    logits = predict(jnp.asarray(x[i:i + batch]))
    labels = jnp.asarray(y[i:i + batch])
    correct += float(jnp.sum(jnp.argmax(logits, -1) == labels))
    loss += float(jnp.sum(
        optax.softmax_cross_entropy_with_integer_labels(logits, labels)))
  return correct / max(len(y), 1), loss / max(len(y), 1)


@dataclasses.dataclass(frozen=True)
class CostModel:
  table: cost_lib.CostTable
  penalty: Callable  # arch_params -> scalar, added to the architecture loss


def cost_model(config, space, input_shape) -> CostModel | None:
  """The op cost table and penalty, when `nas.cost_*` asks for them."""
  n = config.nas
  cost_lib.check_metric(n.cost_metric)
  for field in ("cost_penalty", "cost_budget", "budget_weight"):
    if n[field] < 0:
      raise ConfigError(f"nas.{field} must be >= 0, got {n[field]}")
  if n.cost_penalty == 0 and n.cost_budget == 0:
    return None
  if n.cost_table:
    table = read_named_file(
        "nas.cost_table", n.cost_table, n.cost_table,
        cost_lib.CostTable.from_json, "cannot be read as a cost table",
        "build one with `python -m experiments.op_costs --out=FILE` on the"
        " target machine")
    if table.op_names != space.op_names:
      raise ConfigError(f"nas.cost_table={n.cost_table!r} was built for ops"
                        f" {list(table.op_names)}, not this space's")
  else:
    table = cost_lib.build_cost_table(space, input_shape)
  return CostModel(table, cost_lib.cost_penalty(
      table, n.cost_metric, space.num_edges, n.cost_penalty, n.cost_budget,
      n.budget_weight))


class _Phase:
  """What differs between search and training: model, round, inputs.

  `strategy` is the architecture search strategy while searching, None once
  the genotype is fixed (`apply_fn` is then the derived model).
  """

  def __init__(self, name, apply_fn, strategy, config, sigmas, mesh, plan,
               splits, arch_penalty=None, train_arch=True):
    self.name = name
    # A controller warm-up runs the strategy's children, architecture fixed.
    self.train_arch = strategy is not None and train_arch
    one_stage = self.train_arch and strategy.one_stage
    self.predict_fn = jax.jit(strategy.predict if strategy else apply_fn)
    # Alternating strategies step the architecture on validation batches.
    self.val_batches = self.train_arch and not one_stage
    # Without architecture steps the validation split is free for the
    # weights, unless the hyperparameter feedback reads it.
    self.all_local_data = not self.train_arch or (
        one_stage and config.hpo.strategy == "none")
    clients = client_config(config, sigmas)
    self.round_fn = fed.make_round(
        fed.make_local_update(
            apply_fn, clients, self.train_arch, one_stage, arch_penalty,
            strategy.active_weights if strategy else None,
            strategy.reinforce if self.train_arch else None),
        server_optimizer(config), mesh,
        (functools.partial(auto_lr.apply_report, config=clients.auto_lr)
         if clients.optimizer == "hyfree" else None),
        shared_program=strategy.shared_program if strategy else True)
    train_sizes = (splits.sizes() if self.all_local_data
                   else list(map(len, splits.train)))
    self.batch_sizes = (
        plan.padded_batch_size(train_sizes),
        plan.padded_batch_size(map(len, splits.val)) if self.val_batches
        else 1)
    self.devices = 1 if mesh is None else mesh.size


def run(config: ml_collections.ConfigDict, workdir: str,
        report: Callable[[str], None] = print,
        stop_after_round: int | None = None) -> dict:
  """Runs (or resumes) a search; returns the summary written to the workdir.

  Args:
    config: see experiments/configs/default.py.
    workdir: output folder; a run started there before is resumed from its
      last finished round.
    report: receives one progress line per round.
    stop_after_round: stop (as if interrupted) once this many rounds are
      checkpointed; for testing resumption.
  """
  start = time.time()
  work = Workdir(workdir, config.to_json(), config.checkpoint_every)
  if work.summary_file.exists():
    report(f"{work.summary_file} exists: the run is already complete")
    return json.loads(work.summary_file.read_text())

  federation = build_federation(config)
  space = search_space_from(config, federation.num_classes)
  plan = build_plan(config)
  sigmas = plan.noise_multipliers(config.privacy.noise_multiplier)
  mesh = make_mesh(config)
  f = config.federated
  total_rounds = f.search_rounds + f.train_rounds
  nas = strategies.make_strategy(config.nas.strategy, space)
  retrained = given_genotype(config, space)
  costs = cost_model(config, space, federation.input_shape)
  search = _Phase("search", nas.apply, nas, config, sigmas, mesh, plan,
                  federation.splits, costs.penalty if costs else None)
  warmup = (_Phase("warmup", nas.apply, nas, config, sigmas, mesh, plan,
                   federation.splits, train_arch=False)
            if plan.arch_warmup_rounds else None)
  loss_sigma = (f", loss probes σ_l={sigmas.loss:.4f}"
                if plan.probe_every else "")
  report(f"noise multiplier σ={sigmas.gradient:.4f}{loss_sigma} for (ε, δ)=({plan.epsilon},"
         f" {plan.delta}) over {total_rounds} rounds; clients"
         f" {f.clients_per_round}/{f.num_clients} per round,"
         f" {search.devices} device(s)")
  server_opt = server_optimizer(config)
  init_key, arch_key = jax.random.split(jax.random.key(config.seed))
  hyfree_carried = (auto_lr.init_carried(auto_lr_config(config))
                    if plan.probe_every else {})

  def server_state(weights, arch, carried):
    return fed.server_init({"weights": weights, "arch": arch,
                            **({"carried": carried} if carried else {})},
                           server_opt)

  # A retraining run never builds the supernet.
  search_state = None if retrained is not None else server_state(
      ss.init_supernet(space, init_key, federation.input_shape),
      nas.init(arch_key),
      {**hyfree_carried,
       **({"reward_baseline": fed.init_reward_baseline()}
          if nas.reinforce and f.search_rounds else {})})

  def derived_phase(genotype):
    return _Phase("train", ss.derived_apply(space, genotype), None, config,
                  sigmas, mesh, plan, federation.splits)

  def place(server_state):
    # Restored or freshly built arrays may be committed to one device; the
    # sharded round wants them replicated over the mesh.
    if mesh is None:
      return server_state
    return jax.device_put(server_state,
                          jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))

  def derived_state(weights, carried):
    # The learning rate HyFreeDP found goes on with the derived model; the
    # controller's reward baseline is done with.
    return place(server_state(weights, {}, {
        k: v for k, v in carried.items() if k != "reward_baseline"}))

  def retrain_state(genotype):
    """A given genotype's model with fresh weights."""
    return derived_state(ss.derived_model(space, genotype).init(
        init_key, jnp.zeros((1, *federation.input_shape)))["params"],
                         hyfree_carried)

  def to_derived_state(supernet_state, genotype):
    return derived_state(
        ss.extract_weights(supernet_state.params["weights"], space, genotype,
                           federation.input_shape),
        supernet_state.params.get("carried", {}))

  def finish_search(supernet_state):
    arch = supernet_state.params["arch"]
    genotype = nas.derive(arch)
    if costs and config.nas.cost_budget > 0:
      genotype = strategies.choices_genotype(cost_lib.fit_budget(
          strategies.genotype_choices(genotype, space), arch, costs.table,
          config.nas.cost_metric, config.nas.cost_budget), space)
    state = to_derived_state(supernet_state, genotype)
    # Weights first: a genotype file on disk means the deployment is complete.
    work.save_weights("deployed", state.params["weights"])
    write_atomic(work.genotype_file, genotype.to_json())
    report(f"derived genotype: {genotype.edges}")
    return genotype, derived_phase(genotype), state

  strategy, pool = hpo_from(config)
  hpo_state = (strategy.init(config.hpo.pool_size) if strategy else None)
  feedback_size = max(map(len, federation.splits.val))

  def hparams_for(ids):
    # Host arrays, like the rest of RoundInputs: jit places them.
    ids = np.asarray(ids)
    return {name: np.asarray(values[ids], np.float32)
            for name, values in pool.items()}

  def checkpoint(state, hpo_state):
    return {"server": state, "hpo": hpo_state} if strategy else state

  rounds_done = work.latest_round()
  genotype, state, phase = None, search_state, search
  if retrained is not None:
    genotype, phase, state = (retrained, derived_phase(retrained),
                              retrain_state(retrained))
  elif rounds_done > f.search_rounds or (rounds_done == f.search_rounds and
                                       work.genotype_file.exists()):
    genotype = ss.Genotype.from_json(work.genotype_file.read_text())
    phase = derived_phase(genotype)
    state = to_derived_state(search_state, genotype)
  if rounds_done:
    restored = work.restore_state(rounds_done, checkpoint(state, hpo_state))
    state, hpo_state = ((restored["server"], restored["hpo"]) if strategy
                        else (restored, None))
    report(f"resuming after round {rounds_done}")
  metrics = [m for m in work.metrics() if m["round"] <= rounds_done]

  state = place(state)
  base_key = jax.random.key(config.seed + 1)
  hpo_key = jax.random.key(config.seed + 2)
  def searching_hps(phase) -> bool:
    return strategy is not None and phase.train_arch

  def client_slots(round_, phase) -> int:
    """The round's clients padded to a multiple of the devices."""
    return -(-len(plan.schedule[round_]) // phase.devices) * phase.devices

  def host_inputs(round_, phase, ids):
    clients = plan.schedule[round_]
    values = hparams_for(ids) if ids is not None else {}
    inputs = fed.round_inputs(
        federation.splits, clients, seed=config.seed,
        round_=round_, steps=plan.local_steps,
        sampling_rate=plan.sampling_rate,
        batch_sizes=phase.batch_sizes, train_arch=phase.val_batches,
        train_on_all_local_data=phase.all_local_data,
        client_multiple=phase.devices,
        feedback_size=feedback_size if searching_hps(phase) else 0,
        client_steps=values.pop("local_steps", None),
        client_rates=values.pop("sampling_rate", None))
    return inputs._replace(hparams=values) if ids is not None else inputs

  def fixed_ids(round_, phase):
    """Every client's configuration index when none is being searched."""
    if strategy is None:
      return None
    return np.full(client_slots(round_, phase), int(strategy.best(hpo_state)))

  prefetched = None
  for round_ in range(rounds_done, total_rounds):
    if round_ == f.search_rounds and genotype is None:
      genotype, phase, state = finish_search(state)
      prefetched = None
    elif genotype is None and warmup is not None:
      phase = warmup if round_ < plan.arch_warmup_rounds else search
    searching = searching_hps(phase)
    aggregate, ids = True, None
    if searching:
      hpo_state, ids, aggregate = strategy.choose(
          hpo_state, jax.random.fold_in(hpo_key, round_),
          client_slots(round_, phase))
      aggregate = bool(aggregate)
      inputs = host_inputs(round_, phase, ids)
    elif prefetched is not None and prefetched[0] == round_:
      inputs = prefetched[1]
    else:
      inputs = host_inputs(round_, phase, fixed_ids(round_, phase))
    state, gains = phase.round_fn(state, federation.x, federation.y, inputs,
                                  base_key, round_, aggregate)
    # The round runs asynchronously: draw the next round's batches on the
    # host meanwhile, when they do not depend on this round's results (no
    # controller update, same phase).
    next_round = round_ + 1
    if (not searching and next_round < total_rounds
        and next_round not in (f.search_rounds, plan.arch_warmup_rounds)):
      prefetched = (next_round, host_inputs(next_round, phase,
                                            fixed_ids(next_round, phase)))
    if searching:
      # The gains come back sharded over the client mesh; the controller
      # is small host-side work on the default device.
      gains = np.asarray(gains)
      hpo_state = strategy.update(hpo_state, np.asarray(ids), gains,
                                  inputs.client_weights, aggregate)
    acc, loss = accuracy_and_loss(
        lambda x: phase.predict_fn(state.params["weights"],
                                   state.params["arch"], x),
        federation.monitor_x, federation.monitor_y)
    eps = plan.spent(sigmas, round_ + 1)
    record = {"round": round_ + 1, "phase": phase.name,
              "monitor_accuracy": acc, "monitor_loss": loss, "epsilon": eps,
              "elapsed_s": time.time() - start}
    if searching:
      weights = np.asarray(inputs.client_weights)
      record["hp_measure_only"] = not bool(aggregate)
      record["hp_mean_gain"] = float(
          np.sum(weights * np.asarray(gains)) / np.sum(weights))
      record["hp_best_index"] = int(strategy.best(hpo_state))
    carried_now = state.params.get("carried", {})
    if "reward_baseline" in carried_now:
      # The server's baseline: a moving average of privatised rewards.
      record["reward_baseline"] = float(fed.client.baseline_value(
          carried_now["reward_baseline"], jnp.float32(0.0)))
    if "auto_lr" in carried_now:
      lr_state = carried_now["auto_lr"]
      record["learning_rate"] = float(lr_state.learning_rate)
      record["loss_clip"] = float(lr_state.loss_clip)
    metrics.append(record)
    report(f"round {round_ + 1:3d}/{total_rounds} [{phase.name}] loss"
           f" {loss:.4f} acc {acc:.4f} ε {eps:.3f}")
    last_of_phase = round_ + 1 in (f.search_rounds, total_rounds)
    work.save_state(round_ + 1, checkpoint(state, hpo_state),
                    force=last_of_phase)
    work.write_metrics(metrics)
    if stop_after_round is not None and round_ + 1 >= stop_after_round:
      work.close()
      return {}

  if genotype is None:  # No training rounds: deploy the supernet's weights.
    genotype, phase, state = finish_search(state)
  weights = state.params["weights"]
  test_on = lambda w: accuracy_and_loss(
      lambda x: phase.predict_fn(w, {}, x), federation.test_x,
      federation.test_y)
  test_acc, test_loss = test_on(weights)
  work.save_weights("final", weights)
  streams = plan.streams(sigmas, total_rounds)
  chosen = int(strategy.best(hpo_state)) if strategy else None
  summary = {
      "dataset": config.dataset,
      "partition": f"{f.partition}" + (f"(alpha={f.dirichlet_alpha})"
                                       if f.partition == "dirichlet" else ""),
      "clients": f.num_clients,
      "clients_per_round": f.clients_per_round,
      "genotype": json.loads(genotype.to_json()),
      "space": space.to_dict(),
      "input_shape": list(federation.input_shape),
      **({"nas_strategy": config.nas.strategy,
          # The derived model with the weights the search left it, before
          # any training round, and the ε spent up to then.
          "deployed_test_accuracy": test_on(load_weights(
              work.path, weights, "deployed"))[0],
          "deployed_epsilon": plan.spent(sigmas, f.search_rounds)}
         if retrained is None else {"retrained_from": config.nas.genotype}),
      "deployed_cost": {
          **cost_lib.measure_model(space, genotype, federation.input_shape),
          "hardware": cost_lib.hardware_name()},
      **({"cost_table": {"metric": config.nas.cost_metric,
                         "penalty": config.nas.cost_penalty,
                         "budget": config.nas.cost_budget,
                         "hardware": costs.table.hardware,
                         "deployed": costs.table.child_cost(
                             strategies.genotype_choices(genotype, space),
                             config.nas.cost_metric)}} if costs else {}),
      "model_parameters": int(sum(x.size for x in jax.tree.leaves(weights))),
      "test_accuracy": test_acc,
      "test_loss": test_loss,
      "epsilon": plan.spent(sigmas, total_rounds),
      "epsilon_breakdown": plan.breakdown(sigmas),
      "epsilon_target": plan.epsilon,
      "delta": plan.delta,
      "delta_truncation": plan.truncation_delta,
      "noise_multiplier": sigmas.gradient,
      **({"loss_noise_multiplier": sigmas.loss,
          "final_learning_rate": float(
              state.params["carried"]["auto_lr"].learning_rate)}
         if plan.probe_every else {}),
      "optimizer": config.client.optimizer,
      "accountant": plan.accountant,
      "releases_of_most_exposed_client": {s.name: s.count for s in streams},
      "rounds": total_rounds,
      "devices": phase.devices,
      **({"hyperparameters": {
          "strategy": config.hpo.strategy,
          "pool_size": config.hpo.pool_size,
          "chosen_index": chosen,
          "chosen": {name: float(values[chosen])
                     for name, values in pool.items()},
          "feedback_noise_multiplier": sigmas.feedback,
          "feedback_clip": config.hpo.feedback_clip}} if strategy else {}),
      "wall_time_s": time.time() - start,
  }
  work.close()
  write_atomic(work.summary_file, json.dumps(summary, indent=1))
  report(f"test accuracy {test_acc:.4f} at ε={summary['epsilon']:.3f}"
         f" (δ={plan.delta}); wall time {summary['wall_time_s']:.0f} s;"
         f" workdir {work.path}")
  return summary
