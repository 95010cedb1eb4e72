"""Reporting: the printed table, long-format CSV and JSON rows, the PNG chart, and RESULTS.md.

Long format: one row per (run, case, provider), each row carrying the run's environment (date, commit,
machine, thread count, ``THP_MEM_ALLOC_ENABLE``, versions), so CSVs from different runs and machines
concatenate. ``results.csv`` holds the timed rows (every one has its ratio to the floor, the floor itself
included at 1.0); ``skipped.csv`` holds the (case, provider) pairs that were not timed and why
(unavailable, unsupported, wrong, error).

``python -m crossent.bench.report --regenerate`` rebuilds ``benchmarks/RESULTS.md`` from the CSVs in
``benchmarks/results/`` and the hand-written notes in ``benchmarks/notes/`` (see :mod:`.page`); the JSON
and PNG files written beside each CSV are build outputs, not part of the record.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import statistics
import sys
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path

from . import page

CASE_FIELDS = [
    "case",
    "kind",
    "dtype",
    "shape",
    "options",
    "provider",
    "detail",
    "status",
    "reason",
    "median_ms",
    "min_ms",
    "max_ms",
    "repeats",
    "floor_ms",
    "ratio_to_floor",
    "ratio_method",
    "target_ratio",
    "gb_per_s",
    "tflop_per_s",
    "extra_mb",
    "mem_method",
    "first_call_s",
    "loss_rel_err",
    "grad_rel_err",
]
ENV_FIELDS = [
    "date",
    "commit",
    "host",
    "machine",
    "device",
    "threads",
    "THP_MEM_ALLOC_ENABLE",
    "python",
    "v_torch",
    "v_triton",
    "v_numpy",
    "v_liger-kernel",
    "v_cut-cross-entropy",
    "v_crossent",
    "v_matplotlib",
    "loadavg_start",
    "loadavg_end",
]
FIELDS = ENV_FIELDS + CASE_FIELDS


def _num(value: float | None, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    return f"{value:.{digits}g}"


def _case_fields(case) -> dict:  # noqa: ANN001 - a crossent.bench.cases.Case
    return {
        "case": case.name,
        "kind": case.kind,
        "dtype": case.dtype,
        "shape": "x".join(map(str, case.shape)),
        "options": case.options.describe(),
        "target_ratio": _num(case.target_ratio),
    }


def rows_of(result) -> tuple[list[dict], list[dict]]:  # noqa: ANN001 - a harness.RunResult
    """(timed rows, skipped rows) as flat dicts with the CSV's fields (numbers as strings)."""
    env = {k: str(result.environment.get(k, "")) for k in ENV_FIELDS}
    floors = {
        m.case.name: statistics.median(m.times_s)
        for m in result.measurements
        if m.provider == "floor"
    }
    mem_method = (
        "cuda max_memory_allocated" if env["device"] == "cuda" else "cpu rss peak (clear_refs)"
    )
    timed = []
    for m in result.measurements:
        med = statistics.median(m.times_s)
        floor = floors.get(m.case.name)
        row = {
            **env,
            **_case_fields(m.case),
            "provider": m.provider,
            "detail": m.detail,
            "status": "ok",
            "reason": "",
            "median_ms": _num(med * 1e3, 5),
            "min_ms": _num(min(m.times_s) * 1e3, 5),
            "max_ms": _num(max(m.times_s) * 1e3, 5),
            "repeats": str(len(m.times_s)),
            "floor_ms": _num(floor * 1e3, 5) if floor else "",
            "ratio_to_floor": _num(m.ratio, 4)
            if m.ratio is not None
            else (_num(med / floor, 4) if floor else ""),
            "ratio_method": "floor"
            if m.provider == "floor"
            else ("per-round" if m.ratio is not None else "medians"),
            "gb_per_s": _num(m.case.min_bytes / med / 1e9) if m.case.min_bytes else "",
            "tflop_per_s": _num(m.case.flops / med / 1e12) if m.case.flops else "",
            "extra_mb": _num(m.extra_bytes / 2**20, 4) if m.extra_bytes is not None else "",
            "mem_method": mem_method if m.extra_bytes is not None else "",
            "first_call_s": _num(m.first_call_s, 4),
            "loss_rel_err": _num(m.loss_err, 3),
            "grad_rel_err": _num(m.grad_err, 3),
        }
        timed.append(row)
    skipped = []
    for s in result.skipped:
        row = {k: "" for k in FIELDS}
        row.update(env)
        row.update(_case_fields(s.case))
        row.update(
            provider=s.provider,
            status=s.status,
            reason=s.reason,
            loss_rel_err=_num(s.loss_err, 3),
            grad_rel_err=_num(s.grad_err, 3),
        )
        skipped.append(row)
    return timed, skipped


