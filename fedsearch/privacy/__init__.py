"""Differential privacy: clipped gradients, noise, accounting (on jax-privacy)."""

from fedsearch.privacy.accounting import ACCOUNTANTS
from fedsearch.privacy.accounting import ReleaseStream
from fedsearch.privacy.accounting import calibrate_noise_multiplier
from fedsearch.privacy.accounting import composed_event
from fedsearch.privacy.accounting import epsilon
from fedsearch.privacy.accounting import padded_batch_size
from fedsearch.privacy.accounting import truncation_tail
from fedsearch.privacy.dp_grad import clipped_grad_sum
from fedsearch.privacy.dp_grad import private_optimizer

__all__ = [
    "ACCOUNTANTS", "ReleaseStream", "calibrate_noise_multiplier",
    "clipped_grad_sum", "composed_event", "epsilon", "padded_batch_size",
    "private_optimizer", "truncation_tail",
]
