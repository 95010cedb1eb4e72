"""Smoke test of the benchmark harness: ``crossent bench --quick`` in-process, and its correctness gate.

No timing is asserted (the CI machines are shared and noisy): only that the run completes, writes its
files, gives every timed row a ratio to the floor, and refuses to time providers that are wrong.
"""

from __future__ import annotations

import csv
import json

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("matplotlib")
pytest.importorskip("tqdm")

from crossent.bench import providers as bench_providers  # noqa: E402
from crossent.bench import report  # noqa: E402
from crossent.bench.providers import Runner, TorchEager  # noqa: E402
from crossent.cli import main  # noqa: E402


class _WrongLoss(TorchEager):
    """Right gradients, loss 1% too large: must be caught by the loss check."""

    def prepare(self, case, inputs):
        inner = super().prepare(case, inputs).call

        def call():
            loss, grads = inner()
            return loss * 1.01, grads

        return Runner(call)


class _WrongGrad(TorchEager):
    """Right loss, gradients 10% too large: must be caught by the gradient check."""

    def prepare(self, case, inputs):
        inner = super().prepare(case, inputs).call

        def call():
            loss, grads = inner()
            return loss, tuple(g * 1.1 for g in grads)

        return Runner(call)


class _WritesInput(TorchEager):
    """Right values, but writes into its input (the way an in-place kernel would): must be caught."""

    def prepare(self, case, inputs):
        inner = super().prepare(case, inputs).call

        def call():
            out = inner()
            with torch.no_grad():
                inputs.leaves[0].mul_(1.0).add_(0.5)
            return out

        return Runner(call)


@pytest.fixture
def injected(monkeypatch):
    bad = [
        _WrongLoss("wrong-loss", "test: loss off by 1%", all_options=True),
        _WrongGrad("wrong-grad", "test: gradient off by 10%", all_options=True),
        _WritesInput(
            "writes-input", "test: mutates its input", all_options=True
        ),  # last: it spoils inputs
    ]
    monkeypatch.setattr(bench_providers, "_REGISTRY", [*bench_providers._REGISTRY, *bad])
    return [p.name for p in bad]


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_quick_bench_writes_results_and_gates_on_correctness(tmp_path, injected, capsys):
    threads = torch.get_num_threads()
    try:
        rc = main(
            [
                "bench",
                "--quick",
                "--device",
                "cpu",
                "--threads",
                "1",
                "--out",
                str(tmp_path),
                "--no-progress",
            ]
        )
    finally:
        torch.set_num_threads(threads)
    assert rc == 0
    for name in ("results.csv", "results.skipped.csv", "results.json", "results.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    assert (tmp_path / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    timed = _rows(tmp_path / "results.csv")
    assert timed
    for row in timed:  # every timed row has its ratio to the floor of the same case and run
        assert float(row["ratio_to_floor"]) > 0
        assert float(row["median_ms"]) > 0
        assert float(row["min_ms"]) <= float(row["median_ms"]) <= float(row["max_ms"])
        assert row["commit"] is not None and row["date"] and row["THP_MEM_ALLOC_ENABLE"]
        if row["provider"] == "floor":
            assert float(row["ratio_to_floor"]) == 1.0
    cases = {r["case"] for r in timed}
    assert len(cases) == 4  # logits and fused linear, each plain and with every option on
    for case in cases:
        provs = {r["provider"] for r in timed if r["case"] == case}
        assert {"floor", "crossent", "torch-eager"} <= provs, (case, provs)
        assert not provs & set(injected), (case, provs)
    assert any(r["kind"] == "linear" and r["tflop_per_s"] for r in timed)
    assert any(r["kind"] == "ce" and r["gb_per_s"] for r in timed)

    skipped = _rows(tmp_path / "results.skipped.csv")
    for name in injected:
        flagged = [s for s in skipped if s["provider"] == name]
        assert {s["case"] for s in flagged} == cases, name
        assert all(s["status"] == "wrong" for s in flagged), flagged
    assert any("loss" in s["reason"] for s in skipped if s["provider"] == "wrong-loss")
    assert any("gradient" in s["reason"] for s in skipped if s["provider"] == "wrong-grad")
    assert any("input" in s["reason"] for s in skipped if s["provider"] == "writes-input")

    payload = json.loads((tmp_path / "results.json").read_text())
    assert len(payload["rows"]) == len(timed)
    assert {"date", "commit", "machine", "THP_MEM_ALLOC_ENABLE", "v_torch"} <= set(
        payload["environment"]
    )
    out = capsys.readouterr().out
    assert "WRONG" in out and "× floor" in out

    # RESULTS.md is generated from the CSVs alone
    md_path = tmp_path / "RESULTS.md"
    with open(md_path, "w") as f:
        import contextlib

        with contextlib.redirect_stdout(f):
            assert (
                report.main([str(tmp_path / "results.csv"), str(tmp_path / "results.skipped.csv")])
                == 0
            )
    md = md_path.read_text()
    assert all(case in md for case in cases)
    assert "No GPU measurements" in md and "wrong-loss" in md


def test_list_names_every_provider(capsys):
    assert main(["bench", "--list", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    for p in bench_providers.all_providers():
        assert p.name in out
    assert "linear-4096x1024x32000-fp32" in out and "ce-65536x1000-fp32-allopts" in out


def test_regenerate_is_deterministic_and_includes_the_notes(tmp_path):
    results, notes = tmp_path / "benchmarks" / "results", tmp_path / "benchmarks" / "notes"
    results.mkdir(parents=True)
    notes.mkdir()
    env = {"date": "2026-01-02T03:04:05Z", "commit": "abc123", "host": "h", "device": "cpu"}
    env |= {"machine": "test CPU", "threads": "2", "THP_MEM_ALLOC_ENABLE": "unset"}
    case = {"case": "ce-8x16-fp32", "kind": "ce", "dtype": "fp32", "shape": "8x16"}
    case |= {"options": "plain", "status": "ok", "repeats": "3", "first_call_s": "0.1"}
    timing = {"median_ms": "2", "min_ms": "1", "max_ms": "3", "floor_ms": "1"}
    report.write_csv(
        results / "run_b.csv",
        [
            {**env, **case, **timing, "provider": "floor", "ratio_to_floor": "1"},
            {**env, **case, **timing, "provider": "crossent", "ratio_to_floor": "2.5"},
        ],
    )
    (results / "run_b.json").write_text("{}")  # a build output: never read
    note = "## A hand-written note\n\n| a | b |\n|---|---|\n| 1 | 2 |\n"
    (notes / "n.md").write_text(note)
    assert report.main(["--regenerate", "--root", str(tmp_path)]) == 0
    first = (tmp_path / "benchmarks" / "RESULTS.md").read_text()
    assert report.main(["--regenerate", "--root", str(tmp_path)]) == 0
    assert (tmp_path / "benchmarks" / "RESULTS.md").read_text() == first
    assert note.strip() in first and "`benchmarks/results/run_b.csv`" in first
    assert "2.50" in first and "json" not in first


def test_committed_results_page_is_generated_from_the_committed_csvs(tmp_path):
    import shutil
    from pathlib import Path

    repo = Path(__file__).resolve().parent.parent
    for sub in ("results", "notes"):
        src = repo / "benchmarks" / sub
        if src.exists():
            shutil.copytree(src, tmp_path / "benchmarks" / sub)
    out = report.regenerate(tmp_path)
    assert out.read_text() == (repo / "benchmarks" / "RESULTS.md").read_text(), (
        "benchmarks/RESULTS.md is stale: run `python -m crossent.bench.report --regenerate`"
    )
