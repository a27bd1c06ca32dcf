"""Architecture search strategies behind one protocol.

A strategy says how one supernet step sees the architecture and what is
deployed at the end:

  init(key) -> arch_params                      the searched parameters
  apply(weights, arch_params, x, key) -> logits one step's forward pass; its
                                                gradient w.r.t. arch_params
                                                is the strategy's estimator
  predict(weights, arch_params, x) -> logits    the current architecture's
                                                prediction (progress only)
  derive(arch_params) -> Genotype               the architecture deployed
  active_weights(weights, arch_params, key)     bools per weight leaf: which
      -> tree | None                            parameters the step's model
                                                uses (None: all); noise is
                                                added only to those

The client trains whatever `apply` exposes with its private optimiser (the
`update` half of the pair: one DP step on the gradient `apply` defines), so
the federated round runs every strategy with the same code. Two static
traits tell it how:
  one_stage: weights and architecture are updated together from the same
    train batch, in one clipped and noised release per step (no separate
    validation-split architecture step), and the derived child keeps the
    weights it trained with (no retraining stage is needed).
  shared_program: every client runs the same program in a step. A sampled
    child differs per client; under `vmap` a batched `lax.switch` index
    becomes a select that computes every branch, so such strategies run the
    clients of a device in sequence (`lax.map`) and each client's step,
    vectorised over its examples, computes only its sampled ops.

Strategies:
  darts: the continuous relaxation (DARTS; FEATHERS/FedNAS): every op on
    every edge, weighted by softmax(α); DARTS derivation rule.
  one_stage: Direct Federated NAS / DSNAS. Each step samples one op per
    edge, k_e ~ softmax(α_e), from the step's own key, and runs only the
    sampled child. The edge's output is multiplied by a gate g_e whose value
    is exactly 1 and whose gradient is ∇_α log p_e(k_e) = onehot(k_e) − p_e,
    so the architecture gradient is DSNAS's estimator
      ĝ_α = Σ_e (∂L/∂g_e) · (onehot(k_e) − p_e).
    Why this one: it costs nothing beyond the sampled child's backward pass
    (∂L/∂g_e is the inner product of the edge output with its cotangent),
    and unlike straight-through Gumbel-softmax it has no temperature to
    tune and the forward pass is the deployed child exactly. Its bias: it is
    unbiased for ∇_α E_k[L] when L is linear in each gate; in general it is
    unbiased for ∇_α E_k[∂L/∂g|_{g=1}] instead (a first-order Taylor
    credit, tested on a toy in tests/test_strategies.py). Only the child's
    parameters get DP noise (`active_weights`): the others have exactly
    zero gradient on every dataset, see `privacy.dp_grad.masked_noise`.
    Deployed: the most
    likely child (argmax per edge, `none` included, so dropped edges stay
    dropped), with the weights it shares with the supernet.
  reinforce: DPNAS's controller search (Cheng et al. 2022, after ENAS).
    Every weight step trains one child sampled from the policy
    π(k) = Π_e softmax(α_e)[k_e] (only its parameters are noised); every
    architecture step samples a child, scores it on a validation batch and
    moves the policy by REINFORCE with an entropy bonus,
      ∇_α [−(R̃ − b)·log π(k) − β·H(π)],
    where R̃ is the child's validation accuracy privatised by the client
    (the sum of per-example correct ∈ {0, 1} plus N(0, σ²), the Gaussian
    mechanism with sensitivity 1, counted as one architecture release) and b
    a bias-corrected moving average of past R̃ (decay 0.99) that the server
    carries between rounds. DPNAS's code releases the reward without noise
    and picks the final architecture on the test set; here the update is
    post-processing of R̃ alone and the deployed child is the policy's mode
    (argmax per edge), which reads no data. DPNAS's controller is an LSTM
    over the edge decisions; this policy is factorised over edges (the same
    logits as the other strategies, so cost penalties and derivation apply
    unchanged).
"""

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from fedsearch.errors import ConfigError
from fedsearch.search_space import genotype as genotype_lib
from fedsearch.search_space.network import CellNetwork, supernet_apply
from fedsearch.search_space.space import SearchSpace


class Traits(NamedTuple):
  """What the round and the runner need to know of a strategy, by name."""

  one_stage: bool
  shared_program: bool
  # Default Adam step of the architecture parameters. A sampled step sees
  # one child, so its logits must move much further per step than DARTS's
  # for the distribution to settle within a federated budget of tens of
  # steps (digits, ε=3: 3e-2 → 20 %, 0.3 → 52 %, 1.0 → 79 % deployed).
  arch_learning_rate: float


class Reinforce(NamedTuple):
  """The pieces of a policy-gradient architecture step (`reinforce`)."""

  sample: Callable[[dict, jax.Array], jax.Array]  # (arch, key) -> choices
  child_logits: Callable[..., jax.Array]  # (weights, x, choices) -> logits
  # (arch, choices, advantage) -> scalar whose gradient is the update.
  policy_loss: Callable[[dict, jax.Array, jax.Array], jax.Array]
  baseline_decay: float


