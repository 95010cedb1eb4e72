"""Reporting of ``sweep.py``: the CSV rows, the ranked Markdown tables and the best config per shape.

Kept apart from the measuring so each file does one job; ``rows`` are ``sweep.Row`` objects (read only
through their attributes).
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

CSV_FIELDS = [
    "date", "device", "torch", "triton", "shape", "dtype", "variant", "live", "path", "block",
    "num_warps", "chunks", "chunk_size", "knobs", "status", "note", "loss_rel_err", "grad_rel_err",
    "first_call_s", "eager_ms", "eager_p20_ms", "eager_p80_ms", "graph_ms", "graph_p20_ms",
    "graph_p80_ms", "floor_copy_ms", "floor_bytes_ms", "ratio_to_copy_floor", "ratio_to_bytes_floor",
    "gb_per_s", "extra_mb", "timing",
]  # fmt: skip


def fmt(v: float | None, digits: int = 4) -> str:
    return "" if v is None or not math.isfinite(v) else f"{v:.{digits}g}"


def csv_rows(rows: list, env: dict) -> list[dict]:
    out = []
    for r in rows:
        e, g = r.eager_ms or (None,) * 3, r.graph_ms or (None,) * 3
        n, v = (int(s) for s in r.shape.split("x"))
        itemsize = {"fp32": 4, "bf16": 2, "fp16": 2}.get(r.dtype, 4)
        out.append(
            {
                "date": env["date"], "device": env["device"], "torch": env["torch"],
                "triton": env["triton"], "shape": r.shape, "dtype": r.dtype, "variant": r.variant,
                "live": r.live, "path": r.launch.path, "block": r.launch.block,
                "num_warps": r.launch.warps, "chunks": r.launch.chunks,
                "chunk_size": r.launch.chunk_size,
                "knobs": " | ".join(k.describe() for k in r.knobs[:4])
                + (f" (+{len(r.knobs) - 4} more)" if len(r.knobs) > 4 else ""),
                "status": r.status,
                "note": r.note, "loss_rel_err": fmt(r.loss_err, 3), "grad_rel_err": fmt(r.grad_err, 3),
                "first_call_s": fmt(r.first_call_s, 3), "eager_ms": fmt(e[0]), "eager_p20_ms": fmt(e[1]),
                "eager_p80_ms": fmt(e[2]), "graph_ms": fmt(g[0]), "graph_p20_ms": fmt(g[1]),
                "graph_p80_ms": fmt(g[2]), "floor_copy_ms": fmt(r.floor_copy_ms),
                "floor_bytes_ms": fmt(r.floor_bytes_ms), "ratio_to_copy_floor": fmt(r.ratio, 3),
                "ratio_to_bytes_floor": fmt(
                    r.best_ms / r.floor_bytes_ms if r.best_ms and r.floor_bytes_ms else None, 3
                ),
                "gb_per_s": fmt(2 * n * v * itemsize / (r.best_ms * 1e6) if r.best_ms else None),
                "extra_mb": fmt(r.extra_mb, 3), "timing": env["timing"],
            }
        )  # fmt: skip
    return out


def _ms(t: tuple[float, float, float] | None) -> str:
    return f"{t[0]:.4g} ({t[1]:.4g}–{t[2]:.4g})" if t else "—"


def _paste(r) -> str:
    """How configs.py would have to read to choose this launch (for the variant's ``live``)."""
    L = r.launch
    n_pow2 = 1 << max(4, (int(r.shape.split("x")[1]) - 1).bit_length())
    parts = []
    if L.path == "single":
        parts.append(f"SINGLE_BLOCK_BY_LIVE[{min(r.live, 4)}] >= {n_pow2}")
    else:
        parts.append(f"SINGLE_BLOCK_BY_LIVE[{min(r.live, 4)}] < {n_pow2}")
        parts.append(f"MULTI_BLOCK = {L.block}")
    parts.append(f"_warps({L.block}) -> {L.warps}")
    if L.path == "split":
        parts.append(f"split into {L.chunks} chunks ({r.knobs[0].describe()})")
    return "; ".join(parts)


def markdown(rows: list, env: dict, dry_run: bool) -> str:
    lines = [
        "# Triton CE config sweep",
        "",
        f"{env['device']}; torch {env['torch']}, Triton {env['triton']}, {env['date']}. "
        f"Timing: {env['timing']}. Forward + backward of "
        "`crossent.cross_entropy(..., backend='triton')` (mean), after a check against the float64 "
        "reference. *graph*: the same call replayed from a CUDA graph (kernels only); *eager*: the "
        "Python call (adds launch overhead). Ratio: graph time (eager where no graph) over the copy "
        "floor (`buf.copy_(logits)`, timed the same way); bytes floor: 2·N·V·itemsize at the "
        f"bandwidth of a 2 GiB copy ({env['bw']}). Extra: peak beyond the inputs and the gradient.",
        "",
    ]
    groups: dict[tuple, list] = {}
    for r in rows:
        groups.setdefault((r.shape, r.dtype, r.variant), []).append(r)
    best_lines = []
    for (shape, dtype, variant), group in groups.items():
        floor = next((r for r in group if r.floor_copy_ms), None)
        head = f"## {shape} {dtype}, {variant} (live arrays: {group[0].live})"
        if floor:
            head += (
                f" — copy floor {floor.floor_copy_ms:.4g} ms, bytes floor "
                f"{fmt(floor.floor_bytes_ms) or 'n/a'} ms"
            )
        lines += [head, ""]
        lines.append(
            "| rank | path | BLOCK | warps | chunks | graph ms (p20–p80) | eager ms | × copy floor "
            "| extra MB | status | grid points |"
        )
        lines.append("|---|---|---|---|---|---|---|---|---|---|---|")
        ranked = sorted(group, key=lambda r: (r.ratio is None, r.ratio or 0.0))
        for i, r in enumerate(ranked, 1):
            L = r.launch
            knobs = ", ".join(k.describe() for k in r.knobs[:3]) + (
                " …" if len(r.knobs) > 3 else ""
            )
            status = r.status + (f": {r.note}" if r.note else "")
            lines.append(
                f"| {i if r.ratio else ''} | {L.path} | {L.block} | {L.warps} | {L.chunks} | "
                f"{_ms(r.graph_ms)} | {_ms(r.eager_ms)} | {fmt(r.ratio, 3)} | {fmt(r.extra_mb, 3)} | "
                f"{status} | {knobs} |"
            )
        lines.append("")
        timed = [r for r in ranked if r.ratio]
        if timed:
            best, current = (
                timed[0],
                next((r for r in group if r.knobs[0].describe() == "current"), None),
            )
            cur = f"{current.ratio:.3f}×" if current and current.ratio else "n/a"
            best_lines.append(
                f"- {shape} {dtype} {variant}: best {best.launch.path} BLOCK={best.launch.block} "
                f"warps={best.launch.warps} chunks={best.launch.chunks} at {best.best_ms:.4g} ms = "
                f"{best.ratio:.3f}× copy floor (current config: {cur}) → {_paste(best)}"
            )
        elif not dry_run:
            best_lines.append(f"- {shape} {dtype} {variant}: nothing timed")
    lines += ["## Best config per shape (for configs.py)", ""]
    lines += best_lines or ["(dry run: nothing timed)"]
    return "\n".join(lines) + "\n"


def write_outputs(out: Path, rows: list, env: dict, dry_run: bool) -> str:
    """sweep.csv and sweep.md in ``out``; returns the markdown page."""
    out.mkdir(parents=True, exist_ok=True)
    rows = sorted(rows, key=lambda r: r.pair)  # stable: the order of --shapes and --variants
    with open(out / "sweep.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        writer.writeheader()
        writer.writerows(csv_rows(rows, env))
    page = markdown(rows, env, dry_run)
    (out / "sweep.md").write_text(page)
    return page
