"""Conformance with PyTorch's own test inputs: every drop-in against its ``torch`` twin.

PyTorch ships the inputs it tests its operators and modules with (``OpInfo`` entries of
``torch.testing._internal.common_methods_invocations.op_db`` and ``ModuleInfo`` entries of
``torch.testing._internal.common_modules.module_db``). Each sample and reference input of the six
drop-ins, in float64 and float32 on the CPU, is run through torch and through crossent: values and the
gradients of every differentiable tensor (input, target, weights, module parameters) must agree
(float64: 1e-7, float32: 2e-5), and each error input must raise a compatible exception class whose
message matches torch's pattern. A future torch release that adds samples adds tests here.

Oracle: torch itself (independent of crossent). ``reference_inputs`` is run only where an op defines
its own (otherwise it repeats ``sample_inputs``). Needs the ``expecttest`` package (imported by torch's
test utilities); skipped without it.
"""

from __future__ import annotations

import re
import warnings

import pytest
import torch

pytest.importorskip("expecttest")

from torch.testing._internal.common_methods_invocations import op_db  # noqa: E402
from torch.testing._internal.common_modules import ModuleErrorEnum, module_db  # noqa: E402
from torch.utils._pytree import tree_leaves  # noqa: E402

import crossent  # noqa: E402
import crossent.nn  # noqa: E402

# torch op name → crossent function name
OPS = {
    "nn.functional.cross_entropy": "cross_entropy",
    "nn.functional.nll_loss": "nll_loss",
    "nn.functional.binary_cross_entropy": "binary_cross_entropy",
    "nn.functional.binary_cross_entropy_with_logits": "binary_cross_entropy_with_logits",
    "nn.functional.kl_div": "kl_div",
    "nn.functional.linear_cross_entropy": "linear_cross_entropy",
}
MODULES = (
    "CrossEntropyLoss",
    "NLLLoss",
    "BCELoss",
    "BCEWithLogitsLoss",
    "KLDivLoss",
    "LinearCrossEntropyLoss",
)
DTYPES = (torch.float64, torch.float32)
TOL = {torch.float64: dict(rtol=1e-7, atol=1e-7), torch.float32: dict(rtol=2e-5, atol=2e-5)}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Hundreds of tiny problems: one intra-op thread (idle pool threads spinning on a busy machine cost
    more than the work itself)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _known_failure(kind: str, name: str, args: tuple, kwargs: dict) -> str | None:
    """Samples crossent does not pass yet, each with its cause (marked xfail(strict=True): they must
    start passing when the cause is fixed)."""
    reduction = kwargs.get("reduction")
    if reduction == "elementwise_mean":
        return (
            "reduction='elementwise_mean' (torch: deprecated alias of 'mean' with a warning) is "
            "rejected by crossent's reduction check"
        )
    return None


def _op_cases():
    cases = []
    for op in op_db:
        if op.name not in OPS:
            continue
        variant = op.name.split(".")[-1] + (
            f"[{op.variant_test_name}]" if op.variant_test_name else ""
        )
        for dtype in DTYPES:
            torch.manual_seed(0)
            kinds = [("sample", op.sample_inputs)]
            if op.reference_inputs_func is not None:
                kinds.append(("reference", op.reference_inputs))
            for kind, gen in kinds:
                for i, sample in enumerate(gen("cpu", dtype, requires_grad=True)):
                    reason = _known_failure("op", op.name, sample.args, sample.kwargs)
                    marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
                    cases.append(
                        pytest.param(
                            op,
                            sample,
                            dtype,
                            id=f"{variant}-{str(dtype)[6:]}-{kind}{i}",
                            marks=marks,
                        )
                    )
    return cases


def _error_cases():
    cases = []
    for op in op_db:
        if op.name not in OPS or op.error_inputs_func is None:
            continue
        variant = op.name.split(".")[-1] + (
            f"[{op.variant_test_name}]" if op.variant_test_name else ""
        )
        for i, err in enumerate(op.error_inputs("cpu")):
            cases.append(pytest.param(op, err, id=f"{variant}-error{i}"))
    return cases


def _module_cases():
    cases = []
    for info in module_db:
        name = info.module_cls.__name__
        if name not in MODULES:
            continue
        for dtype in DTYPES:
            torch.manual_seed(0)
            inputs = info.module_inputs_func(
                info, device="cpu", dtype=dtype, requires_grad=True, training=True
            )
            for i, mi in enumerate(inputs):
                kw = mi.constructor_input.kwargs
                reason = _known_failure("module", name, mi.constructor_input.args, kw)
                marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
                cases.append(
                    pytest.param(info, mi, dtype, id=f"{name}-{str(dtype)[6:]}-{i}", marks=marks)
                )
    return cases


