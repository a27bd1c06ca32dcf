"""Differential privacy: mechanisms, clipped gradients, noise, accounting, the plan."""

from fedsearch.privacy.accounting import ACCOUNTANTS
from fedsearch.privacy.accounting import ReleaseStream
from fedsearch.privacy.accounting import calibrate_noise_multiplier
from fedsearch.privacy.accounting import epsilon
from fedsearch.privacy.dp_grad import clipped_grad_sum
from fedsearch.privacy.mechanisms import MECHANISMS
from fedsearch.privacy.mechanisms import Mechanism
from fedsearch.privacy.mechanisms import Model
from fedsearch.privacy.mechanisms import make_mechanism
from fedsearch.privacy.mechanisms import private_optimizer
from fedsearch.privacy.mechanisms import softmax_cross_entropy
from fedsearch.privacy.plan import NoiseMultipliers
from fedsearch.privacy.plan import PrivacyPlan
from fedsearch.privacy.plan import make_plan

__all__ = [
    "ACCOUNTANTS", "MECHANISMS", "Mechanism", "Model", "NoiseMultipliers",
    "PrivacyPlan", "ReleaseStream", "calibrate_noise_multiplier",
    "clipped_grad_sum", "epsilon", "make_mechanism", "make_plan",
    "private_optimizer", "softmax_cross_entropy",
]
