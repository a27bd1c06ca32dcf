"""Building the job from its configuration: every check of the config is here.

`build_job(config)` reads the data, validates every field it uses (one
`ConfigError` naming the field and what is allowed), builds each plug-in
from its registry (NAS strategy, hyperparameter strategy, client optimiser,
privacy mechanism) and calibrates the privacy plan. Nothing outside the
registries branches on a plug-in's name.
"""

import dataclasses
import json
import math
import pathlib
from collections.abc import Callable
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from fedsearch import data as data_lib
from fedsearch import federated as fed
from fedsearch import hyperparameters as hp_lib
from fedsearch import models
from fedsearch import nas as nas_lib
from fedsearch import optimizers
from fedsearch import search_space as ss
from fedsearch.errors import ConfigError
from fedsearch.privacy import (accounting, audit, auto_lr, client_sizes,
                               mechanisms)
from fedsearch.privacy import randomness as randomness_lib
from fedsearch.privacy.plan import (NoiseMultipliers, PriorStage,
                                    PrivacyPlan, make_plan)
from fedsearch.runner.workdir import GENOTYPE_FILE, PRIVACY_EVENTS_FILE
from fedsearch.search_space import cost as cost_lib

# FedAvg(M) with server momentum, or FedAdam (Reddi et al. 2021).
SERVER_OPTIMIZERS = {
    "sgd": lambda lr, momentum: optax.sgd(lr, momentum or None),
    "adam": lambda lr, momentum: optax.adam(lr, b1=momentum),
}


@dataclasses.dataclass(frozen=True)
class Federation:
  """Device-resident examples and the host-side description of the clients."""

  x: jax.Array
  y: jax.Array
  splits: fed.ClientSplits
  sizes: client_sizes.PublicSizes  # released once, privatised
  monitor_x: np.ndarray
  monitor_y: np.ndarray
  test_x: np.ndarray
  test_y: np.ndarray
  input_shape: tuple[int, ...]
  num_classes: int


@dataclasses.dataclass(frozen=True)
class CostModel:
  table: cost_lib.CostTable
  penalty: Callable  # arch_params -> scalar, added to the architecture loss


@dataclasses.dataclass(frozen=True)
class Hpo:
  """The hyperparameter search, when `hpo.strategy` is not `none`."""

  strategy: hp_lib.Strategy
  pool: dict  # {name: (P,) values}


class FixedNetwork(NamedTuple):
  """A hand-designed network (`config.model`), trained in place of a found
  genotype."""

  name: str

  def to_json(self) -> str:
    return json.dumps({"model": self.name})


# What the training phase trains: a found (or given) genotype, or a fixed
# network.
Architecture = ss.Genotype | FixedNetwork


@dataclasses.dataclass(frozen=True)
class Job:
  """Everything a run needs, built and checked before any round."""

  config: ml_collections.ConfigDict
  randomness: randomness_lib.Randomness  # of the noise and the Poisson draws
  federation: Federation
  space: ss.SearchSpace
  nas: nas_lib.NasStrategy
  plan: PrivacyPlan
  sigmas: NoiseMultipliers
  mechanism: mechanisms.Mechanism
  client_config: fed.ClientConfig
  client_optimizer: optimizers.ClientOptimizer
  server_optimizer: optax.GradientTransformation
  mesh: jax.sharding.Mesh | None
  hpo: Hpo | None
  costs: CostModel | None
  # No search: train this from fresh weights (`nas.genotype`, `model`).
  retrained: Architecture | None
  # Black-box audit canaries in the training data, or None.
  canaries: audit.InputCanaries | None = None

  @property
  def devices(self) -> int:
    return 1 if self.mesh is None else self.mesh.size

  def network(self, architecture: Architecture) -> nn.Module:
    """The flax module of a genotype or of a fixed network."""
    if isinstance(architecture, FixedNetwork):
      return models.make_module(architecture.name,
                                self.federation.num_classes)
    return ss.derived_network(self.space, architecture)


