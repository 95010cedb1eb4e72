"""Vocab-parallel cross-entropy on real gloo process groups, started by the tests themselves.

Oracle: ``crossent.numpy.cross_entropy`` / ``cross_entropy_grad`` in float64 on the full (concatenated)
vocabulary; probability-target gradients against torch autograd in float64. Each test starts one group
and runs many option combinations in it. Ranks are forked (≈0.1 s per group; ``spawn`` re-imports torch,
≈2 s per rank on 2 cores, and can be chosen with ``CROSSENT_TEST_START_METHOD=spawn``); workers use one
thread, a free loopback port, and are killed if the group overruns its deadline (a hang fails the test).
"""

from __future__ import annotations

import datetime
import itertools
import os
import queue
import socket
import time
import traceback

import numpy as np
import pytest
import torch

import crossent.numpy as cn

pytestmark = pytest.mark.dist

TOL = dict(rtol=1e-9, atol=1e-9)  # float64 end to end; observed errors are ~1e-14


# --------------------------------------------------------------------------------------------------
# Spawning a group.
# --------------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(rank, world, port, worker_name, payload, timeout_s, results):
    """Runs in a spawned process: join the gloo group, run the worker (a module-level function, or the
    name of one in this module), report, leave."""
    torch.set_num_threads(1)
    import torch.distributed as dist

    try:
        dist.init_process_group(
            "gloo",
            init_method=f"tcp://127.0.0.1:{port}",
            rank=rank,
            world_size=world,
            timeout=datetime.timedelta(seconds=timeout_s),
        )
        worker = worker_name if callable(worker_name) else globals()[worker_name]
        out = worker(rank, world, payload)
        results.put((rank, "ok", out))
    except BaseException:  # report anything, the parent fails the test with it
        results.put((rank, "error", traceback.format_exc()))
    finally:
        if dist.is_initialized():
            try:
                dist.destroy_process_group()
            except Exception:
                pass


def run_group(world, worker_name, payload, *, timeout_s=20.0, deadline_s=60.0):
    """Spawn ``world`` gloo ranks running ``worker_name(rank, world, payload)``; return their results.

    Raises if a rank reports an error or the group does not finish within ``deadline_s`` (the spawned
    processes are killed in that case: a hang fails the test instead of blocking it).
    """
    ctx = torch.multiprocessing.get_context(os.environ.get("CROSSENT_TEST_START_METHOD", "fork"))
    results = ctx.Queue()
    port = _free_port()
    procs = [
        ctx.Process(target=_entry, args=(r, world, port, worker_name, payload, timeout_s, results))
        for r in range(world)
    ]
    for p in procs:
        p.start()
    got = {}
    end = time.monotonic() + deadline_s
    try:
        while len(got) < world:
            try:
                rank, status, out = results.get(timeout=max(0.1, end - time.monotonic()))
            except queue.Empty:
                raise AssertionError(
                    f"the group did not finish within {deadline_s} s (hang)"
                ) from None
            if status != "ok":
                raise AssertionError(f"rank {rank} failed:\n{out}")
            got[rank] = out
        for p in procs:
            p.join(timeout=max(0.1, end - time.monotonic()))
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join()
    return [got[r] for r in range(world)]


# --------------------------------------------------------------------------------------------------
# Workers (run inside the ranks).
# --------------------------------------------------------------------------------------------------


def _run_ce_case(case, lo, hi):
    import crossent.distributed as cd

    dtype = getattr(torch, case.get("dtype", "float64"))
    X = torch.tensor(case["X"]).to(dtype)
    x = X[..., lo:hi].clone().requires_grad_()
    prob = case["prob"]
    t = torch.tensor(case["target"])
    if prob:
        t = t[..., lo:hi].to(dtype).clone().requires_grad_()
    w = None if case["weight"] is None else torch.tensor(case["weight"][lo:hi]).to(dtype)
    kw = dict(case["options"])
    if kw.pop("vocab_start_given", False):
        kw["vocab_start"] = lo
    if "normalize_by" in kw:
        kw["normalize_by"] = torch.tensor(kw["normalize_by"])
    loss = cd.cross_entropy(x, t, weight=w, **kw)
    g = torch.tensor(case["grad_output"]) if case["grad_output"] is not None else None
    loss.backward(g)
    return {
        "loss": loss.detach().double().numpy(),
        "loss_dtype": str(loss.dtype),
        "grad": x.grad.double().numpy(),
        "grad_dtype": str(x.grad.dtype),
        "target_grad": t.grad.double().numpy() if prob else None,
    }


