"""crossent.jax against the NumPy reference in float64: values and gradients over the option grid.

Oracles: :mod:`crossent.numpy` (values and its analytic ``*_grad`` functions) on NumPy float64 arrays; for
gradients with respect to probability targets, class weights, ``alpha`` and ``pos_weight`` (which the
reference has no analytic function for), JAX's automatic differentiation of the reference functions
themselves run on JAX arrays (the reference is written against the array API), an independent path from
crossent.jax's analytic rule. float64 through ``jax.enable_x64`` inside a fixture (nothing leaks).
"""

from __future__ import annotations

import itertools
import subprocess
import sys

import numpy as np
import pytest

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")

import crossent.jax as cj  # noqa: E402
import crossent.numpy as cn  # noqa: E402
from grid import Case, cases, make_inputs  # noqa: E402
from oracle import close64  # noqa: E402


def _vjp(fn, args, argnums, seed=1):
    """(value, gradients of Σ u·value for a random u) of ``fn`` at ``args`` with respect to ``argnums``."""
    out, pullback = jax.vjp(lambda *a: fn(*[*a, *args[len(a) :]]), *args[: max(argnums) + 1])
    u = np.random.default_rng(seed).normal(size=np.shape(out))
    grads = pullback(jnp.asarray(u, out.dtype))
    return out, u, [grads[i] for i in argnums]


def _pairwise(grid: list[Case]) -> list[Case]:
    """The grid's cases, in order, that bring a pair of option values not seen together before: every
    pair of (shape, target kind, weighting, smoothing, reduction, ignore_index) values that the full grid
    holds occurs (the full product is the torch backends' job; here each case is traced anew)."""
    fields = ("shape", "prob_target", "weighted", "label_smoothing", "reduction", "ignore_index")
    seen: set = set()
    out = []
    for case in grid:
        values = [(f, getattr(case, f)) for f in fields]
        pairs = set(itertools.combinations(values, 2))
        if pairs - seen:
            out.append(case)
            seen |= pairs
    return out


GRID = _pairwise(cases())


@pytest.mark.parametrize("case", GRID, ids=[c.id for c in GRID])
def test_cross_entropy_matches_reference(x64, case: Case):
    x, t, w = make_inputs(case)
    kwargs = dict(
        ignore_index=case.ignore_index,
        reduction=case.reduction,
        label_smoothing=case.label_smoothing,
    )
    args = (jnp.asarray(x), jnp.asarray(t), None if w is None else jnp.asarray(w))
    out, u, (gx,) = _vjp(lambda a, b, c: cj.cross_entropy(a, b, c, **kwargs), args, (0,))
    close64(out, cn.cross_entropy(x, t, w, **kwargs))
    close64(gx, cn.cross_entropy_grad(x, t, w, **kwargs, grad_output=u))


@pytest.mark.parametrize("z_loss, softcap", [(1e-2, None), (0.0, 2.0), (1e-2, 3.0)])
@pytest.mark.parametrize("prob", [False, True])
def test_z_loss_and_softcap(x64, z_loss, softcap, prob):
    case = Case((6, 9), prob, True, 0.1, "mean", -100)
    x, t, w = make_inputs(case, seed=3)
    kw = dict(label_smoothing=0.1, z_loss=z_loss, softcap=softcap)
    args = (jnp.asarray(x), jnp.asarray(t), jnp.asarray(w))
    out, u, (gx,) = _vjp(lambda a, b, c: cj.cross_entropy(a, b, c, **kw), args, (0,))
    close64(out, cn.cross_entropy(x, t, w, **kw))
    close64(gx, cn.cross_entropy_grad(x, t, w, **kw, grad_output=u))


def test_gradients_of_targets_and_weights_match_autodiff_of_the_reference(x64):
    rng = np.random.default_rng(4)
    x, w = jnp.asarray(rng.normal(size=(5, 7))), jnp.asarray(rng.random(7) + 0.5)
    q = jnp.asarray(rng.dirichlet(np.ones(7), size=5))
    y = jnp.asarray(rng.integers(0, 7, 5))
    kw = dict(label_smoothing=0.2, z_loss=1e-2, softcap=4.0)
    for target in (q, y):
        argnums = (0, 1, 2) if target is q else (0, 2)
        ours = jax.grad(lambda a, b, c: cj.cross_entropy(a, b, c, **kw), argnums)(x, target, w)
        theirs = jax.grad(lambda a, b, c: cn.cross_entropy(a, b, c, **kw), argnums)(x, target, w)
        for g, h in zip(ours, theirs):
            close64(g, h)


