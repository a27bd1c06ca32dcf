"""The server states a run starts from, and the change of model after the search."""

import jax
import jax.numpy as jnp

from fedsearch import federated as fed
from fedsearch import nas as nas_lib
from fedsearch import search_space as ss
from fedsearch.runner.job import Architecture, Job
from fedsearch.runner.phases import Phase
from fedsearch.search_space import cost as cost_lib


def model_keys(job: Job) -> tuple[jax.Array, jax.Array]:
  """(weights, architecture) initialisation keys."""
  return tuple(jax.random.split(jax.random.key(job.config.seed)))


def place(job: Job, state: fed.ServerState) -> fed.ServerState:
  """Replicated over the client mesh (restored or fresh arrays may be
  committed to one device)."""
  if job.mesh is None:
    return state
  return jax.device_put(state, jax.sharding.NamedSharding(
      job.mesh, jax.sharding.PartitionSpec()))


def supernet_state(job: Job, phase: Phase) -> fed.ServerState:
  init_key, arch_key = model_keys(job)
  params = fed.ModelParams(
      ss.init_supernet(job.space, init_key, job.federation.input_shape),
      job.nas.init(arch_key))
  return phase.algorithm.init(params, nas_state=job.nas.init_state())


def derived_state(job: Job, phase: Phase, weights,
                  client_optimizer_state=None,
                  aggregator_state=None) -> fed.ServerState:
  """The derived model's state; the client optimiser's state (HyFreeDP's
  learning rate) and the mechanism's (adaptive clipping's scale) go on with
  it, the strategy's is done with."""
  return place(job, phase.algorithm.init(
      fed.ModelParams(weights, {}),
      client_optimizer_state=client_optimizer_state,
      aggregator_state=aggregator_state))


def retrain_state(job: Job, phase: Phase, architecture: Architecture
                  ) -> fed.ServerState:
  """A given genotype's or fixed network's model with fresh weights."""
  weights = job.network(architecture).init(
      model_keys(job)[0],
      jnp.zeros((1, *job.federation.input_shape)))["params"]
  return derived_state(job, phase, weights)


def after_search(job: Job, phase: Phase, supernet: fed.ServerState,
                 genotype: ss.Genotype) -> fed.ServerState:
  """The derived model with the weights the supernet trained."""
  def derived(tree):
    return ss.extract_weights(tree, job.space, genotype,
                              job.federation.input_shape)

  return derived_state(
      job, phase, derived(supernet.params.weights),
      job.client_optimizer.map_weights(supernet.client_optimizer, derived),
      supernet.aggregator)


def derive_genotype(job: Job, arch) -> ss.Genotype:
  """The strategy's genotype, made to fit `nas.cost_budget` when one is set."""
  genotype = job.nas.derive(arch)
  if job.costs and job.config.nas.cost_budget > 0:
    n = job.config.nas
    genotype = nas_lib.choices_genotype(cost_lib.fit_budget(
        nas_lib.genotype_choices(genotype, job.space), arch, job.costs.table,
        n.cost_metric, n.cost_budget, job.space), job.space)
  return genotype
