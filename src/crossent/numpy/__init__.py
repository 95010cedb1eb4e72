"""The NumPy reference of the cross-entropy family: the math in its clearest form, with analytic gradients.

Every function takes NumPy arrays (float64 for an exact oracle) and is written against the Python array
API, so the row-level functions also run on PyTorch tensors (that is how crossent's eager backend reuses
them instead of re-writing the math). Nothing here imports PyTorch.
"""

from .binary import (
    binary_cross_entropy,
    binary_cross_entropy_grad,
    binary_cross_entropy_with_logits,
    binary_cross_entropy_with_logits_grad,
    sigmoid_focal_loss,
    sigmoid_focal_loss_grad,
)
from .categorical import cross_entropy, cross_entropy_grad, nll_loss, nll_loss_grad
from .distillation import distillation_loss, distillation_loss_grad
from .divergence import entropy, entropy_grad, kl_div, kl_div_grad
from .focal import focal_loss, focal_loss_grad
from .primitives import (
    log_softmax,
    log_softmax_grad,
    logsumexp,
    logsumexp_grad,
    softcap,
    softmax,
    softmax_grad,
)

__all__ = [
    "binary_cross_entropy",
    "binary_cross_entropy_grad",
    "binary_cross_entropy_with_logits",
    "binary_cross_entropy_with_logits_grad",
    "cross_entropy",
    "cross_entropy_grad",
    "distillation_loss",
    "distillation_loss_grad",
    "entropy",
    "entropy_grad",
    "focal_loss",
    "focal_loss_grad",
    "kl_div",
    "kl_div_grad",
    "log_softmax",
    "log_softmax_grad",
    "logsumexp",
    "logsumexp_grad",
    "nll_loss",
    "nll_loss_grad",
    "sigmoid_focal_loss",
    "sigmoid_focal_loss_grad",
    "softcap",
    "softmax",
    "softmax_grad",
]