def build_federation(config, plan: PrivacyPlan,
                     randomness: randomness_lib.Randomness,
                     canaries: audit.InputCanaries | None = None
                     ) -> Federation:
  """The clients' data and their privatised sizes. The monitor split is
  the server's own (public) data: no client holds it. `canaries` (a
  black-box audit): the included ones join their owners' training splits."""
  ds = data_lib.load_dataset(config.dataset, config.data_dir,
                             config.cache_dir or None)
  x = model_inputs(config, ds, ds.train_x)
  client_rows, monitor_rows = data_lib.carve(len(x), config.monitor_fraction,
                                             config.seed)
  f = config.federated
  parts = data_lib.partition(ds.train_y[client_rows], f.partition,
                             f.num_clients, config.seed, f.dirichlet_alpha,
                             f.shards_per_client)
  splits = fed.split_clients([client_rows[p] for p in parts], f.val_fraction,
                             config.seed)
  train_y = ds.train_y
  if canaries is not None:
    x, train_y, splits = _with_canaries(x, train_y, splits, canaries)
  if plan.unit == "client":
    sizes = client_sizes.kept_local(splits.sizes(), f.val_fraction)
  else:
    sizes = client_sizes.release(
        splits.sizes(), plan.size_noise_multiplier,
        randomness.rng(randomness_lib.CLIENT_SIZES_STREAM),
        plan.truncation_tail(), f.val_fraction)
  return Federation(jnp.asarray(x), jnp.asarray(train_y), splits, sizes,
                    x[monitor_rows], ds.train_y[monitor_rows],
                    model_inputs(config, ds, ds.test_x), ds.test_y, x.shape[1:], ds.num_classes)


def model_inputs(config, ds: data_lib.Dataset, images) -> np.ndarray:
  """Raw images as the model takes them: normalised, then transformed into
  `config.features` (cached under `cache_dir`)."""
  x = data_lib.normalize(ds.name, images, ds.pixel_max)
  return data_lib.cached_transform(
      config.features, x, config.cache_dir or data_lib.default_cache_dir())


def _with_canaries(x, y, splits: fed.ClientSplits,
                   canaries: audit.InputCanaries):
  """The examples with the included canaries appended, each in its owner's
  training split."""
  if canaries.x.shape[1:] != x.shape[1:]:
    raise ConfigError(f"canaries of shape {canaries.x.shape[1:]} do not fit"
                      f" the data's {x.shape[1:]}")
  rows = len(x) + np.arange(int(canaries.included.sum()))
  owners = canaries.owner[canaries.included]
  train = tuple(np.sort(np.concatenate([t, rows[owners == k]]))
                for k, t in enumerate(splits.train))
  return (np.concatenate([x, canaries.x[canaries.included]]),
          np.concatenate([y, canaries.y[canaries.included]]),
          fed.ClientSplits(train, splits.val))


# Fields that must be finite and above a bound: (field, lowest, inclusive).
_LOWER_BOUNDS = (
    ("privacy.clip_norm", 0, False), ("privacy.arch_clip_norm", 0, False),
    ("privacy.noise_multiplier", 0, True), ("client.learning_rate", 0, False),
    ("client.weight_decay", 0, True), ("client.arch_weight_decay", 0, True),
    ("federated.server_learning_rate", 0, False),
    ("federated.num_clients", 1, True), ("federated.local_steps", 1, True),
    ("federated.dirichlet_alpha", 0, False),
    ("federated.shards_per_client", 1, True), ("hpo.pool_size", 0, True),
    ("hpo.feedback_clip", 0, False), ("hyfree.probe_every", 1, True),
    ("hyfree.gamma", 0, False), ("checkpoint_every", 1, True),
)


def _field(config, path: str):
  node = config
  for part in path.split("."):
    node = node[part]
  return node