def _run_linear_case(case, lo, hi):
    import crossent.distributed as cd

    h = torch.tensor(case["H"]).requires_grad_()
    W = torch.tensor(case["W"][lo:hi]).requires_grad_()
    b = torch.tensor(case["b"][lo:hi]).requires_grad_()
    w = None if case["weight"] is None else torch.tensor(case["weight"][lo:hi])
    t = torch.tensor(case["target"])
    if case["prob"]:
        t = t[..., lo:hi].clone().requires_grad_()
    loss = cd.linear_cross_entropy(h, W, t, linear_bias=b, weight=w, **case["options"])
    loss.backward(None if case["grad_output"] is None else torch.tensor(case["grad_output"]))
    return {
        "loss": loss.detach().numpy(),
        "dH": h.grad.numpy(),
        "dW": W.grad.numpy(),
        "db": b.grad.numpy(),
        "target_grad": t.grad.numpy() if case["prob"] else None,
    }


def worker_cases(rank, world, payload):
    lo, hi = payload["bounds"][rank], payload["bounds"][rank + 1]
    out = []
    for case in payload["cases"]:
        run = _run_linear_case if case["kind"] == "linear" else _run_ce_case
        out.append(run(case, lo, hi))
    return out


def worker_disagree(rank, world, payload):
    """Each scenario: rank-dependent arguments; every rank must raise the same error, and the group
    must still work afterwards (nobody ran ahead into a collective)."""
    import crossent.distributed as cd

    rng = np.random.default_rng(0)
    X = torch.tensor(rng.normal(size=(4, 6)))
    x = X[:, 3 * rank : 3 * rank + 3]
    y = torch.tensor([0, 5, 2, 1])
    scenarios = {
        "label_smoothing": lambda: cd.cross_entropy(x, y, label_smoothing=0.1 * rank),
        "rows": lambda: cd.cross_entropy(x[: 4 - rank], y[: 4 - rank]),
        "dtype": lambda: cd.cross_entropy(x.float() if rank else x, y),
        "target": lambda: cd.cross_entropy(x, y + rank),
        "weight": lambda: cd.cross_entropy(
            x, y, weight=torch.ones(3, dtype=x.dtype) if rank else None
        ),
        "reduction": lambda: cd.cross_entropy(x, y, reduction="sum" if rank else "mean"),
        "vocab_start": lambda: cd.cross_entropy(x, y, vocab_start=0),
        "bounds": lambda: cd.cross_entropy(x, torch.tensor([0, 6, 2, 1])),
        "normalize_by": lambda: cd.cross_entropy(x, y, reduction="sum", normalize_by=3.0),
    }
    out = {}
    for name, call in scenarios.items():
        try:
            call()
            out[name] = ("no error", "")
        except Exception as e:  # noqa: BLE001 - the parent checks type and message
            out[name] = (
                type(e).__name__,
                str(e),
                isinstance(e, ValueError),
                isinstance(e, IndexError),
            )
    # the group is still usable: a consistent call works afterwards
    out["after"] = float(cd.cross_entropy(x, y))
    return out


def worker_failure(rank, world, payload):
    """Rank 1 fails (before the first collective, or between the two of the forward); rank 0 must get
    an error from the group's timeout while rank 1 is still alive, not hang."""
    import crossent.distributed as cd
    import crossent.distributed._vocab_parallel as vp

    x = torch.randn(4, 3, dtype=torch.float64)
    y = torch.tensor([0, 5, 2, 1])
    where = payload["where"]
    if rank == 1:
        if where == "between":

            def boom(*args, **kwargs):
                raise RuntimeError("simulated failure between the two collectives")

            vp.global_row_sums = boom
        try:
            if where == "before":
                raise RuntimeError("simulated failure before the first collective")
            cd.cross_entropy(x, y, validate=False)
            return ("no error", 0.0)
        except RuntimeError as e:
            time.sleep(payload["linger_s"])  # stay alive: rank 0 must not rely on our exit
            return (str(e), 0.0)
    start = time.monotonic()
    try:
        cd.cross_entropy(x, y, validate=where == "before")
        return ("no error", time.monotonic() - start)
    except Exception as e:  # noqa: BLE001
        return (f"{type(e).__name__}: {e}", time.monotonic() - start)


