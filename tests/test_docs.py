"""The runnable snippets of docs/*.md: every ``pycon`` block is a doctest, one namespace per section."""

from __future__ import annotations

import doctest
import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"
FENCE = re.compile(r"^```pycon\n(.*?)^```", re.MULTILINE | re.DOTALL)
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def sections() -> list[tuple[str, str]]:
    """(``file: heading``, the section's pycon blocks joined) for every section that has any."""
    out = []
    for path in sorted(DOCS.glob("*.md")):
        for chunk in re.split(r"^## ", path.read_text(), flags=re.MULTILINE)[1:]:
            blocks = FENCE.findall(chunk)
            if blocks:
                out.append((f"{path.name}: {chunk.splitlines()[0]}", "\n".join(blocks)))
    return out


SECTIONS = sections()


def test_every_concept_has_a_checked_snippet():
    names = " ".join(name for name, _ in SECTIONS)
    for concept in (
        "formula",
        "One-hot",
        "log-sum-exp",
        "P − Y",
        "weights",
        "Label smoothing",
        "Focal",
        "Binary and multi-label",
        "CE = H + KL",
        "Calibration",
    ):
        assert concept in names, concept


@pytest.mark.parametrize("name, source", SECTIONS, ids=[n for n, _ in SECTIONS])
def test_doc_section(name, source):
    test = doctest.DocTestParser().get_doctest(source, {}, name, name, 0)
    assert test.examples, name
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    runner.run(test, out=lambda text: pytest.fail(text, pytrace=False))
    assert runner.summarize(verbose=False).failed == 0
