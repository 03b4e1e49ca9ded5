"""Forward and backward solver iterations over training (claim 4), from ``compare`` JSON files.

``python -m deqkit.zoo.deq_seq.plots runs/deq-seq-compare.json runs/deq-seq-jr.json --out it.png``
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

__all__ = ["plot_iterations"]


def plot_iterations(results: dict[str, dict], out: Path) -> Path:
    """One line per run for forward (solid) and backward (dashed) iterations per training step.

    ``results`` maps a label to a ``compare`` JSON record (its ``models.deq.steps``).

    >>> import tempfile
    >>> steps = [{"step": i, "fwd_nstep": 2 + i, "bwd_nstep": 1 + i, "pretrain": False}
    ...          for i in range(3)]
    >>> out = Path(tempfile.mkdtemp()) / "it.png"
    >>> plot_iterations({"run": {"models": {"deq": {"steps": steps}}}}, out).stat().st_size > 0
    True
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for label, record in results.items():
        steps = [s for s in record["models"]["deq"]["steps"] if not s.get("pretrain")]
        x = [s["step"] for s in steps]
        (line,) = ax.plot(x, [s["fwd_nstep"] for s in steps], label=f"{label}: forward")
        back = [(s["step"], s["bwd_nstep"]) for s in steps if "bwd_nstep" in s]
        if back:
            ax.plot(
                *zip(*back, strict=True), "--", color=line.get_color(), label=f"{label}: backward"
            )
    ax.set_xlabel("training step")
    ax.set_ylabel("solver iterations")
    ax.legend(fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> Path:
    """Plot the runs named on the command line (label = file stem)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--out", type=Path, default=Path("runs/deq-seq-iterations.png"))
    args = p.parse_args(argv)
    results = {path.stem: json.loads(path.read_text()) for path in args.runs}
    return plot_iterations(results, args.out)


if __name__ == "__main__":
    print(main())