def worker_volume(rank, world, payload):
    """Count the elements each collective receives: forward, backward and the linear variant."""
    import torch.distributed as dist

    import crossent.distributed as cd
    import crossent.distributed._comm as comm
    import crossent.distributed._linear as lin

    log = []
    real = comm.all_reduce

    def counting(tensor, op, group):
        name = "MAX" if op == dist.ReduceOp.MAX else "SUM" if op == dist.ReduceOp.SUM else str(op)
        log.append((name, tensor.numel(), tensor.element_size()))
        return real(tensor, op, group)

    comm.all_reduce = counting
    lin.all_reduce = counting
    n, v, hdim = payload["rows"], 3 + rank, 5
    out = {}
    for name, kw in payload["configs"].items():
        kw = dict(kw)
        prob = kw.pop("prob")
        dtype = kw.pop("dtype")
        x = torch.randn(n, v, dtype=dtype, requires_grad=True)
        t = torch.rand(n, v, dtype=dtype) if prob else torch.arange(n) % 7  # same on every rank
        if kw.pop("weight"):
            kw["weight"] = torch.rand(v, dtype=dtype)
        log.clear()
        loss = cd.cross_entropy(x, t, **kw)
        forward = list(log)
        log.clear()
        loss.backward()
        out[name] = (forward, list(log))
    h = torch.randn(n, hdim, dtype=torch.float64, requires_grad=True)
    W = torch.randn(v, hdim, dtype=torch.float64, requires_grad=True)
    log.clear()
    loss = cd.linear_cross_entropy(h, W, torch.arange(n) % 7, validate=False)
    forward = list(log)
    log.clear()
    loss.backward()
    out["linear"] = (forward, list(log))
    return out


def worker_accumulation(rank, world, payload):
    """Data parallel × gradient accumulation with ``normalize_by``: every rank is a data-parallel rank
    (its own tensor-parallel group of one), two uneven micro-batches each, DDP-style averaging."""
    import torch.distributed as dist

    import crossent.distributed as cd

    tp_groups = [dist.new_group([r]) for r in range(world)]  # every rank creates every group
    H, W0, y, w = (torch.tensor(payload[k]) for k in ("H", "W", "y", "w"))
    micro = payload["micro"][rank]  # row ranges of this rank's micro-batches
    D = cd.global_denominator([y[a:b] for a, b in micro], weight=w, group=None)
    W = W0.clone().requires_grad_()
    total = torch.zeros((), dtype=torch.float64)
    for a, b in micro:
        loss = cd.linear_cross_entropy(
            H[a:b],
            W,
            y[a:b],
            group=tp_groups[rank],
            weight=w,
            label_smoothing=0.1,
            normalize_by=D / world,
        )
        loss.backward()
        total = total + loss.detach()
    dist.all_reduce(W.grad)  # what DDP does: average over the data-parallel ranks
    dist.all_reduce(total)
    return {"D": float(D), "grad": (W.grad / world).numpy(), "loss": float(total / world)}


# --------------------------------------------------------------------------------------------------
# Cases and oracles (parent process).
# --------------------------------------------------------------------------------------------------


def _data(v, n=9, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, v)) * 2.0
    y = rng.integers(0, v, size=n)
    y[0], X[0, 4 % v] = 4 % v, 30.0  # a confident row: softmax(x_y) → 1
    y[1] = -100  # ignored
    y[2] = v - 1  # owned by the last rank
    y[3] = 0  # owned by the first rank
    Q = rng.dirichlet(np.ones(v), size=n)
    Q[1] *= 1.5  # unnormalised probabilities are accepted
    w = rng.uniform(0.2, 2.0, size=v)
    G = rng.normal(size=n)
    return X, y, Q, w, G


def _ce_case(X, target, weight, options, prob, G=None):
    red = options.get("reduction", "mean")
    return dict(
        kind="ce",
        X=X,
        target=target,
        weight=weight,
        options=options,
        prob=prob,
        grad_output=G if red == "none" else None,
    )


