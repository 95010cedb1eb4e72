"""``torch.nn.Module`` wrappers of :mod:`crossent.functional`, with PyTorch's constructor arguments.

Class weights are registered as buffers named ``weight`` (and ``pos_weight``), as in ``torch.nn``, so they
move with ``.to()`` and live in the ``state_dict``.
"""

from __future__ import annotations

import math
from typing import Any

from torch import Tensor, nn

from . import functional as F
from ._arguments import legacy_reduction
from ._contract import CrossentValueError
from .linear import linear_cross_entropy


class _Loss(nn.Module):
    def __init__(
        self, size_average: bool | None = None, reduce: bool | None = None, reduction: str = "mean"
    ) -> None:
        super().__init__()
        self.reduction = legacy_reduction(size_average, reduce, reduction, renamed=False)


class CrossEntropyLoss(_Loss):
    """Module form of :func:`crossent.cross_entropy` (a drop-in for ``torch.nn.CrossEntropyLoss``)."""

    weight: Tensor | None

    def __init__(
        self,
        weight: Tensor | None = None,
        size_average: bool | None = None,
        ignore_index: int = -100,
        reduce: bool | None = None,
        reduction: str = "mean",
        label_smoothing: float = 0.0,
        *,
        z_loss: float = 0.0,
        softcap: float | None = None,
        backend: str = "auto",
    ) -> None:
        super().__init__(size_average, reduce, reduction)
        self.register_buffer("weight", weight)
        self.ignore_index = ignore_index
        self.label_smoothing = label_smoothing
        self.z_loss = z_loss
        self.softcap = softcap
        self.backend = backend

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return F.cross_entropy(
            input,
            target,
            self.weight,
            ignore_index=self.ignore_index,
            reduction=self.reduction,
            label_smoothing=self.label_smoothing,
            z_loss=self.z_loss,
            softcap=self.softcap,
            backend=self.backend,
        )


class NLLLoss(_Loss):
    """Module form of :func:`crossent.nll_loss` (a drop-in for ``torch.nn.NLLLoss``)."""

    weight: Tensor | None

    def __init__(
        self,
        weight: Tensor | None = None,
        size_average: bool | None = None,
        ignore_index: int = -100,
        reduce: bool | None = None,
        reduction: str = "mean",
    ) -> None:
        super().__init__(size_average, reduce, reduction)
        self.register_buffer("weight", weight)
        self.ignore_index = ignore_index

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return F.nll_loss(
            input, target, self.weight, ignore_index=self.ignore_index, reduction=self.reduction
        )


class BCELoss(_Loss):
    """Module form of :func:`crossent.binary_cross_entropy` (a drop-in for ``torch.nn.BCELoss``)."""

    weight: Tensor | None

    def __init__(
        self,
        weight: Tensor | None = None,
        size_average: bool | None = None,
        reduce: bool | None = None,
        reduction: str = "mean",
    ) -> None:
        super().__init__(size_average, reduce, reduction)
        self.register_buffer("weight", weight)

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return F.binary_cross_entropy(input, target, self.weight, reduction=self.reduction)


class BCEWithLogitsLoss(_Loss):
    """Module form of :func:`crossent.binary_cross_entropy_with_logits` (``torch.nn.BCEWithLogitsLoss``)."""

    weight: Tensor | None
    pos_weight: Tensor | None

    def __init__(
        self,
        weight: Tensor | None = None,
        size_average: bool | None = None,
        reduce: bool | None = None,
        reduction: str = "mean",
        pos_weight: Tensor | None = None,
        *,
        backend: str = "auto",
    ) -> None:
        super().__init__(size_average, reduce, reduction)
        self.register_buffer("weight", weight)
        self.register_buffer("pos_weight", pos_weight)
        self.backend = backend

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return F.binary_cross_entropy_with_logits(
            input,
            target,
            self.weight,
            reduction=self.reduction,
            pos_weight=self.pos_weight,
            backend=self.backend,
        )


class KLDivLoss(_Loss):
    """Module form of :func:`crossent.kl_div` (a drop-in for ``torch.nn.KLDivLoss``)."""

    def __init__(
        self,
        size_average: bool | None = None,
        reduce: bool | None = None,
        reduction: str = "mean",
        log_target: bool = False,
    ) -> None:
        super().__init__(size_average, reduce, reduction)
        self.log_target = log_target

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return F.kl_div(input, target, reduction=self.reduction, log_target=self.log_target)


