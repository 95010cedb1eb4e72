"""Cross-entropy rows of one chunk of logits with the gradient written over them, for the fused linear
cross-entropy (:mod:`crossent._backends.linear_ce`).

:func:`ce_rows_grad_` has the contract of :func:`crossent._backends.linear_ce_chunk.ce_grad_` (less its softcap scratch)
(computes :func:`crossent.numpy.categorical.ce_rows` and, in place, ``g_i·``
:func:`~crossent.numpy.categorical.ce_rows_grad`) with the Triton kernel of :mod:`.ce`: the chunk is
read once and written once when a row fits in one block (twice read past that), all in float32
whatever z's dtype, the gradient rounded once into z. No host synchronisation; every option (class
weights, ignore_index, label smoothing, z-loss, softcap, probability targets) and a 0-d or per-row
upstream factor ``g`` (``G_PER_ROW``: g is materialised as an (m,) float32 vector, O(m)).

Why it is safe to overwrite z in the launch that reads it: a program reads a block of its row before it
writes that block, and reads the target logit z_y before writing anything. The one exception is a
*split* row (few long rows, several programs per row, :func:`.configs.split_config`): the program that
writes the loss (chunk 0) reads z_y, which the program holding column y may already have overwritten. For
split rows the work is therefore two launches (:func:`launch_over_logits`, also used by
``inplace=True``): loss, lse and the gradient's per-row coefficient (``STATS_SAVE``), then the gradient
from them (``STATS_LOAD``, which reads no column but its own). The bytes are the same as the fused split
path's (it reads the row twice anyway); one launch more.

Registered as the custom op ``crossent::triton_ce_rows_grad_`` (mutates z; a fake implementation), so
``torch.compile(fullgraph=True)`` sees one opaque op. It has no autograd formula: it is a building block
for the caller's own backward.

(No ``from __future__ import annotations``: ``torch.library.custom_op`` reads the real annotations.)
"""

from typing import Any

import torch

from ..._contract import CEOptions
from . import configs
from .ce import G_PER_ROW, G_SCALAR, STATS_COMPUTE, STATS_LOAD, STATS_SAVE, launch_ce

Tensor = torch.Tensor


def _splits_rows(
    z: Tensor, weight: Tensor | None, prob_target: bool, eps: float, cap: float
) -> bool:
    """Whether ``launch_ce`` cuts the rows of z over several programs (the same rule, from .configs)."""
    live = configs.live_arrays(
        prob_target=prob_target, weighted=weight is not None, smoothing=eps > 0, softcap=cap > 0
    )
    block, _ = configs.ce_config(z.shape[1], z.element_size(), live)
    return configs.split_config(z.shape[0], z.shape[1], block)[0] > 1


def launch_over_logits(
    z: Tensor,
    target: Tensor,
    weight: Tensor | None,
    g: Tensor | None,
    loss: Tensor,
    lse: Tensor,
    *,
    g_mode: int,
    g_scale: float,
    ignore_index: int,
    label_smoothing: float,
    z_loss: float,
    softcap: float,
    prob_target: bool,
) -> None:
    """``launch_ce`` that writes the gradient over the logits ``z`` it reads (also used by ``inplace=True``).

    One launch, or two for split rows (module docstring); ``loss``/``lse`` as in ``launch_ce``.
    """
    opts: dict[str, Any] = dict(
        ignore_index=ignore_index, label_smoothing=label_smoothing, z_loss=z_loss, softcap=softcap,
        prob_target=prob_target,
    )  # fmt: skip
    if not _splits_rows(z, weight, prob_target, label_smoothing, softcap):
        # one launch: each program reads its row (z_y first), then writes the row's gradient over it
        launch_ce(
            z, target, weight, g, loss, lse, None, z,
            row_stats=STATS_COMPUTE, g_mode=g_mode, g_scale=g_scale, **opts,
        )  # fmt: skip
        return
    coef = torch.empty(z.shape[0], dtype=torch.float32, device=z.device)
    launch_ce(
        z, target, weight, None, loss, lse, coef, None,
        row_stats=STATS_SAVE, g_mode=G_SCALAR, g_scale=1.0, **opts,
    )  # fmt: skip
    launch_ce(
        z, target, weight, g, loss, lse, coef, z,
        row_stats=STATS_LOAD, g_mode=g_mode, g_scale=g_scale, **opts,
    )  # fmt: skip


