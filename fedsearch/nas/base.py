"""The architecture-search strategy protocol and what sampled strategies share.

A `NasStrategy` says how a supernet step sees the architecture, how a client
moves it, and what is deployed at the end:

  init(key) -> arch_params                   the searched parameters
  init_state() -> state                      what the server carries for the
                                             strategy between rounds (None:
                                             nothing); averaged over clients
  model: privacy.Model                       one step's forward pass,
                                             `apply(weights, arch, x, key)`
  predict(weights, arch, x) -> logits        the current architecture's
                                             prediction (progress only)
  derive(arch_params) -> Genotype            the architecture deployed
  active_weights(weights, arch, key)         bools per weight leaf: the
      -> tree | None                         parameters the step's model uses;
                                             noise is added only there
  arch_step(context) -> ArchStep             the client's architecture step:
                                             its optimiser, its release and
                                             its part of the local state
  metrics(state) -> {name: float}            for the per-round metrics line

Static traits (`Traits`) tell the round how to run it: `one_stage` (weights
and architecture move together on the train batch; the child deploys
without retraining), `shared_program` (every client runs the same program;
otherwise clients are mapped in sequence, since a vmapped `lax.switch`
computes every branch), `reads_validation` (architecture steps read
validation batches), `controller` (a warm-up may precede its first
step) and the default architecture learning rate.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import traverse_util

from fedsearch.privacy.mechanisms import Mechanism, Model
from fedsearch.search_space import genotype as genotype_lib
from fedsearch.search_space.space import SearchSpace


class Traits(NamedTuple):
  one_stage: bool
  shared_program: bool
  reads_validation: bool
  # A controller whose first steps may wait for a warm-up of sampled
  # children (`nas.controller_warmup_rounds`).
  controller: bool
  # Default Adam step of the architecture parameters. A sampled step sees
  # one child, so its logits must move much further per step than DARTS's
  # for the distribution to settle within a federated budget of tens of
  # steps (digits, ε=3: 3e-2 → 20 %, 0.3 → 52 %, 1.0 → 79 % deployed).
  arch_learning_rate: float


class ArchContext(NamedTuple):
  """What a client's architecture step may use (built per client, per round).

  `weight_gradient` is the phase's clipped weight-gradient sum;
  `arch_optimizer` the architecture's optax chain before any noise (cost
  penalty, weight decay, Adam; under a mechanism that shares its noise, a
  unit step down the gradient, Adam running on the server);
  `expected_batch` the (train, validation) normalisers q·n.
  """

  model: Model
  loss: Callable  # per-example `loss(logits, labels)`
  mechanism: Mechanism
  weight_gradient: Callable
  arch_optimizer: optax.GradientTransformation
  clip_norm: float
  arch_clip_norm: float
  noise_multiplier: float
  clipping: str
  gamma: float
  key: jax.Array  # the architecture releases' noise
  expected_batch: jax.Array


class ArchStep(NamedTuple):
  """The architecture's part of every local step of one client.

  init(arch, strategy_state) -> carry
  before_weights(carry, weights, arch, val_batch, step_key, index)
      -> (arch, carry)                 an architecture step before the weight
                                       step (alternating strategies)
  gradients(weights, arch, train_batch, step_key)
      -> (weight_sum, arch_grad|None)  the clipped weight-gradient sum, and an
                                       architecture gradient released with it
  after_weights(carry, arch, arch_grad) -> (arch, carry)
  report(carry) -> strategy_state      what the client sends back
  """

  init: Callable[[Any, Any], Any]
  before_weights: Callable[..., tuple[Any, Any]]
  gradients: Callable[..., tuple[Any, Any]]
  after_weights: Callable[..., tuple[Any, Any]]
  report: Callable[[Any], Any]


class NasStrategy(NamedTuple):
  name: str
  traits: Traits
  init: Callable[[jax.Array], dict]
  init_state: Callable[[], Any]
  model: Model
  predict: Callable[..., jax.Array]
  derive: Callable[[dict], genotype_lib.Genotype]
  active_weights: Callable[..., dict | None]
  arch_step: Callable[[ArchContext], ArchStep]
  # strategy state -> {name: float} for the per-round metrics line.
  metrics: Callable[[Any], dict] = lambda state: {}


def weights_only(context: ArchContext) -> ArchStep:
  """No architecture step: the architecture stays as it is (a fixed
  genotype, or a controller's warm-up); only weight gradients."""
  def gradients(weights, arch, train, step_key):
    return context.weight_gradient(
        weights, arch, train.x, train.y, step_key,
        is_padding_example=train.padding), None

  return ArchStep(
      init=lambda arch, state: state,
      before_weights=lambda carry, weights, arch, *_: (arch, carry),
      gradients=gradients,
      after_weights=lambda carry, arch, grad: (arch, carry),
      report=lambda carry: carry)


def private_arch_optimizer(context: ArchContext, expected_batch
                           ) -> optax.GradientTransformation:
  """The architecture's optimiser behind its own noise, N(0, (σ·C_a)²)."""
  return context.mechanism.private_optimizer(
      context.noise_multiplier * context.arch_clip_norm, context.key,
      expected_batch, context.arch_optimizer)


def sample_choices(arch_params: dict, key: jax.Array) -> jax.Array:
  """One op index per edge, k_e ~ softmax(α_e)."""
  return jax.random.categorical(key, arch_params["normal"], axis=-1)


def choices_genotype(choices, space: SearchSpace) -> genotype_lib.Genotype:
  """The child that runs these op indices (edges on `none` dropped)."""
  names = space.op_names
  choices = np.asarray(choices)
  edges = tuple(
      (to, src, names[choices[space.edge_index(to, src)]])
      for to, src in space.edges
      if names[choices[space.edge_index(to, src)]] != "none")
  return genotype_lib.Genotype(space.op_set, space.nodes, edges)


def genotype_choices(genotype: genotype_lib.Genotype, space: SearchSpace
                     ) -> np.ndarray:
  """Op index per edge of a genotype (`none` on dropped edges)."""
  names = space.op_names
  choices = np.full(space.num_edges, names.index("none"))
  for to, src, op in genotype.edges:
    choices[space.edge_index(to, src)] = names.index(op)
  return choices


def child_weights_mask(weights: dict, choices, space: SearchSpace) -> dict:
  """True on the child's parameters: shared layers and its chosen ops."""
  names = space.op_names
  op_of = {f"edge{e}_{op}": (e, names.index(op))
           for e in range(space.num_edges) for op in names}

  def active(path):
    for part in path:
      if part in op_of:
        edge, op = op_of[part]
        return choices[edge] == op
    return jnp.bool_(True)

  flat = traverse_util.flatten_dict(weights)
  return traverse_util.unflatten_dict({p: active(p) for p in flat})


def most_likely_child(arch_params: dict, space: SearchSpace
                      ) -> genotype_lib.Genotype:
  """The per-edge most likely ops, connected (`connected_choices`)."""
  probs = np.asarray(jax.nn.softmax(arch_params["normal"], axis=-1))
  return choices_genotype(connected_choices(np.argmax(probs, -1), probs,
                                            space), space)


def connected_choices(choices, probs, space: SearchSpace) -> np.ndarray:
  """`choices`, or where `none` on every edge out of the input leaves no node
  reached (a cell that outputs zeros: a constant network), the input's edge
  whose best other op is most likely set to that op (probs: (edges, ops))."""
  choices = np.array(choices)
  if not space.reaches_a_node(choices):
    none = space.op_names.index("none")
    edge = max((space.edge_index(to, 0) for to in range(1, space.nodes + 1)),
               key=lambda e: np.max(np.delete(probs[e], none)))
    others = [op for op in range(probs.shape[1]) if op != none]
    choices[edge] = max(others, key=lambda op: probs[edge, op])
  return choices


def sampled_children(space: SearchSpace, name: str, traits: Traits,
                     run_child: Callable, arch_step: Callable,
                     init_state: Callable[[], Any] = lambda: None,
                     metrics: Callable[[Any], dict] = lambda state: {}
                     ) -> NasStrategy:
  """A strategy whose steps run one child k ~ softmax(α) (uniform at start),
  predicts and deploys the most likely child, and noises only the sampled
  child's parameters. `run_child(weights, arch_params, x, choices)`."""

  def apply(weights, arch_params, x, key):
    return run_child(weights, arch_params, x,
                     sample_choices(jax.lax.stop_gradient(arch_params), key))

  def predict(weights, arch_params, x, key=None):
    del key
    return run_child(weights, arch_params, x,
                     jnp.argmax(arch_params["normal"], axis=-1))

  return NasStrategy(
      name=name, traits=traits,
      init=lambda key: genotype_lib.init_arch_params(space),
      init_state=init_state, model=Model(apply), predict=predict,
      derive=lambda arch: most_likely_child(arch, space),
      active_weights=lambda weights, arch, key: child_weights_mask(
          weights, sample_choices(arch, key), space),
      arch_step=arch_step, metrics=metrics)