def _check_bounds(config) -> None:
  for path, lowest, inclusive in _LOWER_BOUNDS:
    value = _field(config, path)
    ok = (isinstance(value, (int, float)) and math.isfinite(value)
          and (value >= lowest if inclusive else value > lowest))
    if not ok:
      raise ConfigError(f"{path} must be a finite number"
                        f" {'>=' if inclusive else '>'} {lowest}, got {value}")
  if not 0 <= config.client.momentum < 1:
    raise ConfigError(f"client.momentum must be in [0, 1), got"
                      f" {config.client.momentum}")


def check_config(config) -> None:
  """The checks that need no data or plug-in (those check themselves)."""
  _check_bounds(config)
  if not 0 <= config.monitor_fraction < 1:
    raise ConfigError("monitor_fraction must be in [0, 1), got"
                      f" {config.monitor_fraction}")
  f = config.federated
  if not 0 < f.val_fraction < 1:
    raise ConfigError(f"federated.val_fraction must be in (0, 1), got"
                      f" {f.val_fraction}")
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
  if config.client.arch_learning_rate < 0:
    raise ConfigError("client.arch_learning_rate must be >= 0 (0: the"
                      " strategy's default), got"
                      f" {config.client.arch_learning_rate}")
  _check_features(config)
  if (config.nas.controller_warmup_rounds
      and not nas_lib.traits(config.nas.strategy).controller):
    raise ConfigError("nas.controller_warmup_rounds applies to"
                      " nas.strategy='reinforce' only; set it to 0 for"
                      f" {config.nas.strategy!r}")


def auto_lr_config(config, loss_noise_multiplier: float = 1.0,
                   shared_noise: bool = False,
                   client_rate: float | None = None) -> auto_lr.AutoLRConfig:
  """HyFreeDP's learning-rate constants (`hyfree.*`); `shared_noise`: the
  mechanism's (the probes then follow the released update).

  η0 = `hyfree.initial_learning_rate`, or when it is 0 `client_rate`, the
  rate DP-SGD would take here (`client_learning_rate`: `client.learning_rate`
  after the round-noise cap; the config's rate when not given). Automatic
  clipping bounds each example's gradient by R = `privacy.clip_norm`, as
  flat clipping does, so from there HyFreeDP's first steps are DP-SGD's.
  """
  h = config.hyfree
  initial = h.initial_learning_rate or (
      config.client.learning_rate if client_rate is None else client_rate)
  return auto_lr.AutoLRConfig(
      probe_every=h.probe_every, probe_scales=tuple(h.probe_scales),
      initial_learning_rate=initial,
      initial_loss_clip=h.initial_loss_clip, max_change=h.max_change,
      significance=h.significance,
      reporting_clients=config.federated.clients_per_round,
      shared_noise=shared_noise,
      loss_clip_factor=h.loss_clip_factor,
      evidence_decay=h.evidence_decay,
      loss_clip_shrinks=h.loss_clip_shrinks,
      loss_noise_multiplier=loss_noise_multiplier)


def build_hpo(config) -> Hpo | None:
  h = config.hpo
  strategy = hp_lib.make_strategy(h, config.federated.num_clients)
  if strategy is None:
    return None
  space = hp_lib.space_from_dict(h.space.to_dict())
  allowed = (*fed.TUNABLE, *fed.ROUND_HYPERPARAMETERS)
  unknown = {p.name for p in space} - set(allowed)
  if unknown:
    raise ConfigError(f"hpo.space: {sorted(unknown)} cannot be tuned; allowed:"
                      f" {list(allowed)}")
  pool = hp_lib.make_pool(space, h.pool_size, config.seed)
  if "local_steps" in pool:
    steps = pool["local_steps"]
    if np.any(steps < 1) or np.any(steps != np.round(steps)):
      raise ConfigError("hpo.space.local_steps must draw integers >= 1; use"
                        " a categorical scale, e.g. choices [1, 2, 4]")
  if "sampling_rate" in pool and not np.all(
      (pool["sampling_rate"] > 0) & (pool["sampling_rate"] <= 1)):
    raise ConfigError("hpo.space.sampling_rate must lie in (0, 1]")
  if "momentum" in pool and not np.all(
      (pool["momentum"] >= 0) & (pool["momentum"] < 1)):
    raise ConfigError("hpo.space.momentum must lie in [0, 1)")
  if h.exploration_step == "incumbent" and config.client.optimizer != "dpsgd":
    raise ConfigError("hpo.exploration_step='incumbent' rescales heavy-ball"
                      " steps lr/(1 - momentum); set client.optimizer='dpsgd'"
                      f" (got {config.client.optimizer!r}) or"
                      " hpo.exploration_step='own'")
  return Hpo(strategy, pool)


