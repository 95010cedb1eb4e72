r"""Cross-entropy of one chunk of logits, in place, for the fused linear cross-entropy.

Computes the rows of :func:`crossent.numpy.categorical.ce_rows` and their gradient
(:func:`crossent.numpy.categorical.ce_rows_grad`; the formulas are in that module's docstring) for an
(M, V) chunk of logits that the caller owns, overwriting the chunk instead of allocating (M, V)
temporaries. Two forms:

* :func:`softmax_rows_` — the *factored* form used by the CPU fast path. The chunk becomes
  :math:`P = \operatorname{softmax}(z)` (one fused ATen kernel: per row a max pass, an exp-and-sum pass
  and a scale pass, all on an L2-resident row, so the chunk crosses DRAM once in each direction). The
  gradient of an index-target row is

  .. math:: G_i = a_i P_i - b_i e_{y_i}^\top - \tfrac{\varepsilon}{C} g_i w^\top, \quad
            a_i = g_i\big((1-\varepsilon) w_{y_i} + \tfrac{\varepsilon}{C} W + 2\lambda w_{y_i}\,
            \mathrm{lse}_i\big), \quad b_i = g_i (1-\varepsilon) w_{y_i}

  so the caller never scales the chunk: it subtracts :math:`b_i/a_i` at the M target positions of P
  (the cancellation :math:`p_y - 1` happens there, before any product), scales rows of the small (M, D)
  operands by :math:`a`, and adds the rank-one term with O(D) work per row
  (:mod:`crossent._backends.linear_ce`).
  The log-sum-exp comes out of the softmax without another pass: :math:`\mathrm{lse}_i = z_{i,y_i} -
  \log P_{i,y_i}`, exact while :math:`P_{i,y_i}` is a normal float; rows where it is not are reported
  to the caller, which recomputes their lse from their logits (a host-side decision: CPU only).
* :func:`ce_grad_` — the *explicit* form (any device, no host synchronisation): the chunk becomes
  :math:`G` itself. Used for half-precision inputs (the gradient must be rounded once, after the
  cancellation :math:`p_y - 1`), for the softcap (its factor :math:`1-\tanh^2` is elementwise), on CUDA
  (no ``index_add_`` atomics: deterministic), and for probability targets (through the reference rows).

Passes over the chunk (index targets, no softcap): factored — softmax (1 read + 1 write) plus a gather;
explicit — max (read), softmax (read + write), max of P (read), scale (read + write), smoothing term
(read + write, only with ε > 0).
"""

from __future__ import annotations

import torch

from .._contract import CEOptions
from ..numpy import categorical
from ..numpy._xp import namespace

Tensor = torch.Tensor


def _class_weight_terms(weight: Tensor | None, rows: Tensor, like: Tensor, num_classes: int):
    """(w[y] per row or 1.0, W = Σ_c w_c)."""
    if weight is None:
        return 1.0, float(num_classes)
    return weight[rows], weight.sum()


