"""Bad input raises what torch raises (same exception class, or a subclass of it) and names the argument.

Oracle: torch.nn.functional itself — each case first checks that torch raises, then that crossent raises an
instance of the same class, whose message names the argument.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import crossent
import crossent.numpy as cn

x23 = torch.randn(2, 3)
CASES = [
    # (id, args, kwargs, argument named in our message)
    ("prob-path-long-target", (torch.randn(3), torch.tensor([0, 1, 2])), {}, "target"),
    ("int32-target", (x23, torch.tensor([0, 1], dtype=torch.int32)), {}, "target"),
    ("float-target-index-shape", (x23, torch.tensor([0.0, 1.0])), {}, "target"),
    ("batch-mismatch", (x23, torch.tensor([0, 1, 2])), {}, "target"),
    ("1d-input-2-targets", (torch.randn(3), torch.tensor([0, 1])), {}, "target"),
    ("kdim-mismatch-3d", (torch.randn(2, 3, 5), torch.zeros(2, 4, dtype=torch.long)), {}, "target"),
    (
        "kdim-mismatch-4d",
        (torch.randn(2, 3, 5, 5), torch.zeros(2, 4, 5, dtype=torch.long)),
        {},
        "target",
    ),
    ("multi-target", (x23, torch.zeros(2, 1, dtype=torch.long)), {}, "target"),
    ("target-too-large", (x23, torch.tensor([0, 3])), {}, "target"),
    ("target-negative", (x23, torch.tensor([0, -1])), {}, "target"),
    ("zero-classes", (torch.randn(2, 0), torch.tensor([0, 0])), {}, "target"),
    ("weight-shape", (x23, torch.tensor([0, 1])), {"weight": torch.ones(2)}, "weight"),
    ("weight-2d", (x23, torch.tensor([0, 1])), {"weight": torch.ones(1, 3)}, "weight"),
    (
        "weight-dtype",
        (x23, torch.tensor([0, 1])),
        {"weight": torch.ones(3, dtype=torch.float64)},
        "weight",
    ),
    ("prob-weight-shape", (x23, torch.rand(2, 3)), {"weight": torch.ones(2)}, "weight"),
    ("prob-ignore-index", (x23, torch.rand(2, 3)), {"ignore_index": 0}, "ignore_index"),
    (
        "label-smoothing-high",
        (x23, torch.tensor([0, 1])),
        {"label_smoothing": 1.5},
        "label_smoothing",
    ),
    ("reduction", (x23, torch.tensor([0, 1])), {"reduction": "avg"}, "reduction"),
    ("reduction-batchmean", (x23, torch.tensor([0, 1])), {"reduction": "batchmean"}, "reduction"),
    ("ignore-index-float", (x23, torch.tensor([0, 1])), {"ignore_index": 1.0}, "ignore_index"),
    ("integer-logits", (torch.ones(2, 3, dtype=torch.long), torch.tensor([0, 1])), {}, "input"),
]


@pytest.mark.parametrize("args,kwargs,name", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_cross_entropy_raises_like_torch(args, kwargs, name):
    with pytest.raises(Exception) as theirs:
        F.cross_entropy(*args, **kwargs)
    with pytest.raises(Exception) as ours:
        crossent.cross_entropy(*args, **kwargs)
    # torch's NotImplementedError for integer logits is a RuntimeError subclass; ours is a TypeError+RuntimeError
    expected = RuntimeError if theirs.type is NotImplementedError else theirs.type
    assert isinstance(ours.value, expected), (ours.type, theirs.type)
    assert isinstance(ours.value, (ValueError, TypeError, IndexError)), ours.type
    assert name in str(ours.value)


def test_deliberate_differences():
    # label_smoothing < 0: torch silently treats it as 0; crossent raises, naming the argument
    with pytest.raises(ValueError, match="label_smoothing"):
        crossent.cross_entropy(x23, torch.tensor([0, 1]), label_smoothing=-0.1)
    for kw, name in [
        ({"z_loss": -1.0}, "z_loss"),
        ({"softcap": 0.0}, "softcap"),
        ({"softcap": float("nan")}, "softcap"),
    ]:
        with pytest.raises(ValueError, match=name):
            crossent.cross_entropy(x23, torch.tensor([0, 1]), **kw)
    with pytest.raises(ValueError, match="backend"):
        crossent.cross_entropy(x23, torch.tensor([0, 1]), backend="cuda")


def test_error_messages_keep_torchs_text():
    """Code that matches torch's messages (e.g. PyTorch's ModuleInfo error regexes) keeps matching."""
    pairs = [
        (
            (x23, torch.rand(2, 3)),
            {"ignore_index": 0},
            "ignore_index is not supported for floating point target",
        ),
        (
            (x23, torch.tensor([0, 1])),
            {"label_smoothing": 1.5},
            r"label_smoothing must be between 0\.0 and 1\.0",
        ),
        (
            (x23, torch.tensor([0, 1, 2])),
            {},
            r"Expected input batch_size .* to match target batch_size",
        ),
        (
            (x23, torch.tensor([0, 1])),
            {"weight": torch.ones(2)},
            "weight tensor should be defined either for all .* classes or no classes",
        ),
        (
            (torch.randn(3), torch.tensor([0, 1, 2])),
            {},
            "Expected floating point type for target with class probabilities",
        ),
        (
            (x23, torch.tensor([0, 1], dtype=torch.int32)),
            {},
            "expected target dtype to be Long or Byte",
        ),
        ((torch.randn(2, 3, 5), torch.zeros(2, 4, dtype=torch.long)), {}, "Expected target size"),
        ((x23, torch.tensor([0, 3])), {}, "Target 3 is out of bounds"),
    ]
    for args, kwargs, pattern in pairs:
        with pytest.raises(Exception, match=pattern):
            crossent.cross_entropy(*args, **kwargs)


def test_numpy_reference_raises_too():
    x = np.zeros((2, 3))
    with pytest.raises(IndexError, match="out of bounds"):
        cn.cross_entropy(x, np.array([0, 3]))
    with pytest.raises(ValueError, match="batch_size"):
        cn.cross_entropy(x, np.array([0, 1, 2]))
    with pytest.raises(TypeError, match="target"):
        cn.cross_entropy(x, np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match="reduction"):
        cn.cross_entropy(x, np.array([0, 1]), reduction="avg")
    with pytest.raises(ValueError, match="weight"):
        cn.cross_entropy(x, np.array([0, 1]), np.ones(2))


FAMILY_CASES = [
    ("nll-0d", "nll_loss", (torch.tensor(1.0), torch.tensor(0)), {}),
    ("nll-prob", "nll_loss", (x23, torch.rand(2, 3)), {}),
    ("bce-size", "binary_cross_entropy", (torch.rand(3), torch.rand(3, 1)), {}),
    ("bce-range", "binary_cross_entropy", (torch.tensor([1.5]), torch.tensor([1.0])), {}),
    ("bce-target-range", "binary_cross_entropy", (torch.tensor([0.5]), torch.tensor([2.0])), {}),
    ("bce-dtype", "binary_cross_entropy", (torch.rand(3), torch.rand(3, dtype=torch.float64)), {}),
    ("bcel-size", "binary_cross_entropy_with_logits", (torch.rand(2, 3), torch.rand(3)), {}),
    (
        "bcel-long-target",
        "binary_cross_entropy_with_logits",
        (torch.rand(3), torch.ones(3, dtype=torch.long)),
        {},
    ),
    (
        "bcel-pos-weight-float",
        "binary_cross_entropy_with_logits",
        (torch.rand(3), torch.rand(3)),
        {"pos_weight": 2.0},
    ),
    (
        "bcel-weight-enlarges",
        "binary_cross_entropy_with_logits",
        (torch.rand(2, 3), torch.rand(2, 3)),
        {"weight": torch.rand(4, 2, 3)},
    ),
    ("kl-reduction", "kl_div", (torch.rand(3), torch.rand(3)), {"reduction": "avg"}),
]


@pytest.mark.parametrize(
    "fn,args,kwargs", [c[1:] for c in FAMILY_CASES], ids=[c[0] for c in FAMILY_CASES]
)
def test_family_raises_like_torch(fn, args, kwargs):
    with pytest.raises(Exception) as theirs:
        getattr(F, fn)(*args, **kwargs)
    with pytest.raises(Exception) as ours:
        getattr(crossent, fn)(*args, **kwargs)
    assert isinstance(ours.value, theirs.type), (ours.type, theirs.type, str(ours.value))


def test_focal_argument_errors():
    with pytest.raises(ValueError, match="gamma"):
        crossent.focal_loss(x23, torch.tensor([0, 1]), gamma=-1.0)
    with pytest.raises(ValueError, match="alpha"):
        crossent.focal_loss(x23, torch.tensor([0, 1]), alpha=torch.ones(2))
    with pytest.raises(ValueError, match="alpha"):
        crossent.sigmoid_focal_loss(torch.rand(3), torch.rand(3), alpha=2.0)
    with pytest.raises(ValueError, match="reduction"):
        crossent.sigmoid_focal_loss(torch.rand(3), torch.rand(3), reduction="avg")


@pytest.mark.parametrize(
    "call",
    [
        lambda x, y: crossent.focal_loss(x, y, backend="native"),
        lambda x, y: crossent.sigmoid_focal_loss(x, torch.rand_like(x), backend="native"),
    ],
    ids=["focal_loss", "sigmoid_focal_loss"],
)
def test_backend_without_that_kernel_is_named(call):
    """A backend that exists but has no kernel for this function is an error naming the argument."""
    x, y = torch.randn(4, 5), torch.tensor([0, 1, 2, 3])
    with pytest.raises(ValueError, match="argument 'backend': there is no native kernel"):
        call(x, y)


# --- torch's message text in every error (crossent may append its own explanation) -----------------

_L = torch.ones(2, 3, dtype=torch.long)
_T = torch.rand(2, 3)
TEXT_CASES = [
    # (id, torch function name, args, kwargs)
    (
        "ce-4d-size-mismatch",
        "cross_entropy",
        (torch.randn(2, 3, 4, 5), torch.zeros(2, 4, 6).long()),
        {},
    ),
    ("ce-4d-target-2d", "cross_entropy", (torch.randn(2, 3, 4, 5), torch.zeros(2, 20).long()), {}),
    ("ce-4d-batch", "cross_entropy", (torch.randn(2, 3, 4, 5), torch.zeros(3, 4, 5).long()), {}),
    ("ce-no-classes-3d", "cross_entropy", (torch.randn(2, 0, 4), torch.zeros(2, 4).long()), {}),
    (
        "ce-no-classes-5d",
        "nll_loss",
        (torch.randn(2, 0, 4, 3, 1), torch.zeros(2, 4, 3, 1).long()),
        {},
    ),
    ("ce-prob-weight", "cross_entropy", (x23, _T), {"weight": torch.ones(2)}),
    ("ce-ignore-float", "cross_entropy", (x23, torch.tensor([0, 1])), {"ignore_index": 1.0}),
    ("ce-ignore-str", "cross_entropy", (x23, torch.tensor([0, 1])), {"ignore_index": "a"}),
    ("ce-input-list", "cross_entropy", ([1.0], torch.tensor([0, 1])), {}),
    ("ce-weight-list", "cross_entropy", (x23, torch.tensor([0, 1])), {"weight": [1.0, 2.0, 3.0]}),
    ("ce-integer-logits", "cross_entropy", (_L, torch.tensor([0, 1])), {}),
    ("ce-integer-logits-3d", "cross_entropy", (_L[..., None], torch.zeros(2, 1).long()), {}),
    ("ce-integer-both", "cross_entropy", (_L, _L), {}),
    ("nll-ignore-float", "nll_loss", (x23, torch.tensor([0, 1])), {"ignore_index": 1.0}),
    ("nll-weight-list", "nll_loss", (x23, torch.tensor([0, 1])), {"weight": [1.0, 2.0, 3.0]}),
    ("nll-integer", "nll_loss", (_L, torch.tensor([0, 1])), {}),
    ("nll-integer-3d", "nll_loss", (_L[..., None], torch.zeros(2, 1).long()), {}),
    ("nll-4d-size", "nll_loss", (torch.randn(2, 3, 4, 5), torch.zeros(2, 4, 6).long()), {}),
    ("nll-weight-shape", "nll_loss", (x23, torch.tensor([0, 1])), {"weight": torch.ones(2)}),
    ("nll-bounds", "nll_loss", (x23, torch.tensor([0, 3])), {}),
    ("bce-weight-broadcast", "binary_cross_entropy", (_T, _T), {"weight": torch.rand(4)}),
    ("bce-integer", "binary_cross_entropy", (_L, _L), {}),
    (
        "bcel-weight-broadcast",
        "binary_cross_entropy_with_logits",
        (_T, _T),
        {"weight": torch.rand(4)},
    ),
    (
        "bcel-pos-weight-broadcast",
        "binary_cross_entropy_with_logits",
        (_T, _T),
        {"pos_weight": torch.rand(2)},
    ),
    ("bcel-weight-list", "binary_cross_entropy_with_logits", (_T, _T), {"weight": [1.0]}),
    ("bcel-integer", "binary_cross_entropy_with_logits", (_L, _T), {}),
    ("kl-broadcast", "kl_div", (torch.rand(3), torch.rand(4)), {}),
    ("kl-broadcast-2d", "kl_div", (torch.rand(2, 3), torch.rand(4, 3)), {}),
    ("kl-integer-input", "kl_div", (_L, _T), {}),
    ("kl-integer-target", "kl_div", (_T, _L), {}),
    ("kl-target-list", "kl_div", (_T, [1.0]), {}),
]
TEXT_CASES += [(f"family-{c[0]}", *c[1:]) for c in FAMILY_CASES]
TEXT_CASES += [(f"ce-{c[0]}", "cross_entropy", *c[1:3]) for c in CASES]


def _compatible(ours: BaseException, theirs: BaseException) -> bool:
    # torch's NotImplementedError (a dtype without a kernel) is a RuntimeError subclass
    expected = RuntimeError if type(theirs) is NotImplementedError else type(theirs)
    return isinstance(ours, expected)


@pytest.mark.parametrize(
    "fn,args,kwargs", [c[1:] for c in TEXT_CASES], ids=[c[0] for c in TEXT_CASES]
)
def test_message_contains_torchs_text(fn, args, kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(Exception) as theirs:
            getattr(F, fn)(*args, **kwargs)
        with pytest.raises(Exception) as ours:
            getattr(crossent, fn)(*args, **kwargs)
    assert _compatible(ours.value, theirs.value), (ours.type, theirs.type)
    assert str(theirs.value).splitlines()[0] in str(ours.value)


MODULE_CASES = [
    ("CrossEntropyLoss", {"reduction": "avg"}, "index"),
    ("CrossEntropyLoss", {"label_smoothing": 2.0}, "index"),
    ("CrossEntropyLoss", {"weight": torch.ones(2)}, "index"),
    ("CrossEntropyLoss", {"weight": torch.ones(2)}, "prob"),
    ("CrossEntropyLoss", {"ignore_index": 1.5}, "index"),
    ("NLLLoss", {"reduction": "avg"}, "index"),
    ("NLLLoss", {"weight": torch.ones(2)}, "index"),
    ("BCELoss", {"reduction": "avg"}, "prob"),
    ("BCELoss", {"weight": torch.ones(4)}, "prob"),
    ("BCEWithLogitsLoss", {"reduction": "avg"}, "prob"),
    ("BCEWithLogitsLoss", {"pos_weight": torch.ones(2)}, "prob"),
    ("KLDivLoss", {"reduction": "avg"}, "prob"),
]


@pytest.mark.parametrize(
    "name,kwargs,target", MODULE_CASES, ids=[f"{c[0]}-{list(c[1])[0]}" for c in MODULE_CASES]
)
def test_module_errors_contain_torchs_text(name, kwargs, target):
    t = torch.tensor([0, 1]) if target == "index" else _T
    errors = []
    for nn in (torch.nn, crossent.nn):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with pytest.raises(Exception) as info:
                getattr(nn, name)(**kwargs)(_T, t)
        errors.append(info.value)
    theirs, ours = errors
    assert _compatible(ours, theirs), (type(ours), type(theirs))
    assert str(theirs).splitlines()[0] in str(ours)


# --- legacy spellings and warnings ---------------------------------------------------------------

_LEGACY = [
    ("cross_entropy", (x23, torch.tensor([0, 1]))),
    ("nll_loss", (x23, torch.tensor([0, 1]))),
    ("binary_cross_entropy", (_T, _T)),
    ("binary_cross_entropy_with_logits", (x23, _T)),
    ("kl_div", (x23, _T)),
]
_MODULES = {
    "cross_entropy": "CrossEntropyLoss",
    "nll_loss": "NLLLoss",
    "binary_cross_entropy": "BCELoss",
    "binary_cross_entropy_with_logits": "BCEWithLogitsLoss",
    "kl_div": "KLDivLoss",
}


def _run(f):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = f()
    return value, [(w.category, str(w.message)) for w in caught]


@pytest.mark.parametrize("fn,args", _LEGACY, ids=[c[0] for c in _LEGACY])
@pytest.mark.parametrize(
    "kwargs",
    [
        {"reduction": "elementwise_mean"},
        {"size_average": True},
        {"size_average": False},
        {"reduce": False},
        {"reduction": "mean"},
    ],
    ids=["elementwise_mean", "size_average", "size_average-false", "reduce-false", "mean"],
)
def test_legacy_spellings_like_torch(fn, args, kwargs):
    expected, their_warnings = _run(lambda: getattr(F, fn)(*args, **kwargs))
    got, our_warnings = _run(lambda: getattr(crossent, fn)(*args, **kwargs))
    torch.testing.assert_close(got, expected)
    assert our_warnings == their_warnings


@pytest.mark.parametrize("fn,args", _LEGACY, ids=[c[0] for c in _LEGACY])
def test_modules_take_elementwise_mean(fn, args):
    name = _MODULES[fn]
    theirs, ours = (
        getattr(torch.nn, name)(reduction="elementwise_mean"),
        getattr(crossent.nn, name)(reduction="elementwise_mean"),
    )
    assert ours.reduction == theirs.reduction
    expected, their_warnings = _run(lambda: theirs(*args))
    got, our_warnings = _run(lambda: ours(*args))
    torch.testing.assert_close(got, expected)
    assert our_warnings == their_warnings


def test_kl_div_broadcasts_silently_like_torch():
    x, t = torch.log_softmax(torch.randn(2, 3), 1), torch.softmax(torch.randn(3), 0)
    expected, their_warnings = _run(lambda: F.kl_div(x, t, reduction="sum"))
    got, our_warnings = _run(lambda: crossent.kl_div(x, t, reduction="sum"))
    torch.testing.assert_close(got, expected)
    assert our_warnings == their_warnings == []


def test_binary_cross_entropy_dtype_follows_input_not_weight():
    p, t, w = torch.rand(3), torch.rand(3), torch.rand(3, dtype=torch.float64)
    expected = F.binary_cross_entropy(p, t, w)
    got = crossent.binary_cross_entropy(p, t, w)
    assert got.dtype == expected.dtype == torch.float32
    torch.testing.assert_close(got, expected)