def test_normalize_by_replaces_the_denominator(x64):
    x, t, _ = make_inputs(Case((7, 5), False, False, 0.0, "sum", -100))
    out = cj.cross_entropy(jnp.asarray(x), jnp.asarray(t), normalize_by=jnp.asarray(3.0))
    close64(out, cn.cross_entropy(x, t, reduction="sum") / 3.0)


@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
@pytest.mark.parametrize("weighted", [False, True])
def test_nll_loss_matches_reference(x64, reduction, weighted):
    x, t, w = make_inputs(Case((4, 5, 3), False, weighted, 0.0, reduction, 2), seed=5)
    logp = x - np.log(np.exp(x).sum(axis=1, keepdims=True))
    kw = dict(ignore_index=2, reduction=reduction)
    args = (jnp.asarray(logp), jnp.asarray(t), None if w is None else jnp.asarray(w))
    out, u, (gx,) = _vjp(lambda a, b, c: cj.nll_loss(a, b, c, **kw), args, (0,))
    close64(out, cn.nll_loss(logp, t, w, **kw))
    close64(gx, cn.nll_loss_grad(logp, t, w, **kw, grad_output=u))


@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
@pytest.mark.parametrize("alpha", [None, 0.25, "array"])
@pytest.mark.parametrize("prob", [False, True])
def test_focal_loss_matches_reference(x64, gamma, alpha, prob):
    x, t, w = make_inputs(Case((6, 5), prob, True, 0.0, "mean", -100), seed=6)
    a = np.linspace(0.2, 1.0, 5) if alpha == "array" else alpha
    args = (jnp.asarray(x), jnp.asarray(t), jnp.asarray(w))
    a_j = jnp.asarray(a) if alpha == "array" else a
    out, u, (gx,) = _vjp(lambda p, q, r: cj.focal_loss(p, q, a_j, gamma, r), args, (0,))
    close64(out, cn.focal_loss(x, t, a, gamma, w))
    close64(gx, cn.focal_loss_grad(x, t, a, gamma, w, grad_output=u))
    if alpha == "array":  # d/dalpha against autodiff of the reference
        ours = jax.grad(lambda al: cj.focal_loss(args[0], args[1], al, gamma, args[2]))(a_j)
        theirs = jax.grad(lambda al: cn.focal_loss(args[0], args[1], al, gamma, args[2]))(a_j)
        close64(ours, theirs)


@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
@pytest.mark.parametrize("weighted", [False, True])
def test_bce_with_logits_matches_reference(x64, reduction, weighted):
    rng = np.random.default_rng(7)
    x, t = rng.normal(size=(4, 6)) * 3, rng.random((4, 6))
    w = rng.random((1, 6)) + 0.5 if weighted else None
    pw = rng.random(6) + 0.5 if weighted else None
    args = tuple(None if a is None else jnp.asarray(a) for a in (x, t, w, pw))
    fn = lambda a, b, c, d: cj.binary_cross_entropy_with_logits(a, b, c, reduction, d)  # noqa: E731
    out, u, grads = _vjp(fn, args, (0, 1))
    close64(out, cn.binary_cross_entropy_with_logits(x, t, w, reduction, pw))
    close64(
        grads[0], cn.binary_cross_entropy_with_logits_grad(x, t, w, reduction, pw, grad_output=u)
    )
    ref = lambda a, b: cn.binary_cross_entropy_with_logits(a, b, args[2], reduction, args[3])  # noqa: E731
    _, pullback = jax.vjp(ref, *args[:2])
    close64(grads[1], pullback(jnp.asarray(u))[1])  # d/dtarget: autodiff of the reference


@pytest.mark.parametrize("alpha, gamma", [(0.25, 2.0), (-1.0, 0.0), (0.5, 0.5)])
@pytest.mark.parametrize("reduction", ["none", "mean"])
def test_sigmoid_focal_loss_matches_reference(x64, alpha, gamma, reduction):
    rng = np.random.default_rng(8)
    x, t = rng.normal(size=(5, 4)) * 4, (rng.random((5, 4)) > 0.5).astype(np.float64)
    args = (jnp.asarray(x), jnp.asarray(t))
    fn = lambda a, b: cj.sigmoid_focal_loss(a, b, alpha, gamma, reduction)  # noqa: E731
    out, u, (gx,) = _vjp(fn, args, (0,))
    close64(out, cn.sigmoid_focal_loss(x, t, alpha, gamma, reduction))
    close64(gx, cn.sigmoid_focal_loss_grad(x, t, alpha, gamma, reduction, grad_output=u))