def softmax_rows_(z: Tensor, target: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Turn the (M, V) logits ``z`` into softmax probabilities in place; return ``(lse, z_y, bad)``.

    ``target`` holds valid class indices (no ignored rows). ``lse`` is exact where ``bad`` is False;
    ``bad`` marks rows whose target probability is subnormal, zero or NaN-free-but-unusable, for which
    the caller must recompute lse from the logits.
    """
    col = target.view(-1, 1)
    z_y = z.gather(1, col).view(-1)
    torch.softmax(z, 1, out=z)  # stability: ATen subtracts the row max; in place is safe row by row
    p_y = z.gather(1, col).view(-1)
    tiny = torch.finfo(z.dtype).tiny * 2.0**10  # normal with margin: log p_y keeps full precision
    bad = p_y < tiny
    lse = z_y - torch.log(p_y)
    return lse, z_y, bad


def index_rows(
    lse: Tensor,
    z_y: Tensor,
    sum_wz: Tensor | None,
    w_y: Tensor | float,
    total_w: Tensor | float,
    options: CEOptions,
    num_classes: int,
    g: Tensor | None = None,
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """Loss rows of index-target rows (:func:`crossent.numpy.categorical.index_row_terms`) and, when the
    per-row upstream factor ``g`` is given, the ``(a, b)`` of the factored gradient (module docstring):
    ``G = a·P − b·onehot − (ε/C)·g·wᵀ`` with ``a = g·κ`` and ``b = g·(1 − ε)·w_y``."""
    loss, kappa = categorical.index_row_terms(
        lse, z_y, sum_wz, w_y, total_w, options.label_smoothing, options.z_loss, num_classes
    )
    if g is None:
        return loss, None, None
    return loss, g * kappa, g * ((1.0 - options.label_smoothing) * w_y)


def prob_rows_target_grads(
    z: Tensor,
    target: Tensor,
    weight: Tensor | None,
    options: CEOptions,
    g: Tensor,
    need_weight: bool,
) -> tuple[Tensor, Tensor | None]:
    """Gradients with respect to a chunk's probability targets and the class weights
    (:func:`crossent.numpy.categorical.prob_target_grads`); read ``z`` before it becomes the gradient."""
    return categorical.prob_target_grads(
        z, target, weight, options, g.to(z.dtype).expand(z.shape[:1]), need_weight
    )


def ce_grad_(
    z: Tensor,
    target: Tensor,
    weight: Tensor | None,
    options: CEOptions,
    prob_target: bool,
    g: Tensor,
    want_grad: bool,
    tau: Tensor | None = None,
) -> Tensor:
    """Loss rows of the (M, V) float32/float64 logits ``z``; if ``want_grad``, ``z`` becomes the gradient.

    ``g`` is the per-row upstream factor (0-d or (M,)); ``tau`` an (M, V) scratch buffer, needed with a
    softcap. Ignored rows get loss 0 and gradient ``0·P`` (exact zeros for finite logits). No host
    synchronisation.
    """
    num_classes = z.shape[1]
    if prob_target:
        # Probability targets: the reference rows (they allocate a few (M, V) temporaries; the caller
        # sizes the chunk for that).
        loss, _ = categorical.ce_rows(z, target, weight, options, True)
        if want_grad:
            z.copy_(
                categorical.ce_rows_grad(z, target, weight, options, True, g.expand(z.shape[:1]))
            )
        return loss
    cap = options.softcap
    if cap is not None:
        assert tau is not None and tau.shape == z.shape
        torch.div(z, cap, out=tau).tanh_()
        torch.mul(tau, cap, out=z)  # z = s·tanh(x/s); tau keeps tanh for the gradient factor
    eps = options.label_smoothing
    valid, safe = categorical.valid_targets(namespace(target), target, options.ignore_index)
    col = safe.view(-1, 1)
    z_y = z.gather(1, col).view(-1)
    sum_wz = None
    if eps > 0:
        sum_wz = z.sum(1) if weight is None else z @ weight
    m = z.amax(1)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    torch.softmax(z, 1, out=z)
    # stability: p_max ≥ 1/C, so log p_max is exact; lse = m − log p_max (m = the row max used above)
    lse = m - torch.log(z.amax(1))
    w_y, total_w = _class_weight_terms(weight, safe, z, num_classes)
    gv = None
    if want_grad:
        gv = torch.where(valid, g.to(z.dtype).expand(valid.shape), torch.zeros_like(lse))
    loss, a, b = index_rows(lse, z_y, sum_wz, w_y, total_w, options, num_classes, gv)
    loss = torch.where(valid, loss, torch.zeros_like(loss))
    if not want_grad:
        return loss
    assert a is not None and b is not None and gv is not None  # (set when want_grad)
    z.mul_(a.view(-1, 1))
    # target class: dz_y −= b (one position per row: a gather and an index_put, deterministic)
    rows = torch.arange(z.shape[0], device=z.device)
    z.index_put_((rows, safe), z[rows, safe] - b)
    if eps > 0:
        if weight is None:
            z.sub_((gv * (eps / num_classes)).view(-1, 1))
        else:
            z.addr_(gv, weight, alpha=-eps / num_classes)
    if cap is not None:
        # dz/dx = 1 − tanh²(x/s)
        assert tau is not None  # (checked above)
        tau.mul_(tau).neg_().add_(1.0)
        z.mul_(tau)
    return loss


__all__ = ["ce_grad_", "index_rows", "prob_rows_target_grads", "softmax_rows_"]
