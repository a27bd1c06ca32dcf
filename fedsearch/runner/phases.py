"""A run's phases: what differs between searching and training a fixed model.

`build_phase(job, genotype=None, ...)` is the public builder (the main job
and the benchmarks use it): with no genotype, the supernet phase of the
job's NAS strategy (`search`, or `warmup` when the architecture does not
move yet); with one, the derived model's training phase (`train`). A phase
holds its federated algorithm, its predictor and the shape of its batches.
"""

import dataclasses
import math
from collections.abc import Callable

import jax

from fedsearch import federated as fed
from fedsearch import models
from fedsearch import nas as nas_lib
from fedsearch.privacy import client_sizes
from fedsearch.runner.job import Architecture, Job


@dataclasses.dataclass(frozen=True)
class Phase:
  name: str  # search | warmup | train
  algorithm: fed.FederatedAlgorithm
  predict: Callable  # jitted (weights, arch, x) -> logits
  searching: bool  # the architecture moves
  validation_batches: bool  # architecture steps read validation batches
  # Weight steps read train and validation rows: once nothing reads the
  # validation split, it is free for the weights.
  all_local_data: bool
  batch_sizes: tuple[int, int]  # static (train, validation) batch sizes
  # The round's clients are padded to a multiple of this: the devices, and
  # the chunk of clients run at a time (`federated.client_chunk`).
  client_multiple: int


def build_phase(job: Job, genotype: Architecture | None = None,
                searching: bool = True) -> Phase:
  """The supernet phase (no `genotype`; `searching=False`: a controller's
  warm-up) or the training phase of `genotype`'s model (a found genotype
  or a fixed network)."""
  strategy = job.nas if genotype is None else None
  searching = strategy is not None and searching
  traits = strategy.traits if strategy else None
  validation_batches = searching and traits.reads_validation
  all_local_data = not searching or (not validation_batches
                                     and job.hpo is None)
  if strategy is not None:
    model, predict = strategy.model, strategy.predict
  else:
    model = models.as_model(job.network(genotype))
    predict = model.apply
  algorithm = fed.federated_algorithm(
      model, job.client_config, job.server_optimizer,
      client_optimizer=job.client_optimizer, mechanism=job.mechanism,
      arch_step=strategy.arch_step if searching else nas_lib.weights_only,
      reads_validation=validation_batches,
      active_weights=strategy.active_weights if strategy else None,
      arch_penalty=job.costs.penalty if searching and job.costs else None,
      mesh=job.mesh,
      shared_program=traits.shared_program if strategy else True,
      client_chunk=job.config.federated.client_chunk,
      feedback_after_round=job.config.hpo.reward == "round")
  # Shapes from the public bounds of the clients' sizes, never the sizes.
  sizes = job.federation.sizes
  batch_sizes = (
      job.plan.padded_batch_size(sizes.bound(
          client_sizes.ALL if all_local_data else client_sizes.TRAIN)),
      job.plan.padded_batch_size(sizes.bound(client_sizes.VAL))
      if validation_batches else 1)
  name = "train" if genotype is not None else (
      "search" if searching else "warmup")
  return Phase(name, algorithm, jax.jit(predict), searching,
               validation_batches, all_local_data, batch_sizes,
               math.lcm(job.devices, job.config.federated.client_chunk or 1))
