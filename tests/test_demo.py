"""``crossent demo`` end to end, in-process, with the smallest budget."""

from __future__ import annotations

import re

import pytest

from crossent.cli import main


def test_demo_quick_run(tmp_path, capsys):
    code = main(["demo", "--quick", "--no-progress", "--out", str(tmp_path)])
    printed = capsys.readouterr().out
    assert code == 0, printed

    # the gradient check ran and passed, with differences at float64 rounding level
    assert "gradient check: passed" in printed
    diffs = [float(v) for v in re.findall(r"max \|diff\| (\S+)", printed)]
    assert len(diffs) == 3 and max(diffs) < 1e-12

    # the tutorial model learned: 10 classes, so chance is 0.1
    accuracy = float(re.search(r"test accuracy: ([0-9.]+)", printed).group(1))
    assert accuracy > 0.8

    # the table: a header and one row per dataset x method, each with its accuracy
    table = (tmp_path / "table.txt").read_text()
    assert table.strip() in printed
    rows = [line for line in table.splitlines() if line.startswith("digits")]
    assert len(rows) == 8
    for name in ("CE", "label smoothing", "focal", "class-weighted CE"):
        assert sum(name in row for row in rows) >= 2
    for row in rows:
        acc = float(row.split()[-11])  # acc NLL ECE | T NLL_T ECE_T | rec rec rec
        assert 0.5 < acc <= 1.0, row

    # the plots: non-empty PNGs
    pngs = sorted(tmp_path.glob("*.png"))
    assert {p.name for p in pngs} >= {
        "tutorial-loss.png",
        "digits-reliability.png",
        "digits-imbalanced-reliability.png",
        "digits-imbalanced-confidence.png",
        "digits-imbalanced-nll-per-class.png",
        "digits-val-nll.png",
    }
    for p in pngs:
        data = p.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000, p


def test_demo_help_explains_every_option(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["demo", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for option in (
        "--out",
        "--epochs",
        "--quick",
        "--lr",
        "--batch-size",
        "--hidden",
        "--label-smoothing",
        "--gamma",
        "--rare",
        "--rare-fraction",
        "--bins",
        "--threads",
        "--seed",
        "--no-plots",
        "--no-progress",
    ):
        assert option in text
    # every option has a help text (argparse prints the default for each documented option)
    assert text.count("(default:") >= 14


def test_demo_rejects_a_bad_budget(tmp_path, capsys):
    assert main(["demo", "--epochs", "0", "--no-plots", "--out", str(tmp_path)]) == 2
    with pytest.raises(SystemExit):
        main(["demo", "--rare", "12"])


def test_sgd_step_is_torch_optim_sgd():
    import torch

    from crossent.cli.demo import sgd_step

    torch.manual_seed(0)
    ours, theirs = torch.nn.Linear(5, 3).double(), torch.nn.Linear(5, 3).double()
    theirs.load_state_dict(ours.state_dict())
    params = list(ours.parameters())
    velocity = [torch.zeros_like(p) for p in params]
    opt = torch.optim.SGD(theirs.parameters(), lr=0.3, momentum=0.9)
    for _ in range(4):
        x, y = torch.randn(8, 5, dtype=torch.float64), torch.randint(0, 3, (8,))
        torch.nn.functional.cross_entropy(ours(x), y).backward()
        sgd_step(params, velocity, 0.3, 0.9)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(theirs(x), y).backward()
        opt.step()
        for a, b in zip(ours.parameters(), theirs.parameters()):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