def grid_cases(v, *, full=True, seed=0):
    X, y, Q, w, G = _data(v, seed=seed)
    cases = []
    reductions = ("none", "sum", "mean")
    grid = itertools.product(
        reductions, (False, True), (0.0, 0.1, 1.0), (0.0, 1e-2), (None, 3.0), (False, True)
    )
    for red, use_w, eps, lam, cap, prob in grid:
        if not full and (lam and cap is None or eps == 1.0 and red != "mean"):
            continue
        opts = dict(reduction=red, label_smoothing=eps, z_loss=lam, softcap=cap)
        cases.append(_ce_case(X, Q if prob else y, w if use_w else None, opts, prob, G))
    # normalize_by replaces the mean's denominator (index and probability targets)
    cases.append(_ce_case(X, y, w, dict(normalize_by=7.5, label_smoothing=0.1), False))
    cases.append(_ce_case(X, Q, None, dict(normalize_by=2.0, z_loss=1e-3), True))
    # ignore_index equal to a real class; uint8 targets; no validation with and without vocab_start
    cases.append(_ce_case(X, y.clip(0), w, dict(ignore_index=3, label_smoothing=0.2), False))
    cases.append(_ce_case(X, y.clip(0).astype(np.uint8), None, dict(reduction="sum"), False))
    cases.append(_ce_case(X, y, w, dict(validate=False, label_smoothing=0.3, z_loss=1e-2), False))
    cases.append(
        _ce_case(X, y, w, dict(validate=False, vocab_start_given=True, softcap=2.0), False)
    )
    cases.append(_ce_case(X, y, None, dict(vocab_start_given=True, label_smoothing=0.1), False))
    # leading dimensions (3, 3, V) with a per-element upstream gradient
    cases.append(
        _ce_case(
            X.reshape(3, 3, v),
            y.reshape(3, 3),
            w,
            dict(reduction="none", label_smoothing=0.1),
            False,
            G.reshape(3, 3),
        )
    )
    cases.append(
        _ce_case(X.reshape(3, 3, v), Q.reshape(3, 3, v), w, dict(label_smoothing=0.1), True)
    )
    # half precision: float32 math and loss, the gradient in the input's dtype (oracle: float64 on the
    # rounded inputs; tolerances of the output dtype)
    for dtype, prob in (("bfloat16", False), ("bfloat16", True), ("float32", False)):
        rounded = lambda a: torch.tensor(a).to(getattr(torch, dtype)).double().numpy()  # noqa: E731
        opts = dict(label_smoothing=0.1, z_loss=1e-3, softcap=20.0)
        case = _ce_case(rounded(X), rounded(Q) if prob else y, rounded(w), opts, prob)
        cases.append(dict(case, dtype=dtype))
    # -inf at a non-target class is fine without smoothing
    Xi = X.copy()
    Xi[4, (y[4] + 1) % v] = -np.inf
    cases.append(_ce_case(Xi, y, w, dict(z_loss=1e-2), False))
    # +inf anywhere in a row, or a row of -inf: that row's loss and gradient are NaN on every rank
    Xn = X.copy()
    Xn[5, 7], Xn[6] = np.inf, -np.inf
    cases.append(_ce_case(Xn, y, w, dict(reduction="none", label_smoothing=0.1), False, G))
    # probabilities: q = 0 at a −inf logit is 0·(−inf) = NaN without smoothing, +inf with it (torch)
    Qz = Q.copy()
    Xz = X.copy()
    Xz[4, 8], Qz[4, 8] = -np.inf, 0.0
    for eps in (0.0, 0.1):
        cases.append(_ce_case(Xz, Qz, w, dict(reduction="none", label_smoothing=eps), True, G))
    return cases


