"""The JAX front end: crossent's cross-entropy family as pure JAX functions.

``import crossent.jax`` needs JAX only (no PyTorch). Every function computes the function of the same name
in :mod:`crossent.numpy` (the reference, whose row functions it calls on JAX arrays), with PyTorch's names,
defaults, denominators, ``ignore_index``, label smoothing and class weights, and works under ``jax.jit``,
``jax.grad``, ``jax.vmap`` and ``jax.jvp``. :func:`linear_cross_entropy` fuses the output projection of a
language-model head with the loss and never holds the (tokens × vocabulary) logits.
"""

from __future__ import annotations

from .binary import binary_cross_entropy_with_logits, kl_div, sigmoid_focal_loss
from .categorical import cross_entropy, focal_loss, nll_loss
from .linear import linear_cross_entropy

__all__ = [
    "binary_cross_entropy_with_logits",
    "cross_entropy",
    "focal_loss",
    "kl_div",
    "linear_cross_entropy",
    "nll_loss",
    "sigmoid_focal_loss",
]
