"""``crossent demo``: softmax regression on scikit-learn's digits, then what each member of the family does.

1. **The tutorial.** A softmax classifier (``torch.nn.Linear`` + SGD) trained on the 8×8 digits that ship
   with scikit-learn, with ``crossent.cross_entropy``; the loss falls under a progress bar and the test
   accuracy is printed.
2. **The gradient.** On a batch of the trained model's float64 logits, the analytic gradient
   (P − Y)/N (``crossent.numpy.cross_entropy_grad`` and the formula written out) is compared with torch's
   autograd through ``torch.nn.functional.cross_entropy`` and with ``crossent.cross_entropy``'s backward.
3. **The showcase.** The same model trained with plain CE, label smoothing, focal loss and class-weighted
   CE, on digits and on an imbalanced variant (some classes subsampled in the training and validation
   data; the test split is left balanced so every class's recall is measured on the same footing). A table
   (accuracy, NLL, ECE before/after temperature scaling fitted on the validation split, recall on the rare
   classes) is printed and written with the plots to ``--out``.

Everything is seeded; the default budget runs in well under a minute on two CPU cores, ``--quick`` in seconds.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

METHODS = ("CE", "label smoothing", "focal", "class-weighted CE")


def _int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated class indices, got {text!r}"
        ) from exc
    if not values or any(not 0 <= v <= 9 for v in values):
        raise argparse.ArgumentTypeError(f"expected digits classes in 0..9, got {text!r}")
    return values


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.ArgumentDefaultsHelpFormatter
    parser.description = (
        "Train a softmax classifier (Linear + SGD) on scikit-learn's bundled digits with "
        "crossent.cross_entropy, check the analytic gradient P - Y against autograd, then compare plain CE, "
        "label smoothing, focal loss and class-weighted CE on digits and on an imbalanced variant: "
        "accuracy, NLL, calibration (ECE) before/after temperature scaling and recall on the rare classes. "
        "Prints a table and writes PNG plots. No network needed."
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("crossent-demo"),
        help="folder for the plots (PNG) and table.txt (created if missing)",
    )
    parser.add_argument(
        "--epochs",
        type=int,
        default=40,
        help="training epochs of every model (the tutorial model and each showcase model)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smallest budget for CI: 3 epochs, regardless of --epochs (results are rough)",
    )
    parser.add_argument("--lr", type=float, default=0.1, help="SGD learning rate")
    parser.add_argument(
        "--momentum", type=float, default=0.9, help="SGD momentum (0 for plain SGD)"
    )
    parser.add_argument("--batch-size", type=int, default=32, help="mini-batch size")
    parser.add_argument(
        "--hidden",
        type=int,
        default=0,
        help="hidden units of the showcase model (0: the same linear softmax classifier as "
        "the tutorial; >0: one ReLU hidden layer, which over-fits and over-confides more)",
    )
    parser.add_argument(
        "--label-smoothing",
        type=float,
        default=0.1,
        help="epsilon of the label-smoothing run (crossent.cross_entropy(label_smoothing=...))",
    )
    parser.add_argument(
        "--gamma", type=float, default=2.0, help="focusing parameter of the focal-loss run"
    )
    parser.add_argument(
        "--rare",
        type=_int_list,
        default="1,3,8",
        metavar="CLASSES",
        help="comma-separated classes subsampled in the imbalanced variant",
    )
    parser.add_argument(
        "--rare-fraction",
        type=float,
        default=0.1,
        help="fraction of each rare class's training/validation rows kept in the imbalanced variant",
    )
    parser.add_argument(
        "--bins",
        type=int,
        default=10,
        help="equal-width confidence bins of ECE and the reliability diagrams",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads while training (1 is fastest for this tiny model; restored after)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the data split, the subsampling, the inits and the shuffles",
    )
    parser.add_argument(
        "--no-plots", action="store_true", help="skip the PNGs (no matplotlib needed)"
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")


# --------------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------------


@dataclass
class Split:
    x: Any  # torch.float32 (N, 64), standardised with the training split's statistics
    y: Any  # torch.int64 (N,)


@dataclass
class Dataset:
    name: str
    train: Split
    val: Split
    test: Split
    rare: tuple[int, ...] = ()
    counts: np.ndarray = field(default_factory=lambda: np.zeros(10, dtype=np.int64))


def load_digits_splits(seed: int) -> tuple[np.ndarray, ...]:
    """Stratified 60/20/20 train/validation/test split of scikit-learn's digits (1797 images, 64 pixels)."""
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise SystemExit("crossent demo needs scikit-learn: pip install 'crossent[demo]'") from exc
    x, y = load_digits(return_X_y=True)
    x_tr, x_rest, y_tr, y_rest = train_test_split(
        x, y, test_size=0.4, stratify=y, random_state=seed
    )
    x_va, x_te, y_va, y_te = train_test_split(
        x_rest, y_rest, test_size=0.5, stratify=y_rest, random_state=seed
    )
    return x_tr, y_tr, x_va, y_va, x_te, y_te