@pytest.mark.parametrize("reduction", ["none", "sum", "mean", "batchmean"])
@pytest.mark.parametrize("log_target", [False, True])
def test_kl_div_matches_reference(x64, reduction, log_target):
    rng = np.random.default_rng(9)
    logq = np.log(rng.dirichlet(np.ones(5), size=3))
    p = rng.dirichlet(np.ones(5), size=3)
    if not log_target:
        p[0, 1] = 0.0  # 0·log 0 = 0
    target = np.log(p) if log_target else p
    args = (jnp.asarray(logq), jnp.asarray(target))
    out, u, grads = _vjp(lambda a, b: cj.kl_div(a, b, reduction, log_target), args, (0,))
    close64(out, cn.kl_div(logq, target, reduction, log_target))
    close64(grads[0], cn.kl_div_grad(logq, target, reduction, log_target, grad_output=u))


def test_float32_within_float32_tolerance():
    x, t, w = make_inputs(Case((8, 33), False, True, 0.1, "mean", 1))
    out, u, (gx,) = _vjp(
        lambda a, b, c: cj.cross_entropy(a, b, c, ignore_index=1, label_smoothing=0.1),
        (jnp.asarray(x, jnp.float32), jnp.asarray(t), jnp.asarray(w, jnp.float32)),
        (0,),
    )
    assert out.dtype == jnp.float32
    kw = dict(ignore_index=1, label_smoothing=0.1)
    close64(out, cn.cross_entropy(x, t, w, **kw), rtol=3e-6, atol=1e-6)
    close64(gx, cn.cross_entropy_grad(x, t, w, **kw, grad_output=u), rtol=3e-5, atol=3e-6)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision_computes_in_float32(dtype):
    x, t, _ = make_inputs(Case((6, 7), False, False, 0.0, "mean", -100))
    xh = jnp.asarray(x, dtype)
    out = cj.cross_entropy(xh, jnp.asarray(t))
    grad = jax.grad(cj.cross_entropy)(xh, jnp.asarray(t))
    assert out.dtype == jnp.float32 and grad.dtype == xh.dtype
    x32 = np.asarray(xh.astype(jnp.float32), np.float64)  # the rounded inputs, exactly
    close64(out, cn.cross_entropy(x32, t), rtol=1e-6, atol=1e-7)
    close64(grad.astype(jnp.float32), cn.cross_entropy_grad(x32, t), rtol=1e-2, atol=1e-3)


def test_import_does_not_import_torch():
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'torch' or name.startswith('torch.'):\n"
        "            raise ImportError('torch is blocked')\n"
        "sys.meta_path.insert(0, Block())\n"
        "import jax.numpy as jnp, crossent.jax as cj\n"
        "x, w = jnp.ones((4, 3)), jnp.ones((5, 3))\n"
        "print(float(cj.linear_cross_entropy(x, w, jnp.array([0, 1, 2, 3]))), 'torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    value, has_torch = out.stdout.split()
    assert has_torch == "False"
    np.testing.assert_allclose(float(value), np.log(5.0), rtol=1e-6)


def test_everything_ignored_mean_is_nan_with_zero_gradient(x64):
    x, y = np.random.default_rng(2).normal(size=(3, 4)), np.full(3, -100)
    value, grad = jax.value_and_grad(cj.cross_entropy)(jnp.asarray(x), jnp.asarray(y))
    assert np.isnan(float(value)) and np.isnan(cn.cross_entropy(x, y))
    close64(grad, cn.cross_entropy_grad(x, y))  # zeros, not NaN


def test_docs_page_examples_run():
    """The ``>>>`` examples of docs/jax.md, one namespace for the page."""
    import doctest
    import pathlib
    import re

    page = pathlib.Path(__file__).resolve().parents[1] / "docs" / "jax.md"
    blocks = re.findall(r"^```python\n(.*?)^```", page.read_text(), re.MULTILINE | re.DOTALL)
    source = "\n".join(b for b in blocks if ">>>" in b)
    test = doctest.DocTestParser().get_doctest(source, {}, "jax.md", str(page), 0)
    assert len(test.examples) > 10
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    runner.run(test, out=lambda text: pytest.fail(text, pytrace=False))


@pytest.mark.parametrize("module", ["categorical", "binary", "linear"])
def test_docstring_examples_run(module):
    import doctest
    import importlib

    mod = importlib.import_module(f"crossent.jax.{module}")
    result = doctest.testmod(mod, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
