r"""oneDNN's inner product for the CPU products of the fused linear losses (float32).

The chunk loops of :mod:`crossent._backends.linear_ce` and :mod:`crossent._backends.linear_distill`
multiply short, wide chunks by the classifier: ``X_c·Wᵀ`` (c × D by D × V, c ≈ 200 rows) and
``G_c·W`` (c × V by V × D). ``torch.mm`` (MKL's ``sgemm``) runs these shapes well below its speed on
the whole (N, V) product: it streams and re-packs all of W for every chunk. oneDNN's inner product (the
primitive behind ``torch.ops.mkldnn._linear_pointwise``, which PyTorch's own CPU compiler uses for
``linear``) keeps close to it, and reads Wᵀ as a strided weight without a copy. Measured at
N=2048, D=512, V=128256, 195-row chunks, 2 threads of a 2-core AMD EPYC, float32, min of 3:

=================  ======================  ==================  ======================
product            unchunked ``torch.mm``  chunks, ``torch.mm``  chunks, oneDNN
=================  ======================  ==================  ======================
``X_c·Wᵀ``         1445 ms                 2017–2076 ms        1661–1671 ms
``G_c·W``          1406–1526 ms            1611–1844 ms        1479 ms
=================  ======================  ==================  ======================

Both are exact float32 products (the same sums in another order; oneDNN lowers the precision only when
the user asks for it through ``torch.backends.mkldnn``'s float32 precision setting). The result is a
fresh tensor (the operator has no ``out=``).
"""

from __future__ import annotations

import torch

Tensor = torch.Tensor


def takes(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> bool:
    """Whether oneDNN computes the products of these operands: CPU, float32, contiguous, no zero-size
    dimension (oneDNN has no inner product over 0 features or into 0 outputs), oneDNN built."""
    return (
        x.device.type == "cpu"
        and x.numel() > 0
        and weight.numel() > 0
        and x.dtype == torch.float32
        and weight.dtype == torch.float32
        and (bias is None or (bias.dtype == torch.float32 and bias.is_contiguous()))
        and x.is_contiguous()
        and weight.is_contiguous()
        and torch.backends.mkldnn.is_available()
        and bool(
            torch.backends.mkldnn.enabled
        )  # (off under ``torch.backends.mkldnn.flags(enabled=False)``)
        and hasattr(torch.ops.mkldnn, "_linear_pointwise")
    )


def logits(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """``x·Wᵀ + b``: (c, D) rows by the (V, D) weight, a fresh (c, V) tensor."""
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


def times_weight(g: Tensor, weight: Tensor) -> Tensor:
    """``g·W``: (c, V) rows by the (V, D) weight (Wᵀ read in place as the inner product's weight)."""
    return torch.ops.mkldnn._linear_pointwise(g, weight.t(), None, "none", [], "")