def make_dataset(
    name: str, arrays: tuple[np.ndarray, ...], rare: tuple[int, ...], fraction: float, seed: int
) -> Dataset:
    import torch

    x_tr, y_tr, x_va, y_va, x_te, y_te = arrays
    rng = np.random.default_rng(seed)

    def subsample(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        keep = np.ones(len(y), dtype=bool)
        for c in rare:
            rows = np.flatnonzero(y == c)
            drop = rng.permutation(rows)[max(1, round(fraction * len(rows))) :]
            keep[drop] = False
        return x[keep], y[keep]

    if rare:
        x_tr, y_tr = subsample(x_tr, y_tr)
        x_va, y_va = subsample(x_va, y_va)
    mean, std = (
        x_tr.mean(axis=0),
        x_tr.std(axis=0) + 1.0,
    )  # +1: pixels constant in training stay finite

    def split(x: np.ndarray, y: np.ndarray) -> Split:
        return Split(
            torch.tensor((x - mean) / std, dtype=torch.float32), torch.tensor(y, dtype=torch.int64)
        )

    return Dataset(
        name,
        split(x_tr, y_tr),
        split(x_va, y_va),
        split(x_te, y_te),
        rare,
        np.bincount(y_tr, minlength=10),
    )


# --------------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------------


def make_model(hidden: int, seed: int) -> Any:
    import torch

    torch.manual_seed(seed)
    if hidden <= 0:
        return torch.nn.Linear(64, 10)
    return torch.nn.Sequential(
        torch.nn.Linear(64, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 10)
    )


def make_objective(
    method: str, args: argparse.Namespace, counts: np.ndarray
) -> Callable[[Any, Any], Any]:
    import torch

    import crossent

    if method == "CE":
        return lambda logits, y: crossent.cross_entropy(logits, y)
    if method == "label smoothing":
        return lambda logits, y: crossent.cross_entropy(
            logits, y, label_smoothing=args.label_smoothing
        )
    if method == "focal":
        return lambda logits, y: crossent.focal_loss(logits, y, gamma=args.gamma)
    if method == "class-weighted CE":
        # "balanced" weights n / (C · n_c): every class contributes the same total weight
        w = torch.tensor(counts.sum() / (len(counts) * np.maximum(counts, 1)), dtype=torch.float32)
        return lambda logits, y: crossent.cross_entropy(logits, y, weight=w)
    raise ValueError(f"unknown method {method!r}")


def sgd_step(params: list[Any], velocity: list[Any], lr: float, momentum: float) -> None:
    """One SGD step with heavy-ball momentum, the update of ``torch.optim.SGD`` (no dampening, no Nesterov):
    ``v ← μ·v + ∇``, ``θ ← θ − lr·v``. Written out (it is the whole optimiser) and because constructing
    ``torch.optim`` optimisers imports TorchDynamo, seconds of start-up on a small machine."""
    import torch

    with torch.no_grad():
        for p, v in zip(params, velocity):
            v.mul_(momentum).add_(p.grad)
            p.sub_(lr * v)
            p.grad = None


def train(
    model: Any,
    data: Dataset,
    objective: Callable[[Any, Any], Any],
    args: argparse.Namespace,
    desc: str,
    *,
    leave: bool = False,
) -> tuple[list[float], list[float]]:
    """SGD over shuffled mini-batches; returns (training objective per epoch, validation NLL per epoch)."""
    import torch
    from tqdm.auto import tqdm

    import crossent

    params = list(model.parameters())
    velocity = [torch.zeros_like(p) for p in params]
    gen = torch.Generator().manual_seed(args.seed)
    n = len(data.train.y)
    train_curve: list[float] = []
    val_curve: list[float] = []
    bar = tqdm(
        range(args.epochs),
        desc=desc,
        leave=leave,
        disable=args.no_progress,
        file=sys.stderr,
        dynamic_ncols=True,
    )
    for _ in bar:
        model.train()
        total = 0.0
        for idx in torch.randperm(n, generator=gen).split(args.batch_size):
            loss = objective(model(data.train.x[idx]), data.train.y[idx])
            loss.backward()
            sgd_step(params, velocity, args.lr, args.momentum)
            total += float(loss.detach()) * len(idx)
        model.eval()
        with torch.no_grad():
            val_nll = float(crossent.cross_entropy(model(data.val.x), data.val.y))
        train_curve.append(total / n)
        val_curve.append(val_nll)
        bar.set_postfix(loss=f"{train_curve[-1]:.4f}", val_nll=f"{val_nll:.4f}")
    bar.close()
    return train_curve, val_curve


def logits_of(model: Any, split: Split) -> np.ndarray:
    import torch

    with torch.no_grad():
        return model(split.x).double().numpy()


# --------------------------------------------------------------------------------------------------
# The gradient check
# --------------------------------------------------------------------------------------------------


def gradient_check(model: Any, split: Split, rows: int = 64) -> dict[str, float]:
    """Max |difference| between the analytic (P − Y)/N and autograd, on float64 logits of ``rows`` rows."""
    import torch

    import crossent
    import crossent.numpy as ref

    with torch.no_grad():
        logits = model(split.x[:rows]).double()
    y = split.y[:rows]
    x_np, y_np = logits.numpy(), y.numpy()
    n, c = x_np.shape
    formula = (ref.softmax(x_np) - np.eye(c)[y_np]) / n  # (P − Y)/N, the mean reduction
    analytic = ref.cross_entropy_grad(x_np, y_np)

    def autograd_of(fn: Callable[[Any, Any], Any]) -> np.ndarray:
        leaf = logits.clone().requires_grad_(True)
        fn(leaf, y).backward()
        return leaf.grad.numpy()

    torch_grad = autograd_of(torch.nn.functional.cross_entropy)
    crossent_grad = autograd_of(crossent.cross_entropy)
    return {
        "crossent.numpy.cross_entropy_grad vs (P - Y)/N": float(np.max(np.abs(analytic - formula))),
        "(P - Y)/N vs autograd of torch.nn.functional.cross_entropy": float(
            np.max(np.abs(formula - torch_grad))
        ),
        "crossent.cross_entropy backward vs torch autograd": float(
            np.max(np.abs(crossent_grad - torch_grad))
        ),
    }


# --------------------------------------------------------------------------------------------------
# The showcase
# --------------------------------------------------------------------------------------------------


@dataclass
class Result:
    dataset: str
    method: str
    accuracy: float
    nll: float
    ece: float
    temperature: float
    nll_after: float
    ece_after: float
    rare_recall: dict[int, float]
    val_curve: list[float]
    test_logits: np.ndarray
    test_y: np.ndarray


def evaluate(
    data: Dataset, method: str, model: Any, val_curve: list[float], rare: tuple[int, ...], bins: int
) -> Result:
    from crossent import diagnostics as dg

    val_x, test_x = logits_of(model, data.val), logits_of(model, data.test)
    val_y, test_y = data.val.y.numpy(), data.test.y.numpy()
    report = dg.calibrate(val_x, val_y, test_x, test_y, n_bins=bins)
    recall = dg.recall_per_class(test_x, test_y)
    return Result(
        data.name,
        method,
        dg.accuracy(test_x, test_y),
        report.nll_before,
        report.ece_before,
        float(report.temperature or 1.0),
        report.nll_after,
        report.ece_after,
        {c: float(recall[c]) for c in rare},
        val_curve,
        test_x,
        test_y,
    )


def format_table(results: list[Result], rare: tuple[int, ...]) -> str:
    rare_head = " ".join(f"rec[{c}]" for c in rare)
    head = (
        f"{'dataset':<17} {'loss':<18} {'acc':>6} {'NLL':>6} {'ECE':>6} | {'T':>5} {'NLL_T':>6} "
        f"{'ECE_T':>6} | {rare_head}"
    )
    lines = [head, "-" * len(head)]
    for r in results:
        recalls = " ".join(f"{r.rare_recall[c]:>6.3f}" for c in rare)
        lines.append(
            f"{r.dataset:<17} {r.method:<18} {r.accuracy:>6.3f} {r.nll:>6.3f} {r.ece:>6.3f} | "
            f"{r.temperature:>5.2f} {r.nll_after:>6.3f} {r.ece_after:>6.3f} | {recalls}"
        )
    return "\n".join(lines)


def write_plots(
    out: Path,
    results: list[Result],
    datasets: list[Dataset],
    tutorial: dict[str, list[float]],
    bins: int,
) -> list[Path]:
    from crossent import diagnostics as dg
    from crossent.diagnostics import plots

    paths = [
        plots.loss_curves(tutorial, out / "tutorial-loss.png", title="Softmax regression on digits")
    ]
    for data in datasets:
        rs = [r for r in results if r.dataset == data.name]
        slug = data.name.replace(" ", "-")
        before = {r.method: dg.reliability_diagram(r.test_logits, r.test_y, bins) for r in rs}
        after = {
            r.method: dg.reliability_diagram(r.test_logits / r.temperature, r.test_y, bins)
            for r in rs
        }
        paths.append(
            plots.reliability_diagram(
                before,
                out / f"{slug}-reliability.png",
                after=after,
                title=f"Reliability on the {data.name} test split",
            )
        )
        paths.append(
            plots.loss_curves(
                {r.method: r.val_curve for r in rs},
                out / f"{slug}-val-nll.png",
                title=f"Validation NLL while training ({data.name})",
                ylabel="NLL (nats)",
                log_y=True,
            )
        )
        paths.append(
            plots.per_class_bars(
                {r.method: dg.nll_per_class(r.test_logits, r.test_y) for r in rs},
                out / f"{slug}-nll-per-class.png",
                highlight=data.rare,
                title=f"Test NLL per class ({data.name}; rare classes shaded)",
            )
        )
        paths.append(
            plots.confidence_histogram(
                {r.method: dg.top_label(r.test_logits)[0] for r in rs},
                out / f"{slug}-confidence.png",
                title=f"Top-label confidence ({data.name} test split)",
            )
        )
    return paths


def run(args: argparse.Namespace) -> int:
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, args.threads))
    try:
        return _run(args)
    finally:
        torch.set_num_threads(threads)