def build_plan(config, mechanism: mechanisms.Mechanism,
               client_optimizer: optimizers.ClientOptimizer,
               hpo: Hpo | None) -> PrivacyPlan:
  """The privacy plan: the client schedule and every release it implies.

  When a search draws `local_steps` / `sampling_rate` per client, every
  client is charged the pool's maxima, whatever it drew: an upper bound
  that keeps the plan data-independent.
  """
  f, p = config.federated, config.privacy
  rounds = f.search_rounds + f.train_rounds
  if p.unit == "client":
    # Who takes part is drawn from the secret randomness (`client_schedule`);
    # the plan needs only the number of rounds.
    schedule = np.full((rounds, 0), -1, np.int32)
  else:
    schedule = fed.client_schedule(f.num_clients, f.clients_per_round,
                                   rounds, config.seed)
  pool = hpo.pool if hpo else {}
  steps = (int(max(pool["local_steps"])) if "local_steps" in pool
           else f.local_steps)
  rate = (float(max(pool["sampling_rate"])) if "sampling_rate" in pool
          else f.sampling_rate)
  return make_plan(
      schedule, search_rounds=f.search_rounds, local_steps=steps,
      sampling_rate=rate, num_clients=f.num_clients, epsilon=p.epsilon,
      delta=p.delta, truncation_delta_fraction=p.truncation_delta_fraction,
      accountant=p.accountant, probe_every=client_optimizer.probe_every,
      releases_per_probe=client_optimizer.releases_per_probe,
      kappa=config.hyfree.kappa, feedback=hpo is not None,
      feedback_fraction=config.hpo.feedback_epsilon_fraction,
      arch_steps=not nas_lib.traits(config.nas.strategy).one_stage,
      arch_warmup_rounds=config.nas.controller_warmup_rounds,
      release_stream=mechanism.release_stream,
      size_noise_multiplier=p.size_noise_multiplier,
      prior=prior_stage(config), stage_share=p.stage_share, unit=p.unit,
      client_sampling_rate=f.clients_per_round / f.num_clients,
      tuning=tuning(config))


def tuning(config) -> accounting.Tuning | None:
  """The private tuning this run is one of (`privacy.tuning_mean_runs`)."""
  p = config.privacy
  if p.tuning_mean_runs == 0:
    return None
  return accounting.Tuning(float(p.tuning_mean_runs), float(p.tuning_shape))


def client_schedule(plan: PrivacyPlan, randomness: randomness_lib.Randomness
                    ) -> np.ndarray:
  """Client-level DP: who takes part in each round, Poisson(q_c) from the
  run's secret randomness, in the plan's static number of slots."""
  return fed.poisson_client_schedule(
      plan.num_clients, plan.client_sampling_rate, len(plan.schedule),
      plan.client_slots(),
      randomness.rng(randomness_lib.CLIENT_SCHEDULE_STREAM))


def read_named_file(field: str, value: str, path, parse: Callable,
                    problem: str, remedy: str):
  """`parse` of the text of the file a config field names, or one
  ConfigError naming the field, what went wrong and what to do."""
  try:
    return parse(pathlib.Path(path).read_text())
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise ConfigError(f"{field}={value!r} {problem} ({type(e).__name__}:"
                      f" {e}); {remedy}") from e


