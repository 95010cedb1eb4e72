"""Bad input raises what torch raises (same exception class, or a subclass of it) and names the argument.

Oracle: torch.nn.functional itself — each case first checks that torch raises, then that crossent raises an
instance of the same class, whose message names the argument.
"""

from __future__ import annotations

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
        lambda x, y: crossent.binary_cross_entropy_with_logits(x, torch.rand_like(x), backend="native"),
        lambda x, y: crossent.sigmoid_focal_loss(x, torch.rand_like(x), backend="native"),
    ],
    ids=["focal_loss", "bce_with_logits", "sigmoid_focal_loss"],
)
def test_backend_without_that_kernel_is_named(call):
    """A backend that exists but has no kernel for this function is an error naming the argument."""
    x, y = torch.randn(4, 5), torch.tensor([0, 1, 2, 3])
    with pytest.raises(ValueError, match="argument 'backend': there is no native kernel"):
        call(x, y)
