"""DARTS (Liu et al. 2019) as FEATHERS / FedNAS run it on a client.

The continuous relaxation: every op on every edge, weighted by softmax(α).
Each local step first moves α on a Poisson batch of the client's local
validation split (first-order DARTS), then the weights on a train batch.
The architecture step is its own release: the per-example gradient w.r.t. α
clipped to C_a and noised with N(0, (σ·C_a)²) (architecture gradients are
~10x smaller than weight gradients, so a bound of their own keeps their
noise in proportion). Deployed: the DARTS derivation rule.
"""

import optax

from fedsearch.nas.base import (ArchContext, ArchStep, NasStrategy, Traits,
                                private_arch_optimizer, weights_only)
from fedsearch.privacy.mechanisms import mean_loss
from fedsearch.search_space import genotype as genotype_lib
from fedsearch.search_space.network import supernet_model
from fedsearch.search_space.space import SearchSpace

TRAITS = Traits(one_stage=False, shared_program=True, reads_validation=True,
                controller=False, arch_learning_rate=3e-2)


def darts(space: SearchSpace) -> NasStrategy:
  model = supernet_model(space)

  def arch_step(context: ArchContext) -> ArchStep:
    arch_grad = context.mechanism.gradient(
        mean_loss(context.model, context.loss), 1, context.arch_clip_norm)
    optimizer = private_arch_optimizer(context, context.expected_batch[1])

    def before_weights(opt_state, weights, arch, val, step_key, index):
      del index
      g = arch_grad(weights, arch, val.x, val.y, step_key,
                    is_padding_example=val.padding)
      updates, opt_state = optimizer.update(g, opt_state, arch)
      return optax.apply_updates(arch, updates), opt_state

    return weights_only(context)._replace(
        init=lambda arch, state: optimizer.init(arch),
        before_weights=before_weights, report=lambda opt_state: None)

  return NasStrategy(
      name="darts", traits=TRAITS,
      init=lambda key: genotype_lib.init_arch_params(space, key=key),
      init_state=lambda: None, model=model, predict=model.apply,
      derive=lambda arch: genotype_lib.derive(arch, space),
      active_weights=lambda weights, arch, key: None, arch_step=arch_step)