def _run(args: argparse.Namespace) -> int:
    import crossent

    if args.quick:
        args.epochs = 3
    if args.epochs < 1 or args.batch_size < 1 or not 0 < args.rare_fraction <= 1:
        print(
            "crossent demo: --epochs and --batch-size must be >= 1 and --rare-fraction in (0, 1]",
            file=sys.stderr,
        )
        return 2
    start = time.perf_counter()
    arrays = load_digits_splits(args.seed)
    digits = make_dataset("digits", arrays, (), 1.0, args.seed)
    digits.rare = args.rare  # reported for comparison on the balanced data too
    imbalanced = make_dataset("digits-imbalanced", arrays, args.rare, args.rare_fraction, args.seed)
    print(
        f"digits: {len(digits.train.y)} train / {len(digits.val.y)} validation / {len(digits.test.y)} test "
        f"images of 8x8 pixels, 10 classes (scikit-learn's bundled copy)"
    )

    # 1. the tutorial ---------------------------------------------------------------------------------
    print(
        "\n== 1. Softmax regression (torch.nn.Linear(64, 10) + SGD) with crossent.cross_entropy =="
    )
    model = make_model(0, args.seed)
    train_curve, val_curve = train(
        model, digits, crossent.cross_entropy, args, "softmax regression", leave=True
    )
    shown = sorted({0, len(train_curve) // 4, len(train_curve) // 2, len(train_curve) - 1})
    print("training loss by epoch: " + ", ".join(f"{i + 1}: {train_curve[i]:.4f}" for i in shown))
    test_logits = logits_of(model, digits.test)
    from crossent import diagnostics as dg

    tutorial_acc = dg.accuracy(test_logits, digits.test.y.numpy())
    print(f"test accuracy: {tutorial_acc:.3f} (chance: 0.100)")

    # 2. the gradient check -------------------------------------------------------------------------
    print(
        "\n== 2. The gradient of cross-entropy is (P - Y)/N: analytic vs autograd (float64, 64 rows) =="
    )
    diffs = gradient_check(model, digits.test)
    tol = 1e-12
    for name, diff in diffs.items():
        print(f"  max |diff| {diff:.2e}  {name}")
    grad_ok = all(d <= tol for d in diffs.values())
    print(f"gradient check: {'passed' if grad_ok else 'FAILED'} (tolerance {tol:g})")

    # 3. the showcase -------------------------------------------------------------------------------
    print(
        f"\n== 3. Plain CE, label smoothing (eps={args.label_smoothing:g}), focal (gamma={args.gamma:g}) and "
        f"class-weighted CE =="
    )
    print(
        f"imbalanced variant: classes {', '.join(map(str, args.rare))} keep {args.rare_fraction:.0%} of their "
        f"training/validation rows ({len(imbalanced.train.y)} training rows); the test split stays balanced."
    )
    results: list[Result] = []
    datasets = [digits, imbalanced]
    for data in datasets:
        for method in METHODS:
            model = make_model(args.hidden, args.seed)
            objective = make_objective(method, args, data.counts)
            _, val_curve_m = train(model, data, objective, args, f"{data.name} / {method}")
            results.append(evaluate(data, method, model, val_curve_m, args.rare, args.bins))
    table = format_table(results, args.rare)
    print(
        f"\nTest split; NLL in nats; ECE with {args.bins} equal-width bins; _T: after temperature scaling fitted "
        f"on the validation split; rec[c]: recall of class c.\n(digits-imbalanced: the temperature is fitted on "
        f"imbalanced validation data and scored on the balanced test split, a label shift, so it can raise NLL.)"
    )
    print(table)

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "table.txt").write_text(table + "\n")
    if not args.no_plots:
        tutorial = {"training loss": train_curve, "validation NLL": val_curve}
        paths = write_plots(args.out, results, datasets, tutorial, args.bins)
        print(f"\nplots written: {', '.join(str(p) for p in paths)}")
    print(f"table written: {args.out / 'table.txt'}")
    print(f"done in {time.perf_counter() - start:.1f} s")
    if not math.isfinite(tutorial_acc):
        return 1
    return 0 if grad_ok else 1
