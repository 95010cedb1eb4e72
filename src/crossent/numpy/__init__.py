"""The NumPy reference of the cross-entropy family: the math in its clearest form, with analytic gradients.

Every function takes NumPy arrays (float64 for an exact oracle) and is written against the Python array
API, so the row-level functions also run on PyTorch tensors (that is how crossent's eager backend reuses
them). Nothing here imports PyTorch.
"""

from .categorical import cross_entropy, cross_entropy_grad, nll_loss, nll_loss_grad
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
    "cross_entropy",
    "cross_entropy_grad",
    "log_softmax",
    "log_softmax_grad",
    "logsumexp",
    "logsumexp_grad",
    "nll_loss",
    "nll_loss_grad",
    "softcap",
    "softmax",
    "softmax_grad",
]