def linear_cases(v, seed=1):
    rng = np.random.default_rng(seed)
    n, hdim = 6, 4
    H, Wl, b = rng.normal(size=(n, hdim)), rng.normal(size=(v, hdim)), rng.normal(size=v)
    y = rng.integers(0, v, size=n)
    y[1] = -100
    Q = rng.dirichlet(np.ones(v), size=n)
    w = rng.uniform(0.2, 2.0, size=v)
    G = rng.normal(size=n)
    out = []
    for opts, weight, prob in [
        (dict(), None, False),
        (dict(label_smoothing=0.1, z_loss=1e-2, softcap=3.0), w, False),
        (dict(reduction="sum", label_smoothing=0.2), w, False),
        # chunked over rows (6 rows in chunks of 4 and 1), every option
        (dict(chunk_size=4), None, False),
        (dict(chunk_size=4, label_smoothing=0.1, z_loss=1e-2, softcap=3.0), w, False),
        (dict(chunk_size=1, reduction="none", label_smoothing=0.3, validate=False), w, False),
        (dict(chunk_size=4, normalize_by=4.0, z_loss=1e-2), w, False),
        (dict(chunk_size=4, label_smoothing=0.1, z_loss=1e-2, softcap=3.0), w, True),
        (dict(chunk_size=5, reduction="none"), None, True),
    ]:
        red = opts.get("reduction", "mean")
        out.append(
            dict(
                kind="linear",
                H=H,
                W=Wl,
                b=b,
                target=Q if prob else y,
                weight=weight,
                options=opts,
                prob=prob,
                grad_output=G if red == "none" else None,
            )
        )
    return out


def _ref_options(options):
    skip = ("validate", "vocab_start_given", "chunk_size")
    opts = {k: v for k, v in options.items() if k not in skip}
    normalize_by = opts.pop("normalize_by", None)
    if normalize_by is not None:
        opts["reduction"] = "sum"
    return opts, normalize_by


def _reference(case):
    """float64 oracle: (loss, grad wrt logits) on the full vocabulary (class dimension last here, so
    the rows are flattened for the reference and reshaped back)."""
    opts, normalize_by = _ref_options(case["options"])
    X, t, w = case["X"], case["target"], case["weight"]
    v = X.shape[-1]
    X2 = X.reshape(-1, v)
    t2 = t.reshape(-1, v) if case["prob"] else t.reshape(-1)
    g = 1.0 if case["grad_output"] is None else case["grad_output"].reshape(-1)
    if normalize_by is not None:
        g = 1.0 / normalize_by
    loss = np.asarray(cn.cross_entropy(X2, t2, w, **opts))
    grad = cn.cross_entropy_grad(X2, t2, w, grad_output=g, **opts).reshape(X.shape)
    if normalize_by is not None:
        loss = loss / normalize_by
    if loss.ndim:
        loss = loss.reshape(X.shape[:-1])
    return loss, grad


def _reference_target_grad(case):
    """∂loss/∂q by torch autograd in float64 (F.cross_entropy on soft-capped logits, plus the z-loss)."""
    opts, normalize_by = _ref_options(case["options"])
    red = opts.get("reduction", "mean")
    eps, lam, cap = opts.get("label_smoothing", 0.0), opts.get("z_loss", 0.0), opts.get("softcap")
    v = case["X"].shape[-1]
    x = torch.tensor(case["X"]).reshape(-1, v)
    q = torch.tensor(case["target"]).reshape(-1, v).requires_grad_()
    w = None if case["weight"] is None else torch.tensor(case["weight"])
    z = cap * torch.tanh(x / cap) if cap else x
    rows = torch.nn.functional.cross_entropy(z, q, w, reduction="none", label_smoothing=eps)
    omega = (q if w is None else q * w).sum(-1)
    rows = rows + lam * omega * torch.logsumexp(z, -1) ** 2
    if normalize_by is not None:
        total = rows.sum() / normalize_by
    elif red == "none":
        total = (rows * torch.tensor(case["grad_output"]).reshape(-1)).sum()
    elif red == "sum":
        total = rows.sum()
    else:
        total = rows.sum() / x.shape[0]
    total.backward()
    return q.grad.reshape(case["target"].shape).numpy()


