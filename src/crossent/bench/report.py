"""Reporting: the printed table, long-format CSV and JSON rows, the PNG chart, and RESULTS.md.

Long format: one row per (run, case, provider), each row carrying the run's environment (date, commit,
machine, thread count, ``THP_MEM_ALLOC_ENABLE``, versions), so CSVs from different runs and machines
concatenate. ``results.csv`` holds the timed rows (every one has its ratio to the floor, the floor itself
included at 1.0); ``skipped.csv`` holds the (case, provider) pairs that were not timed and why
(unavailable, unsupported, wrong, error).

``python -m crossent.bench.report benchmarks/results/*.csv > benchmarks/RESULTS.md`` regenerates the
results page from the CSVs alone.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import statistics
import sys
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

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


# ---------------------------------------------------------------------------------------------------
# RESULTS.md
# ---------------------------------------------------------------------------------------------------


def _md_speed(r: dict) -> str:
    if r.get("gb_per_s"):
        return f"{float(r['gb_per_s']):.1f} GB/s"
    if r.get("tflop_per_s"):
        return f"{float(r['tflop_per_s']):.3f} TFLOP/s"
    return ""


def _run_key(r: dict) -> tuple[str, str, str]:
    return (r["date"], r["commit"], r["host"])


def _current(timed: list[dict], skipped: list[dict]) -> tuple[list[dict], list[dict], list[dict]]:
    """The latest outcome of each (device, case, provider): (timed rows, skipped rows, older rows).

    A provider's newest run wins, whether it was timed or not; an older timed row of the same provider
    goes to the history. Rows of one table may therefore come from different runs: each shows its run.
    """
    newest: dict[tuple[str, str, str], dict] = {}
    for r in timed + skipped:
        key = (r["device"], r["case"], r["provider"])
        if key not in newest or _run_key(r) > _run_key(newest[key]):
            newest[key] = r
    chosen = {id(r) for r in newest.values()}
    cur_timed = [r for r in timed if id(r) in chosen]
    cur_skipped = [r for r in skipped if id(r) in chosen]
    older = [r for r in timed if id(r) not in chosen]
    return cur_timed, cur_skipped, older


def _label_thp(r: dict) -> dict:
    """Runs with huge pages in torch's CPU allocator are kept apart: "(THP=1)" after the provider."""
    thp = r.get("THP_MEM_ALLOC_ENABLE", "unset")
    if r.get("device") == "cpu" and thp not in ("", "unset", "0"):
        return {**r, "provider": f"{r['provider']} (THP={thp})"}
    return r


def _ms(value: str | float) -> str:
    v = float(value)
    return f"{v:,.0f}" if v >= 1000 else f"{v:.4g}"


def _ratio(r: dict) -> float:
    return float(r["ratio_to_floor"])