def prior_stage(config) -> PriorStage | None:
  """The releases of the search whose genotype `nas.genotype` retrains
  (its workdir's privacy_events.json), or None: a genotype that no private
  search of this data wrote (a hand-written file) has none."""
  path = config.nas.genotype
  if not path:
    return None
  file = pathlib.Path(path)
  events = (file if file.is_dir() else file.parent) / PRIVACY_EVENTS_FILE
  if not events.exists():
    return None
  return read_named_file(
      "nas.genotype", path, events,
      lambda text: PriorStage.from_json(text, str(events)),
      f"has a damaged {PRIVACY_EVENTS_FILE}",
      "re-run the search stage in a new workdir")


def _check_features(config) -> None:
  """Scattering features feed the scatter stem and nothing else: the other
  stems and the hand-set models expect pixels."""
  if config.features not in data_lib.FEATURES:
    raise ConfigError(f"features={config.features!r} is not allowed; choose"
                      f" one of {list(data_lib.FEATURES)}")
  scatter_stem = config.space.stem == "scatter" and not config.model
  if (config.features == "scatter") != scatter_stem:
    raise ConfigError(
        "features='scatter' and space.stem='scatter' go together (a searched"
        f" space, model=''): got features={config.features!r},"
        f" space.stem={config.space.stem!r}, model={config.model!r}")


def check_fixed_model(config) -> None:
  """`model` names a fixed network, trained without a search."""
  if not config.model:
    return
  models.make_module(config.model)  # Checks the name.
  if config.federated.search_rounds or config.nas.genotype:
    raise ConfigError(
        f"model={config.model!r} trains a fixed network: set"
        " federated.search_rounds=0 and nas.genotype='' (got"
        f" {config.federated.search_rounds} and {config.nas.genotype!r})")


def given_architecture(config, space: ss.SearchSpace) -> Architecture | None:
  """The fixed network `model` names, or the genotype `nas.genotype` names
  (a genotype.json or a search's workdir), or None: then the run searches."""
  if config.model:
    return FixedNetwork(config.model)
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
    ss.check_genotype(genotype, space)
  except ConfigError as e:
    raise ConfigError(f"nas.genotype={config.nas.genotype!r}: {e}; set"
                      " config.space as in the search") from e
  return genotype


def search_space_from(config, num_classes: int) -> ss.SearchSpace:
  return ss.SearchSpace(num_classes=num_classes, **config.space.to_dict())


def round_noise_per_unit_rate(config, sigmas: NoiseMultipliers,
                              sizes: client_sizes.PublicSizes) -> float:
  """Std of the noise one round adds to each parameter of the server's
  model, per unit of client learning rate (example-level DP-SGD steps).

  A client's step adds N(0, (σC/b)²) per coordinate (b = q·n̂, its expected
  batch; n̂ the median privatised size, so this is post-processing of
  released values); K local steps add √K of it; the server averages m
  clients (each with its own noise under `local`, a 1/√m share under
  `aggregate`) and its momentum β accumulates the step 1/(1 − β) times.
  """
  f, p = config.federated, config.privacy
  part = client_sizes.TRAIN if f.search_rounds else client_sizes.ALL
  batch = f.sampling_rate * float(np.median(sizes.estimate(part)))
  clients = f.clients_per_round ** (1.0 if p.trust == "aggregate" else 0.5)
  return (sigmas.gradient * p.clip_norm / max(batch, 1.0)
          * math.sqrt(f.local_steps) / clients
          * f.server_learning_rate / (1.0 - f.server_momentum))


def client_learning_rate(config, sigmas: NoiseMultipliers,
                         sizes: client_sizes.PublicSizes) -> float:
  """`client.learning_rate`, capped so that a round's noise in each
  parameter stays within `client.max_round_noise` (a data-independent rule:
  it reads only σ, the schedule and the released sizes). Client-level DP
  bounds the whole delta instead, so its rate is left as given."""
  c = config.client
  if (not c.max_round_noise or config.privacy.unit == "client"
      or sigmas.gradient == 0):
    return c.learning_rate
  return min(c.learning_rate, c.max_round_noise / round_noise_per_unit_rate(
      config, sigmas, sizes))


