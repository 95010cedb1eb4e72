"""The benchmark harness behind ``crossent bench``.

* :mod:`crossent.bench.cases`: what is measured (shapes, dtypes, options) and each case's floor;
* :mod:`crossent.bench.providers`: who is measured (crossent's backends and the installed peers);
* :mod:`crossent.bench.harness`: how (correctness check first, then timing and peak extra memory);
* :mod:`crossent.bench.report`: the printed table, long-format CSV/JSON, the PNG chart and
  ``benchmarks/RESULTS.md`` (``python -m crossent.bench.report benchmarks/results/*.csv``).

The harness sits at the edge of the package: nothing else in crossent imports it.
"""

from __future__ import annotations

__all__ = ["cases", "harness", "providers", "report"]