TRAITS = {
    "darts": Traits(one_stage=False, shared_program=True,
                    arch_learning_rate=3e-2),
    "one_stage": Traits(one_stage=True, shared_program=False,
                        arch_learning_rate=1.0),
    # DPNAS's 3e-4 is for ~10⁴ controller steps; a federated search takes
    # tens to hundreds, and Adam moves each logit by about its step size.
    "reinforce": Traits(one_stage=False, shared_program=False,
                        arch_learning_rate=0.05),
}


def traits(name: str) -> Traits:
  if name not in TRAITS:
    raise ConfigError(f"nas.strategy={name!r} is not allowed; choose one of"
                      f" {sorted(TRAITS)}")
  return TRAITS[name]


class SearchStrategy(NamedTuple):
  init: Callable[[jax.Array], dict]
  apply: Callable[..., jax.Array]
  predict: Callable[..., jax.Array]
  derive: Callable[[dict], genotype_lib.Genotype]
  active_weights: Callable[..., dict | None]
  # The fields of `Traits`.
  one_stage: bool
  shared_program: bool
  arch_learning_rate: float
  # Policy-gradient architecture steps (reinforce); None: `apply`'s gradient.
  reinforce: Reinforce | None = None


def sample_choices(arch_params: dict, key: jax.Array) -> jax.Array:
  """One op index per edge, k_e ~ softmax(α_e)."""
  return jax.random.categorical(key, arch_params["normal"], axis=-1)


def gated_one_hot(arch_params: dict, choices: jax.Array) -> jax.Array:
  """(E, O) one-hot on `choices`, valued exactly 1 on the chosen op, whose
  gradient w.r.t. α is the score ∇ log p_e(k_e) (DSNAS's gate)."""
  log_p = jax.nn.log_softmax(arch_params["normal"], axis=-1)
  chosen = jnp.take_along_axis(log_p, choices[:, None], axis=-1)[:, 0]
  gate = jnp.exp(chosen - jax.lax.stop_gradient(chosen))
  one_hot = jax.nn.one_hot(choices, log_p.shape[-1], dtype=log_p.dtype)
  return one_hot * gate[:, None]


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
  return choices_genotype(np.argmax(np.asarray(arch_params["normal"]), -1),
                          space)


def darts(space: SearchSpace) -> SearchStrategy:
  apply = supernet_apply(space)
  return SearchStrategy(
      init=lambda key: genotype_lib.init_arch_params(space, key=key),
      apply=apply, predict=apply,
      derive=lambda arch: genotype_lib.derive(arch, space),
      active_weights=lambda weights, arch, key: None,
      **TRAITS["darts"]._asdict())


def _sampled_children(space: SearchSpace, name: str, run_child: Callable,
                      **extra) -> SearchStrategy:
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

  return SearchStrategy(
      init=lambda key: genotype_lib.init_arch_params(space),
      apply=apply, predict=predict,
      derive=lambda arch: most_likely_child(arch, space),
      active_weights=lambda weights, arch, key: child_weights_mask(
          weights, sample_choices(arch, key), space),
      **extra, **TRAITS[name]._asdict())


def one_stage(space: SearchSpace) -> SearchStrategy:
  net = CellNetwork(space)

  def run_child(weights, arch_params, x, choices):
    return net.apply({"params": weights}, x,
                     gated_one_hot(arch_params, choices), choices)

  # DSNAS starts from uniform op probabilities.
  return _sampled_children(space, "one_stage", run_child)


def reinforce(space: SearchSpace, entropy_weight: float = 0.005,
              baseline_decay: float = 0.99) -> SearchStrategy:
  """DPNAS's controller search; entropy bonus β and baseline decay as DPNAS."""
  net = CellNetwork(space)
  num_ops = len(space.op_names)

  def child_logits(weights, x, choices):
    return net.apply({"params": weights}, x,
                     jax.nn.one_hot(choices, num_ops), choices)

  def policy_loss(arch_params, choices, advantage):
    log_p = jax.nn.log_softmax(arch_params["normal"], axis=-1)
    chosen = jnp.take_along_axis(log_p, choices[:, None], axis=-1).sum()
    entropy = -jnp.sum(jnp.exp(log_p) * log_p)
    return -jax.lax.stop_gradient(advantage) * chosen - entropy_weight * entropy

  return _sampled_children(
      space, "reinforce",
      lambda weights, arch_params, x, choices: child_logits(weights, x,
                                                            choices),
      reinforce=Reinforce(sample_choices, child_logits, policy_loss,
                          baseline_decay))


STRATEGIES = {"darts": darts, "one_stage": one_stage, "reinforce": reinforce}


def make_strategy(name: str, space: SearchSpace) -> SearchStrategy:
  traits(name)  # Validates the name.
  return STRATEGIES[name](space)