def client_config(config, sigmas: NoiseMultipliers,
                  sizes: client_sizes.PublicSizes) -> fed.ClientConfig:
  c = config.client
  return fed.ClientConfig(
      clip_norm=config.privacy.clip_norm,
      arch_clip_norm=config.privacy.arch_clip_norm,
      noise_multiplier=sigmas.gradient,
      learning_rate=client_learning_rate(config, sigmas, sizes),
      momentum=c.momentum,
      weight_decay=c.weight_decay,
      arch_learning_rate=(c.arch_learning_rate or nas_lib.traits(
          config.nas.strategy).arch_learning_rate),
      arch_weight_decay=c.arch_weight_decay,
      auto_clip_gamma=config.hyfree.gamma,
      feedback_clip=config.hpo.feedback_clip,
      feedback_noise_multiplier=sigmas.feedback,
      feedback_measure=config.hpo.feedback_measure)


def server_optimizer(config) -> optax.GradientTransformation:
  name = config.federated.server_optimizer
  if name not in SERVER_OPTIMIZERS:
    raise ConfigError(f"federated.server_optimizer={name!r} is not allowed;"
                      f" choose one of {sorted(SERVER_OPTIMIZERS)}")
  momentum = config.federated.server_momentum
  if not 0 <= momentum < 1:
    raise ConfigError("federated.server_momentum must be in [0, 1), got"
                      f" {momentum}")
  return SERVER_OPTIMIZERS[name](config.federated.server_learning_rate,
                                 momentum)


def make_mesh(config):
  available = len(jax.devices())
  wanted = config.federated.num_devices or available
  if not 1 <= wanted <= available:
    raise ConfigError(f"federated.num_devices must be in [0, {available}],"
                      f" got {config.federated.num_devices}")
  chunk = config.federated.client_chunk
  if chunk < 0 or chunk % wanted:
    raise ConfigError(f"federated.client_chunk must be 0 (all clients at"
                      f" once) or a positive multiple of the {wanted}"
                      f" device(s), got {chunk}")
  return fed.client_mesh(wanted) if wanted > 1 else None


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


def build_mechanism(config) -> mechanisms.Mechanism:
  p = config.privacy
  bounds = ({"clip_norm": p.clip_norm, "arch_clip_norm": p.arch_clip_norm,
             "adaptive_quantile": p.adaptive_clip_quantile,
             "adaptive_learning_rate": p.adaptive_clip_learning_rate}
            if p.unit == "client" else {})
  mechanism = mechanisms.make_mechanism(
      p.trust, p.unit, dp_backend=p.dp_backend, nan_safe=p.nan_safe,
      clients_per_round=config.federated.clients_per_round, **bounds)
  if mechanism.unit == "client":
    _check_client_level(config)
  elif mechanism.shares_noise:
    _check_shared_noise(config)
  return mechanism


def _check_client_level(config) -> None:
  """Client-level DP releases one clipped delta per sampled client and
  round; the releases that have no client-level form here name themselves."""
  refusals = (
      (nas_lib.traits(config.nas.strategy).controller
       and config.federated.local_steps < 2, "REINFORCE's baseline restarts"
       " each round on the client, so with one local step every reward is"
       " its own baseline and the policy never moves",
       f"federated.local_steps >= 2 (got {config.federated.local_steps})"),
      (config.hpo.strategy != "none", "hyperparameter feedback is a"
       " per-client scalar", f"hpo.strategy='none' (got"
       f" {config.hpo.strategy!r})"),
      (config.client.optimizer != "dpsgd", "HyFreeDP's loss probes are"
       " per-client scalars", "client.optimizer='dpsgd' (got"
       f" {config.client.optimizer!r})"),
      (config.privacy.stage_share != 1.0 or prior_stage(config) is not None,
       "two-stage pipelines compose example-level releases", "privacy."
       "stage_share=1 and a nas.genotype without a search's privacy events"),
  )
  _refuse_first(refusals, "privacy.unit='client'", "privacy.unit='example'")


