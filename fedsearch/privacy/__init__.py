"""Differential privacy: mechanisms, clipped gradients, noise, accounting, the plan."""

from fedsearch.privacy.accounting import ACCOUNTANTS
from fedsearch.privacy.accounting import ReleaseStream
from fedsearch.privacy.accounting import calibrate_noise_multiplier
from fedsearch.privacy.accounting import epsilon
from fedsearch.privacy.dp_grad import clipped_grad_sum
from fedsearch.privacy.flax_probes import UnsupportedLayerError
from fedsearch.privacy.flax_probes import flax_model
from fedsearch.privacy.mechanisms import MECHANISMS
from fedsearch.privacy.mechanisms import Mechanism
from fedsearch.privacy.mechanisms import Model
from fedsearch.privacy.mechanisms import make_mechanism
from fedsearch.privacy.mechanisms import private_optimizer
from fedsearch.privacy.mechanisms import softmax_cross_entropy
from fedsearch.privacy.plan import NoiseMultipliers
from fedsearch.privacy.plan import PrivacyPlan
from fedsearch.privacy.plan import make_plan
from fedsearch.privacy.training import PrivateTraining
from fedsearch.privacy.training import make_private

__all__ = [
    "ACCOUNTANTS", "MECHANISMS", "Mechanism", "Model", "NoiseMultipliers",
    "PrivacyPlan", "PrivateTraining", "ReleaseStream",
    "UnsupportedLayerError", "calibrate_noise_multiplier", "clipped_grad_sum",
    "epsilon", "flax_model", "make_mechanism", "make_plan", "make_private",
    "private_optimizer", "softmax_cross_entropy",
]