@torch.library.custom_op("crossent::triton_ce_rows_grad_", mutates_args=("z",))
def triton_ce_rows_grad_(
    z: Tensor,
    target: Tensor,
    weight: Tensor | None,
    g: Tensor,
    ignore_index: int,
    label_smoothing: float,
    z_loss: float,
    softcap: float,
    prob_target: bool,
    want_grad: bool,
) -> Tensor:
    """Per-row losses (m,) float32; with ``want_grad`` z becomes ``g_i·∂ℓ_i/∂z`` (``g``: (m,) float32)."""
    m = z.shape[0]
    loss = torch.empty(m, dtype=torch.float32, device=z.device)
    lse = torch.empty(m, dtype=torch.float32, device=z.device)
    opts: dict[str, Any] = dict(
        ignore_index=ignore_index, label_smoothing=label_smoothing, z_loss=z_loss,
        softcap=softcap, prob_target=prob_target,
    )  # fmt: skip
    if want_grad:
        launch_over_logits(z, target, weight, g, loss, lse, g_mode=G_PER_ROW, g_scale=1.0, **opts)
    else:
        launch_ce(
            z, target, weight, None, loss, lse, None, None,
            row_stats=STATS_COMPUTE, g_mode=G_SCALAR, g_scale=1.0, **opts,
        )  # fmt: skip
    return loss


@triton_ce_rows_grad_.register_fake
def _(z, target, weight, g, ignore_index, label_smoothing, z_loss, softcap, prob_target, want_grad):
    return z.new_empty((z.shape[0],), dtype=torch.float32)


def ce_rows_grad_(
    z: Tensor,
    target: Tensor,
    weight: Tensor | None,
    options: CEOptions,
    prob_target: bool,
    g: Tensor,
    want_grad: bool,
) -> Tensor:
    """Loss rows of the (m, V) logits ``z``; if ``want_grad``, ``z`` becomes the gradient, in place.

    Args:
        z: (m, V) logits, float32, bfloat16 or float16, class stride 1 (math in float32; the gradient is
            rounded once to z's dtype).
        target: (m,) class indices (``options.ignore_index`` allowed), or (m, V) class probabilities
            when ``prob_target``.
        weight: (V,) class weights or None.
        options: the validated options (``options.reduction`` is not used).
        prob_target: which kind of target ``target`` is.
        g: the upstream factor of each row's gradient, 0-d or (m,).
        want_grad: overwrite ``z`` with ``g_i·∂ℓ_i/∂z`` (ignored rows: zeros for finite logits).

    Returns:
        (m,) float32 per-row losses (0 at ignored rows).
    """
    m = z.shape[0]
    if z.stride(1) != 1:
        raise ValueError(
            f"ce_rows_grad_: z must have class stride 1, got strides {tuple(z.stride())}"
        )
    if prob_target and target.stride(-1) != 1:
        target = target.contiguous()
    if weight is not None and not weight.is_contiguous():
        weight = weight.contiguous()
    g_rows = g.to(torch.float32).reshape(-1).expand(m).contiguous() if want_grad else z.new_empty(0)
    softcap = float(options.softcap) if options.softcap is not None else 0.0
    return triton_ce_rows_grad_(
        z, target, weight, g_rows, int(options.ignore_index), float(options.label_smoothing),
        float(options.z_loss), softcap, bool(prob_target), bool(want_grad),
    )  # fmt: skip


__all__ = ["ce_rows_grad_", "launch_over_logits", "triton_ce_rows_grad_"]
