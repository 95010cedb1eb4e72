"""Write SUMMARY.md for a ``benchmarks/gpu/run.sh`` run from the logs in its staging folder.

Usage: ``python3 summary.py STAGE_DIR OUT_FILE``. Standard library only (runs even where torch is broken):
the step table, the environment facts, the tests' last lines, the bench tables and the sweep's best
configs, each taken from the step's own log or output.
"""

from __future__ import annotations

import sys
from pathlib import Path


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _tail(text: str, n: int) -> list[str]:
    lines = [line for line in text.rstrip().splitlines() if line.strip()]
    return lines[-n:]


def _bench_table(log: str) -> list[str]:
    """The table `crossent bench` prints: from its 'crossent bench on' line up to 'wrote …'."""
    lines = log.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("crossent bench on")), None)
    if start is None:
        return []
    end = next((i for i in range(start, len(lines)) if lines[i].startswith("wrote ")), len(lines))
    return lines[start:end]


def main(stage: Path, out: Path) -> None:
    parts = ["# GPU kit run (benchmarks/gpu/run.sh)", ""]
    steps = _read(stage / "steps.tsv").splitlines()
    parts += ["| step | result | exit code | seconds | cap (s) |", "|---|---|---|---|---|"]
    for line in steps:
        cells = line.split("\t")
        parts.append("| " + " | ".join(cells) + " |")
    parts.append("")
    env = _read(stage / "env.log")
    if env:
        parts += ["## Environment", "", "```", *env.rstrip().splitlines()[:60], "```", ""]
    for name, title in (("tests-gpu", "Tests marked gpu"), ("tests-triton", "Triton tests")):
        log = _read(stage / f"{name}.log")
        if log:
            parts += [f"## {title} (last lines)", "", "```", *_tail(log, 15), "```", ""]
    for name in ("bench-ce", "bench-allopts", "bench-linear", "bench-compile"):
        table = _bench_table(_read(stage / f"{name}.log"))
        if table:
            parts += [f"## {name}", "", "```", *table, "```", ""]
    sweep = _read(stage / "sweep" / "sweep.md")
    if "## Best config" in sweep:
        parts += [sweep[sweep.index("## Best config") :].replace("## ", "## Sweep: ", 1), ""]
        parts += ["(full ranked tables: sweep.md)", ""]
    text = "\n".join(parts) + "\n"
    out.write_text(text)
    (stage / "SUMMARY.md").write_text(text)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