def check_ce_results(cases, results, bounds):
    assert len(results) == len(bounds) - 1
    for i, case in enumerate(cases):
        per_rank = [res[i] for res in results]
        loss, grad = _reference(case)
        dtype = case.get("dtype", "float64")
        label = f"case {i}: prob={case['prob']} weight={case['weight'] is not None} {case['options']} {dtype}"
        tol, loss_tol = TOL, TOL
        if dtype != "float64":
            # float32 math: the loss to float32 rounding; the gradient to the rounding of its dtype
            loss_tol = dict(rtol=1e-5, atol=1e-5)
            tol = dict(rtol=1e-2, atol=1e-3) if dtype == "bfloat16" else dict(rtol=1e-5, atol=1e-6)
        for r, out in enumerate(per_rank):
            # every rank returns the same loss, bit for bit
            np.testing.assert_array_equal(out["loss"], per_rank[0]["loss"], err_msg=label)
            assert out["loss_dtype"] == (
                "torch.float64" if dtype == "float64" else "torch.float32"
            ), label
            assert out["grad_dtype"] == f"torch.{dtype}", label
            got = torch.tensor(out["grad"])
            want = torch.tensor(grad[..., bounds[r] : bounds[r + 1]])
            torch.testing.assert_close(
                got, want, **tol, equal_nan=True, msg=lambda m: f"{label} rank {r} grad: {m}"
            )
        torch.testing.assert_close(
            torch.tensor(per_rank[0]["loss"]),
            torch.tensor(loss),
            **loss_tol,
            msg=lambda m: f"{label} loss: {m}",
            equal_nan=True,
        )
        if case["prob"]:
            tgrad = _reference_target_grad(case)
            got = np.concatenate([out["target_grad"] for out in per_rank], axis=-1)
            torch.testing.assert_close(
                torch.tensor(got),
                torch.tensor(tgrad),
                **tol,
                equal_nan=True,
                msg=lambda m: f"{label} target grad: {m}",
            )


def check_linear_results(cases, results, bounds):
    for i, case in enumerate(cases):
        logits = case["H"] @ case["W"].T + case["b"]
        as_ce = dict(case, X=logits)
        loss, G = _reference(as_ce)
        label = f"linear case {i}: prob={case['prob']} {case['options']}"
        for r, out in enumerate(results):
            out = out[i]
            lo, hi = bounds[r], bounds[r + 1]
            close = lambda got, want, what: torch.testing.assert_close(  # noqa: E731
                torch.tensor(got),
                torch.tensor(np.asarray(want)),
                **TOL,
                msg=lambda m: f"{label} {what}: {m}",
            )
            close(out["loss"], loss, "loss")
            close(out["dH"], G @ case["W"], f"rank {r} dH")
            close(out["dW"], G.T[lo:hi] @ case["H"], f"rank {r} dW")
            close(out["db"], G.sum(0)[lo:hi], f"rank {r} db")
        if case["prob"]:
            got = np.concatenate([out[i]["target_grad"] for out in results], axis=-1)
            close(got, _reference_target_grad(as_ce), "target grad")


# --------------------------------------------------------------------------------------------------
# Tests.
# --------------------------------------------------------------------------------------------------


def test_two_ranks_uneven_shards_match_single_process_on_the_option_grid():
    bounds = [0, 5, 11]  # V = 11 split 5/6
    cases = grid_cases(11)
    lcases = linear_cases(11)
    all_ignored = _ce_case(*_data(11)[:1], np.full(9, -100), None, dict(label_smoothing=0.1), False)
    results = run_group(
        2, "worker_cases", dict(bounds=bounds, cases=cases + lcases + [all_ignored])
    )
    check_ce_results(cases, [r[: len(cases)] for r in results], bounds)
    check_linear_results(lcases, [r[len(cases) : -1] for r in results], bounds)
    # everything ignored: the mean is 0/0 = NaN, the gradient exactly 0 (PyTorch's semantics)
    for r in results:
        assert np.isnan(r[-1]["loss"])
        np.testing.assert_array_equal(r[-1]["grad"], np.zeros_like(r[-1]["grad"]))


def test_four_ranks_uneven_shards_match_single_process():
    bounds = [0, 1, 4, 7, 11]  # 1/3/3/4
    cases = grid_cases(11, full=False, seed=3)[::3]
    lcases = [linear_cases(11)[i] for i in (1, 4, 7)]
    results = run_group(
        4, "worker_cases", dict(bounds=bounds, cases=cases + lcases), deadline_s=80.0
    )
    check_ce_results(cases, [r[: len(cases)] for r in results], bounds)
    check_linear_results(lcases, [r[len(cases) :] for r in results], bounds)