class FocalLoss(nn.Module):
    """Module form of :func:`crossent.focal_loss` (softmax focal loss; ``alpha`` a number or a (C,) buffer)."""

    weight: Tensor | None

    def __init__(
        self,
        alpha: Tensor | float | None = None,
        gamma: float = 2.0,
        weight: Tensor | None = None,
        ignore_index: int = -100,
        reduction: str = "mean",
        *,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        self.backend = backend
        if isinstance(alpha, Tensor):
            self.register_buffer("alpha", alpha)
        else:
            self.alpha = alpha
        self.gamma = gamma
        self.register_buffer("weight", weight)
        self.ignore_index = ignore_index
        self.reduction = reduction

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return F.focal_loss(
            input,
            target,
            self.alpha,
            self.gamma,
            self.weight,
            ignore_index=self.ignore_index,
            reduction=self.reduction,
            backend=self.backend,
        )


class SigmoidFocalLoss(nn.Module):
    """Module form of :func:`crossent.sigmoid_focal_loss` (torchvision's defaults)."""

    def __init__(
        self,
        alpha: float = 0.25,
        gamma: float = 2,
        reduction: str = "none",
        *,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        self.alpha, self.gamma, self.reduction, self.backend = alpha, gamma, reduction, backend

    def forward(self, inputs: Tensor, targets: Tensor) -> Tensor:
        return F.sigmoid_focal_loss(
            inputs, targets, self.alpha, self.gamma, self.reduction, backend=self.backend
        )


class LinearCrossEntropyLoss(nn.Module):
    """Module form of :func:`crossent.linear_cross_entropy`, a drop-in for
    ``torch.nn.LinearCrossEntropyLoss``: it owns the classifier (``self.linear``, an ``nn.Linear`` with
    ``C·d1⋯dK`` outputs, reshaped to (C, d1, …, dK, in_features) in :meth:`forward`), so its
    ``state_dict`` is torch's. ``forward(input, target)``.

    crossent's extras (``z_loss``, ``softcap``, ``workspace_bytes``, ``backend``) are keyword-only.
    """

    weight: Tensor | None

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        *,
        out_features: tuple[int, ...] = (),
        bias: bool = False,
        device: Any = None,
        dtype: Any = None,
        reduction: str = "mean",
        weight: Tensor | None = None,
        ignore_index: int | None = None,
        label_smoothing: float = 0.0,
        options: Any = None,
        z_loss: float = 0.0,
        softcap: float | None = None,
        workspace_bytes: int | None = None,
        backend: str = "auto",
    ) -> None:
        if weight is not None and weight.shape != (num_classes,):
            raise CrossentValueError(
                f"expected weight shape to be {(num_classes,)}, got {tuple(weight.shape)} "
                "(argument 'weight')"
            )
        if label_smoothing < 0 or label_smoothing > 1.0:
            raise CrossentValueError(
                f"expected label_smoothing to be in range [0, 1], got {label_smoothing} "
                "(argument 'label_smoothing')"
            )
        super().__init__()
        self.register_buffer("weight", weight)
        self.reduction = reduction
        self.num_classes = num_classes
        self.out_features = tuple(out_features)
        self.ignore_index = ignore_index
        self.label_smoothing = label_smoothing
        self.linear = nn.Linear(
            in_features,
            math.prod(self.out_features, start=num_classes),
            bias=bias,
            device=device,
            dtype=dtype,
        )
        self.options = options
        self.z_loss, self.softcap = z_loss, softcap
        self.workspace_bytes, self.backend = workspace_bytes, backend

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        linear_weight = self.linear.weight.reshape(
            (self.num_classes, *self.out_features, self.linear.in_features)
        )
        bias = self.linear.bias
        linear_bias = None if bias is None else bias.reshape((self.num_classes, *self.out_features))
        return linear_cross_entropy(
            input,
            linear_weight,
            target,
            linear_bias=linear_bias,
            weight=self.weight,
            reduction=self.reduction,
            ignore_index=self.ignore_index,
            label_smoothing=self.label_smoothing,
            options=self.options,
            z_loss=self.z_loss,
            softcap=self.softcap,
            workspace_bytes=self.workspace_bytes,
            backend=self.backend,
        )


__all__ = [
    "BCELoss",
    "BCEWithLogitsLoss",
    "CrossEntropyLoss",
    "FocalLoss",
    "KLDivLoss",
    "LinearCrossEntropyLoss",
    "NLLLoss",
    "SigmoidFocalLoss",
]