def _module_error_cases():
    cases = []
    for info in module_db:
        name = info.module_cls.__name__
        if name not in MODULES or info.module_error_inputs_func is None:
            continue
        errs = info.module_error_inputs_func(
            info, device="cpu", dtype=torch.float32, requires_grad=False, training=True
        )
        for i, err in enumerate(errs):
            cases.append(pytest.param(info, err, id=f"{name}-error{i}"))
    return cases


def _differentiable(tree) -> list[torch.Tensor]:
    return [t for t in tree_leaves(tree) if isinstance(t, torch.Tensor) and t.requires_grad]


def _value_and_grads(fn, tensors, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = fn(*args, **kwargs)
    if not out.requires_grad or not tensors:
        return out.detach(), []
    g = torch.Generator().manual_seed(1)
    go = torch.rand(out.shape, generator=g, dtype=out.dtype) + 0.5
    return out.detach(), list(torch.autograd.grad(out, tensors, go, allow_unused=True))


def _assert_same(expected, actual, dtype, what):
    (v0, g0), (v1, g1) = expected, actual
    torch.testing.assert_close(
        v1, v0, **TOL[dtype], equal_nan=True, msg=lambda m: f"{what} value: {m}"
    )
    for i, (a, b) in enumerate(zip(g0, g1)):
        assert (a is None) == (b is None), f"{what}: gradient {i} is {b is None and 'missing'}"
        if a is not None:
            torch.testing.assert_close(
                b, a, **TOL[dtype], equal_nan=True, msg=lambda m, i=i: f"{what} gradient {i}: {m}"
            )


def _check_error(fn, error_type, error_regex):
    with pytest.raises(Exception) as info:  # noqa: PT011 (the class is checked below)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fn()
    assert isinstance(info.value, error_type), (
        f"raised {type(info.value).__name__}, torch raises {error_type.__name__}: {info.value}"
    )
    with warnings.catch_warnings():
        warnings.simplefilter(
            "ignore", FutureWarning
        )  # some of torch's patterns use "[[" literally
        found = re.search(error_regex, str(info.value))
    assert found, f"message {str(info.value)!r} does not match torch's {error_regex!r}"


@pytest.mark.parametrize(("op", "sample", "dtype"), _op_cases())
def test_op_sample(op, sample, dtype):
    fn = getattr(crossent, OPS[op.name])
    tensors = _differentiable((sample.input, sample.args, sample.kwargs))
    expected = _value_and_grads(op.op, tensors, sample.input, *sample.args, **sample.kwargs)
    actual = _value_and_grads(fn, tensors, sample.input, *sample.args, **sample.kwargs)
    _assert_same(expected, actual, dtype, op.name)


@pytest.mark.parametrize(("op", "err"), _error_cases())
def test_op_error(op, err):
    fn = getattr(crossent, OPS[op.name])
    s = err.sample_input
    _check_error(lambda: fn(s.input, *s.args, **s.kwargs), err.error_type, err.error_regex)


def _build(cls, ctor):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return cls(*ctor.args, **ctor.kwargs)


@pytest.mark.parametrize(("info", "mi", "dtype"), _module_cases())
def test_module_input(info, mi, dtype):
    name = info.module_cls.__name__
    ours = getattr(crossent.nn, name)
    torch.manual_seed(2)
    m_torch = _build(info.module_cls, mi.constructor_input)
    m_ours = _build(ours, mi.constructor_input)
    m_ours.load_state_dict(m_torch.state_dict())
    fwd = mi.forward_input
    results = []
    for m in (m_torch, m_ours):
        tensors = _differentiable((fwd.args, fwd.kwargs)) + list(m.parameters())
        results.append(_value_and_grads(m, tensors, *fwd.args, **fwd.kwargs))
    _assert_same(results[0], results[1], dtype, name)


@pytest.mark.parametrize(("info", "err"), _module_error_cases())
def test_module_error(info, err):
    ours = getattr(crossent.nn, info.module_cls.__name__)
    mi = err.module_error_input
    if err.error_on == ModuleErrorEnum.CONSTRUCTION_ERROR:
        _check_error(lambda: _build(ours, mi.constructor_input), err.error_type, err.error_regex)
        return
    m = _build(ours, mi.constructor_input)
    fwd = mi.forward_input
    _check_error(lambda: m(*fwd.args, **fwd.kwargs), err.error_type, err.error_regex)