def markdown(rows: list[dict], files: list[str], gpu_case_names: list[str]) -> str:
    """RESULTS.md from CSV rows: each provider's latest run per case, earlier runs as a history."""
    rows = [_label_thp(r) for r in rows]
    timed = [r for r in rows if r.get("status") == "ok"]
    skipped = [r for r in rows if r.get("status") not in ("ok", None)]
    cur, cur_skipped, older = _current(timed, skipped)
    out = [
        "# crossent benchmark results",
        "",
        "<!-- GENERATED by `python -m crossent.bench.report` from the CSVs below; do not edit by hand. -->",
        "",
        "Generated from " + ", ".join(f"`{f}`" for f in files) + ".",
        "",
        "Forward + backward of a mean-reduced cross-entropy with class-index targets; medians of repeated "
        "runs with min–max. *× floor*: where the row's `ratio_method` is `per-round` (the harness times a "
        "floor call before every timed call), the median over rounds of the provider's time over the "
        "floor's time in the same round; in rows marked `medians`, the provider's median over the floor's "
        "median of the same run. See `src/crossent/bench/cases.py` for the floors and "
        "`benchmarks/README.md` for the method. *Extra memory* is the peak beyond the inputs and the "
        "gradients every implementation returns (CPU: resident-set growth; GPU: allocated bytes).",
        "",
    ]
    runs: dict[tuple, dict] = {}
    for r in timed:
        runs.setdefault(_run_key(r), r)
    out += [
        "## Runs",
        "",
        "| date (UTC) | commit | device | machine | threads | THP_MEM_ALLOC_ENABLE | "
        "torch | triton | liger-kernel | cut-cross-entropy | load avg (start → end) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key in sorted(runs):
        r = runs[key]
        out.append(
            f"| {r['date']} | `{r['commit']}` | {r['device']} | {r['machine']} | {r['threads']} | "
            f"{r['THP_MEM_ALLOC_ENABLE']} | {r['v_torch']} | {r['v_triton']} | {r['v_liger-kernel']} | "
            f"{r['v_cut-cross-entropy']} | {r['loadavg_start']} → {r['loadavg_end']} |"
        )
    out += [
        "",
        "The load average is the machine's (all users), read at the start and end of each run: above the "
        "number of cores, the benchmark shared them with other work and its absolute times are inflated "
        "and noisy — the ratios to the floor, measured in the same run, are the numbers to compare.",
        "",
    ]
    devices = sorted({r["device"] for r in cur})
    for device in devices:
        cases = list(dict.fromkeys(r["case"] for r in cur if r["device"] == device))
        out += [f"## {device.upper()}: the latest run of each provider, per case", ""]
        out += _summary(device, cases, cur)
        for case in cases:
            rs = [r for r in cur if r["device"] == device and r["case"] == case]
            first = rs[0]
            target = (
                f"; target ≤ {first['target_ratio']}× floor" if first.get("target_ratio") else ""
            )
            out += [
                f"### {case}",
                "",
                f"{first['kind']} {first['shape']} {first['dtype']}, options: {first['options']}{target}.",
                "",
                "| provider | median ms | min–max ms | × floor | speed | extra memory (MB) | first call (s) | "
                "loss / grad rel. error | run (UTC) | detail |",
                "|---|---:|---:|---:|---:|---:|---:|---|---|---|",
            ]
            for r in sorted(rs, key=_ratio):
                name = (
                    f"**{r['provider']}**"
                    if r["provider"].startswith("crossent")
                    else r["provider"]
                )
                err = f"{r['loss_rel_err']} / {r['grad_rel_err']}" if r.get("loss_rel_err") else "-"
                method = r.get("ratio_method") or "medians"
                ratio = f"{_ratio(r):.2f}" + (
                    ""
                    if method in ("per-round", "floor") or r["provider"] == "floor"
                    else " (medians)"
                )
                out.append(
                    f"| {name} | {_ms(r['median_ms'])} | {_ms(r['min_ms'])}–"
                    f"{_ms(r['max_ms'])} ({r['repeats']}×) | {ratio} | {_md_speed(r)} | {_mb(r)} | "
                    f"{float(r['first_call_s']):.3g} | {err} | {r['date'][11:16]} | {r['detail']} |"
                )
            bad = [
                s
                for s in cur_skipped
                if s["device"] == device and s["case"] == case and s["status"] in ("wrong", "error")
            ]
            if bad:
                out.append("")
                out += [f"- {s['provider']}: **{s['status']}** — {s['reason']}" for s in bad]
            out.append("")
    out += _history(older)
    out += _not_timed(cur_skipped)
    if "cuda" not in devices:
        out += [
            "## GPU",
            "",
            "No GPU measurements are in these CSVs: the GPU cases were not run (no GPU was available to "
            "the sessions that produced them). Numbers are never filled in by hand. The GPU cases are: "
            + ", ".join(f"`{c}`" for c in gpu_case_names)
            + ". Run `crossent bench --device cuda --out DIR` on a GPU machine and regenerate this page "
            "with the new CSV.",
            "",
        ]
    return "\n".join(out)


def _summary(device: str, cases: list[str], cur: list[dict]) -> list[str]:
    out = [
        "| case | floor ms | crossent ms (× floor) | crossent, THP_MEM_ALLOC_ENABLE=1 | best peer (× floor) "
        "| torch eager (× floor) | target |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]

    def cell(r: dict | None, name: bool = False) -> str:
        if r is None:
            return "-"
        who = f"{r['provider']} " if name else ""
        return f"{who}{_ms(r['median_ms'])} ({_ratio(r):.2f}×)"

    for case in cases:
        get = {r["provider"]: r for r in cur if r["device"] == device and r["case"] == case}
        floor, ce, eager = get.get("floor"), get.get("crossent"), get.get("torch-eager")
        thp = get.get("crossent (THP=1)")
        peers = [
            r
            for p, r in get.items()
            if not p.startswith(("crossent", "floor")) and "(THP=" not in p
        ]
        best = min(peers, key=_ratio) if peers else None
        target = "-"
        if ce and ce.get("target_ratio"):
            ok = _ratio(ce) <= float(ce["target_ratio"])
            target = f"≤ {ce['target_ratio']}× {'✓' if ok else '✗'}"
        detail = f" [{ce['detail']}]" if ce and ce.get("detail") else ""
        floor_ms = _ms(floor["median_ms"]) if floor else "-"
        out.append(
            f"| {case} | {floor_ms} | {cell(ce)}{detail} | {cell(thp)} | {cell(best, True)} | "
            f"{cell(eager)} | {target} |"
        )
    return out + [""]


def _history(older: list[dict]) -> list[str]:
    old = [r for r in older if r["provider"].startswith("crossent")]
    if not old:
        return []
    out = [
        "## Earlier runs (crossent providers only)",
        "",
        "| date (UTC) | commit | case | provider | median ms | × floor | detail |",
        "|---|---|---|---|---:|---:|---|",
    ]
    for r in sorted(old, key=lambda r: (r["case"], r["date"], r["provider"])):
        out.append(
            f"| {r['date']} | `{r['commit']}` | {r['case']} | {r['provider']} | "
            f"{_ms(r['median_ms'])} | {_ratio(r):.2f} | {r['detail']} |"
        )
    return out + [""]


def _not_timed(cur_skipped: list[dict]) -> list[str]:
    seen: dict[tuple[str, str, str], set[str]] = defaultdict(set)
    for s in cur_skipped:
        if s["status"] not in ("wrong", "error"):
            seen[(s["provider"], s["status"], s["reason"])].add(s["case"])
    if not seen:
        return []
    out = ["## Not timed", "", "| provider | status | cases | why |", "|---|---|---:|---|"]
    for (prov, status, reason), cases in sorted(seen.items()):
        out.append(f"| {prov} | {status} | {len(cases)} | {reason} |")
    return out + [""]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m crossent.bench.report",
        description="Write RESULTS.md (markdown, to stdout) from benchmark CSVs (results and skipped).",
    )
    parser.add_argument("csv", nargs="+", help="CSV files written by `crossent bench --out`")
    parser.add_argument(
        "--append",
        action="append",
        default=[],
        metavar="MD",
        help="append another results page (cited by path) after the generated tables",
    )
    args = parser.parse_args(argv)
    from .cases import gpu_cases

    rows = read_csv(args.csv)
    text = markdown(rows, args.csv, [c.name for c in gpu_cases()])
    for extra in args.append:
        path = Path(extra)
        if not path.exists():
            continue
        body = path.read_text().strip().splitlines()
        # demote its headings two levels so they nest under ours
        body = ["##" + line if line.startswith("#") else line for line in body]
        text += (
            f"\n## Included from `{extra}` (written by its own script, not from the CSVs above)\n\n"
        )
        text += "\n".join(body) + "\n"
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