def _refuse_first(refusals, setting: str, alternative: str) -> None:
  """One line for the first (refused, release, fields) that is refused."""
  for refused, release, fields in refusals:
    if refused:
      raise ConfigError(f"{setting}: {release}; set {fields} or use"
                        f" {alternative}")


def _check_shared_noise(config) -> None:
  """Under `aggregate`, a client's own state carries only its share of the
  noise: every release must be a linear function of the round-start state
  and of bounded sums, so that the sum of the shares is the only noise that
  counts. The first release that is not names itself. (With one client a
  round the share is the whole noise and the mechanism does not share it:
  nothing here applies.) HyFreeDP's probes follow the update released last
  round from the round-start weights (`optimizers.hyfree`), so one local
  step suffices for them too."""
  f = config.federated
  refusals = (
      (f.local_steps != 1, "a second local step releases a function of the"
       " client's own update (share-noised)",
       f"federated.local_steps=1 (got {f.local_steps})"),
      (config.hpo.strategy != "none", "the strategies read hyperparameter"
       " gains one client at a time, and each carries only its share of the"
       " noise", f"hpo.strategy='none' (got"
       f" {config.hpo.strategy!r})"),
  )
  _refuse_first(refusals, "privacy.trust='aggregate'", "privacy.trust='local'")


def privacy_plan(config) -> PrivacyPlan:
  """The plan a config implies, checked, without reading any data."""
  check_config(config)
  check_fixed_model(config)
  randomness_lib.check_mode(config.privacy.randomness)
  nas_lib.traits(config.nas.strategy)  # Checks the name.
  return build_plan(config, build_mechanism(config),
                    optimizers.make_client_optimizer(
                        config.client.optimizer, auto_lr_config(config)),
                    build_hpo(config))


def build_job(config: ml_collections.ConfigDict,
              randomness: randomness_lib.Randomness | None = None,
              canaries: audit.InputCanaries | None = None) -> Job:
  """Checks the config, calibrates the plan, reads the data, builds the
  plug-ins.

  `randomness`: the run's (`privacy.randomness.for_run`, kept in its
  workdir); None draws a fresh secret, or takes the seed's in seeded mode.
  """
  server_opt, mesh = server_optimizer(config), make_mesh(config)
  plan = privacy_plan(config)
  if randomness is None:
    randomness = randomness_lib.fresh(config.privacy.randomness, config.seed)
  sigmas = plan.noise_multipliers(config.privacy.noise_multiplier)
  if plan.unit == "client":
    plan = dataclasses.replace(plan, schedule=client_schedule(plan,
                                                              randomness))
    if config.privacy.adaptive_clip_quantile > 0:  # Refused when it cannot.
      mechanisms.update_noise_multiplier(
          sigmas.gradient, mechanisms.default_count_stddev(
              config.federated.clients_per_round))
  mechanism, hpo = build_mechanism(config), build_hpo(config)
  federation = build_federation(config, plan, randomness, canaries)
  space = search_space_from(config, federation.num_classes)
  clients = client_config(config, sigmas, federation.sizes)
  return Job(
      config=config, randomness=randomness, federation=federation,
      canaries=canaries,
      space=space,
      nas=nas_lib.make_strategy(config.nas.strategy, space,
                                config.privacy.unit), plan=plan,
      sigmas=sigmas, mechanism=mechanism,
      client_config=clients,
      client_optimizer=optimizers.make_client_optimizer(
          config.client.optimizer,
          auto_lr_config(config, sigmas.loss, mechanism.shares_noise,
                         clients.learning_rate),
          mechanism.noised_sum),
      server_optimizer=server_opt, mesh=mesh,
      hpo=hpo, costs=cost_model(config, space, federation.input_shape),
      retrained=given_architecture(config, space))
