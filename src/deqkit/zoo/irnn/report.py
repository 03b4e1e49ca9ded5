"""Print a markdown table of finished runs: ``python -m deqkit.zoo.irnn.report DIR``.

Reads every ``*.jsonl`` written by :mod:`deqkit.zoo.irnn.experiment` (``--out``) or
:mod:`deqkit.zoo.irnn.block_experiment` in DIR and prints one row per run from its last record.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

__all__ = ["rows"]


def _fmt(value) -> str:
    if isinstance(value, list):
        return "/".join(_fmt(v) for v in value)
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1e3 else f"{value:.2e}"
    return str(value)


def rows(folder: str | Path) -> list[list[str]]:
    """One table row per run file in ``folder``: name, params, steps, test metric, s/step,
    forward iterations per solve and the fraction of solves within tolerance.

    >>> import tempfile, os
    >>> d = tempfile.mkdtemp()
    >>> lines = ['{"params": 10}', '{"step": 5, "test_metric": 0.5, "sec_per_step": 0.1}']
    >>> _ = open(os.path.join(d, "a.jsonl"), "w").write(chr(10).join(lines))
    >>> rows(d)
    [['a', '10', '5', '0.5', '0.1', '-', '-']]
    """
    table = []
    for path in sorted(Path(folder).glob("*.jsonl")):
        records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        records = [r for r in records if isinstance(r, dict)]
        final = [r for r in records if "step" in r]
        if not final:
            continue
        last = final[-1]
        params = next((r["params"] for r in records if "params" in r), "-")
        metric = last.get("test_metric", last.get("test_acc", "-"))
        converged = last.get("test_step_converged", last.get("test_converged", "-"))
        table.append([path.stem, _fmt(params), _fmt(last["step"]), _fmt(metric),
                      _fmt(last.get("sec_per_step", "-")), _fmt(last.get("test_nstep", "-")),
                      _fmt(converged)])  # fmt: skip
    return table


def main(argv: list[str] | None = None) -> None:
    folder = (argv if argv is not None else sys.argv[1:])[0]
    head = ["run", "params", "steps", "test metric", "s/step", "fwd it/solve", "converged"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for row in rows(folder):
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