def test_ranks_that_disagree_all_raise_a_valueerror_naming_the_argument():
    results = run_group(2, "worker_disagree", None)
    expected = {
        "label_smoothing": "'label_smoothing'",
        "rows": "'local_logits'",
        "dtype": "'local_logits' (dtype, coded",
        "target": "'target'",
        "weight": "'weight'",
        "reduction": "'reduction'",
        "vocab_start": "'vocab_start'",
        "normalize_by": "'normalize_by'",
    }
    for rank, out in enumerate(results):
        for name, needle in expected.items():
            kind, message, is_value_error, _ = out[name]
            assert is_value_error, (rank, name, kind, message)
            assert needle in message, (rank, name, message)
        kind, message, _, is_index_error = out["bounds"]
        assert is_index_error and "Target 6 is out of bounds" in message, (rank, message)
        assert np.isfinite(out["after"])
    assert results[0]["after"] == results[1]["after"]


@pytest.mark.parametrize("where", ["before", "between"])
def test_a_rank_failing_mid_way_surfaces_as_an_error_not_a_hang(where):
    timeout_s, linger_s = 1.0, 4.0
    results = run_group(
        2,
        "worker_failure",
        dict(where=where, linger_s=linger_s),
        timeout_s=timeout_s,
        deadline_s=40.0,
    )
    assert "simulated failure" in results[1][0]
    message, elapsed = results[0]
    assert message != "no error"
    # the error came from the group's timeout, while rank 1 was still alive
    assert elapsed < linger_s - 1.0, (message, elapsed)


def test_communication_volume_is_as_documented():
    from crossent.distributed import communication_volume

    rows = 13
    configs = {
        "index": dict(prob=False, dtype=torch.float32, weight=False),
        "index_weight_smooth_f64": dict(
            prob=False, dtype=torch.float64, weight=True, label_smoothing=0.1
        ),
        "prob_smooth": dict(prob=True, dtype=torch.float32, weight=False, label_smoothing=0.1),
        "prob_weight_novalidate": dict(prob=True, dtype=torch.float64, weight=True, validate=False),
        "bf16_zloss": dict(prob=False, dtype=torch.bfloat16, weight=True, z_loss=1e-3),
    }
    results = run_group(2, "worker_volume", dict(rows=rows, configs=configs))
    for name, cfg in configs.items():
        validate = cfg.get("validate", True)
        want = communication_volume(
            rows,
            2,
            prob_target=cfg["prob"],
            weight=cfg["weight"],
            label_smoothing=bool(cfg.get("label_smoothing")),
            validate=validate,
            dtype=cfg["dtype"],
        )
        for out in results:
            forward, backward = out[name]
            assert backward == [], (name, backward)  # no collective in the backward
            ops = [(op, k) for op, k, _ in forward]
            expect = [("MAX", want["max_elements"]), ("SUM", want["sum_elements"])]
            if validate:
                expect.insert(0, ("MAX", want["validate_elements"]))
            assert ops == expect, (name, ops, expect)
            measured = sum(k * b for _, k, b in forward)
            assert measured == want["bytes"], (name, measured, want)
    for out in results:
        forward, backward = out["linear"]
        assert len(forward) == 2
        # one all-reduce in the backward: dX, N·H float64
        assert [(k, b) for _, k, b in backward] == [(rows * 5, 8)]


def test_normalize_by_makes_accumulated_data_parallel_gradients_exact():
    rng = np.random.default_rng(5)
    n, hdim, v = 12, 3, 7
    H, W, w = rng.normal(size=(n, hdim)), rng.normal(size=(v, hdim)), rng.uniform(0.5, 2.0, size=v)
    y = rng.integers(0, v, size=n)
    y[[1, 2, 3, 9]] = -100  # ignored tokens spread unevenly over the micro-batches
    micro = [[(0, 2), (2, 7)], [(7, 8), (8, 12)]]  # rank 0: 2 + 5 rows, rank 1: 1 + 4 rows
    results = run_group(2, "worker_accumulation", dict(H=H, W=W, y=y, w=w, micro=micro))
    logits = H @ W.T
    opts = dict(label_smoothing=0.1)
    loss = cn.cross_entropy(logits, y, w, **opts)  # the mean over the whole step
    grad = cn.cross_entropy_grad(logits, y, w, **opts).T @ H
    valid = y != -100
    for out in results:
        assert out["D"] == pytest.approx(w[y[valid]].sum(), rel=1e-12)
        assert out["loss"] == pytest.approx(float(loss), rel=1e-10)
        torch.testing.assert_close(torch.tensor(out["grad"]), torch.tensor(grad), **TOL)