# ---------------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------------


def write_csv(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def read_csv(paths: Iterable[str | Path]) -> list[dict]:
    rows: list[dict] = []
    for path in paths:
        with open(path, newline="") as f:
            rows.extend(dict(r, _file=str(path)) for r in csv.DictReader(f))
    return rows


def write_outputs(result, out_dir: str | Path, name: str = "results") -> dict[str, Path]:  # noqa: ANN001
    """``<name>.csv``, ``<name>.skipped.csv``, ``<name>.json`` and ``<name>.png`` in ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    timed, skipped = rows_of(result)
    paths = {
        "csv": out / f"{name}.csv",
        "skipped": out / f"{name}.skipped.csv",
        "json": out / f"{name}.json",
        "png": out / f"{name}.png",
    }
    write_csv(paths["csv"], timed)
    write_csv(paths["skipped"], skipped)
    payload = {
        "environment": result.environment,
        "rows": timed,
        "skipped": skipped,
        "times_ms": {
            f"{m.case.name}/{m.provider}": [t * 1e3 for t in m.times_s] for m in result.measurements
        },
        # the floor's time in each round, for the interleaved providers
        "floor_times_ms": {
            f"{m.case.name}/{m.provider}": [t * 1e3 for t in m.floor_times_s]
            for m in result.measurements
            if m.floor_times_s
        },
    }
    paths["json"].write_text(json.dumps(payload, indent=1))
    plot(timed, paths["png"])
    return paths


def plot(rows: list[dict], path: Path) -> None:
    """A bar chart of the ratio to the floor, one panel per case (log scale; the target dashed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_case: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        if r.get("ratio_to_floor"):
            by_case[r["case"]].append(r)
    n = max(1, len(by_case))
    cols = 1 if n == 1 else 2
    nrows = math.ceil(n / cols)
    fig, axes = plt.subplots(
        nrows, cols, figsize=(6.5 * cols, 0.35 * 10 * nrows + 0.8), squeeze=False
    )
    for ax, (case, rs) in zip(axes.flat, by_case.items()):
        rs = sorted(rs, key=lambda r: float(r["ratio_to_floor"]))
        ratios = [float(r["ratio_to_floor"]) for r in rs]
        colors = [
            "#888888"
            if r["provider"] == "floor"
            else "#d62728"
            if r["provider"].startswith("crossent")
            else "#1f77b4"
            for r in rs
        ]
        ax.barh([r["provider"] for r in rs], ratios, color=colors)
        ax.set_xscale("log")
        ax.axvline(1.0, color="black", linewidth=0.8)
        if rs[0].get("target_ratio"):
            ax.axvline(
                float(rs[0]["target_ratio"]),
                color="green",
                linestyle="--",
                linewidth=1,
                label="target",
            )
            ax.legend(loc="lower right", fontsize=7)
        for y, v in enumerate(ratios):
            ax.text(v, y, f" {v:.2f}×", va="center", fontsize=7)
        ax.set_title(f"{case} ({rs[0]['device']})", fontsize=9)
        ax.tick_params(labelsize=7)
        ax.set_xlabel("time / floor (lower is better)", fontsize=8)
    for ax in list(axes.flat)[len(by_case) :]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------------
# The printed table
# ---------------------------------------------------------------------------------------------------


def _speed(r: dict) -> str:
    if r.get("gb_per_s"):
        return f"{float(r['gb_per_s']):.1f} GB/s"
    if r.get("tflop_per_s"):
        return f"{float(r['tflop_per_s']):.3f} TFLOP/s"
    return ""


def _mb(r: dict) -> str:
    return f"{float(r['extra_mb']):.0f}" if r.get("extra_mb") else "-"


def format_table(timed: list[dict], skipped: list[dict]) -> str:
    """Plain-text tables, one per case, then what was not timed and why."""
    lines = []
    header = (
        f"  {'provider':<18} {'median ms':>10} {'min–max ms':>19} {'× floor':>8} {'speed':>16} "
        f"{'extra MB':>9} {'1st call s':>10} {'loss err':>9} {'grad err':>9}  detail"
    )
    by_case: dict[str, list[dict]] = defaultdict(list)
    for r in timed:
        by_case[r["case"]].append(r)
    problems: dict[str, list[dict]] = defaultdict(list)
    for s in skipped:
        if s["status"] in ("wrong", "error"):
            problems[s["case"]].append(s)
    for case, rs in by_case.items():
        target = f", target ≤ {rs[0]['target_ratio']}× floor" if rs[0].get("target_ratio") else ""
        lines.append(f"{case} [{rs[0]['device']}; {rs[0]['options']}{target}]")
        lines.append(header)
        for r in sorted(rs, key=lambda r: float(r["median_ms"])):
            spread = f"{float(r['min_ms']):.4g}–{float(r['max_ms']):.4g}"
            lines.append(
                f"  {r['provider']:<18} {float(r['median_ms']):>10.4g} {spread:>19} "
                f"{float(r['ratio_to_floor']):>7.2f}× {_speed(r):>16} {_mb(r):>9} "
                f"{float(r['first_call_s']):>10.3g} {r['loss_rel_err'] or '-':>9} {r['grad_rel_err'] or '-':>9}  "
                f"{r['detail']}"
            )
        for s in problems.pop(case, []):
            lines.append(f"  {s['provider']:<18} {s['status'].upper()}: {s['reason']}")
        lines.append("")
    for case, ss in problems.items():  # cases whose floor never ran
        for s in ss:
            lines.append(f"{case}: {s['provider']} {s['status'].upper()}: {s['reason']}")
    seen: dict[tuple[str, str, str], int] = {}
    for s in skipped:
        if s["status"] not in ("wrong", "error"):
            key = (s["provider"], s["status"], s["reason"])
            seen[key] = seen.get(key, 0) + 1
    if seen:
        lines.append("Not timed:")
        for (prov, status, reason), count in sorted(seen.items()):
            lines.append(f"  {prov} ({status}, {count} case{'s' if count > 1 else ''}): {reason}")
    return "\n".join(lines)


def page_text(
    csv_paths: Sequence[str | Path], notes: list[tuple[str, str]], names: list[str] | None = None
) -> str:
    """RESULTS.md from CSV files (cited as ``names``, default their paths) and ``(path, text)`` notes."""
    from .cases import gpu_cases

    names = names if names is not None else [str(p) for p in csv_paths]
    text = page.markdown(read_csv(csv_paths), names, [c.name for c in gpu_cases()])
    return text + page.notes_markdown(notes)


def regenerate(root: str | Path = ".") -> Path:
    """Rewrite ``benchmarks/RESULTS.md`` under ``root`` from ``benchmarks/results/*.csv`` and
    ``benchmarks/notes/*.md`` (sorted, cited relative to ``root``): the same files give the same page."""
    root = Path(root)
    csvs = sorted((root / page.RESULTS_DIR).glob("*.csv"))
    if not csvs:
        raise SystemExit(f"no CSV files in {root / page.RESULTS_DIR}")
    notes = [
        (p.relative_to(root).as_posix(), p.read_text())
        for p in sorted((root / page.NOTES_DIR).glob("*.md"))
    ]
    text = page_text(csvs, notes, [p.relative_to(root).as_posix() for p in csvs])
    out = root / page.PAGE
    out.write_text(text)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m crossent.bench.report",
        description="Write RESULTS.md from benchmark CSVs (results and skipped) and hand-written notes: "
        "--regenerate rewrites benchmarks/RESULTS.md in place, otherwise the page goes to stdout.",
    )
    parser.add_argument("csv", nargs="*", help="CSV files written by `crossent bench --out`")
    parser.add_argument(
        "--notes",
        action="append",
        default=[],
        metavar="MD",
        help="a hand-written notes page to include verbatim after the generated tables",
    )
    parser.add_argument(
        "--regenerate",
        action="store_true",
        help="rewrite ROOT/benchmarks/RESULTS.md from ROOT/benchmarks/results/*.csv and "
        "ROOT/benchmarks/notes/*.md",
    )
    parser.add_argument("--root", default=".", help="the repository root for --regenerate")
    args = parser.parse_args(argv)
    if args.regenerate:
        if args.csv or args.notes:
            parser.error("--regenerate takes its inputs from --root; give no CSV or --notes")
        print(regenerate(args.root))
        return 0
    if not args.csv:
        parser.error("give CSV files, or --regenerate")
    notes = [(n, Path(n).read_text()) for n in args.notes]
    sys.stdout.write(page_text(args.csv, notes))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
