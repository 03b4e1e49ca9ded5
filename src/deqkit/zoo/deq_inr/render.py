"""Render a trained DEQ-INR run at full resolution: reconstruction, original, error map (PNG).

``python -m deqkit.zoo.deq_inr.render RUN_DIR_OR_CHECKPOINT [--out FILE.png]`` rebuilds the
model from the checkpoint, evaluates it at every grid coordinate (for the generalisation split
too, so the held-out pixels appear between the trained ones) with the eval-mode solve from
zeros, writes the picture and prints PSNR and the solve's convergence. Images only.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from deqkit.plot import side_by_side

from .fit import evaluate

__all__ = ["main", "render"]


def render(checkpoint: str | Path) -> tuple[np.ndarray, dict]:
    """The full-resolution picture (H, 3W + 4, 3) in [0, 1] and the evaluation report.

    The report is :func:`~.fit.evaluate` on every grid coordinate (PSNR, SSIM, the solve).
    """
    from deqkit.train.build import build_model, prepare_data
    from deqkit.train.checkpoint import load_checkpoint, load_model_state
    from deqkit.train.recipe import parse

    state = load_checkpoint(checkpoint)
    cfg = parse(state["config"])
    data = prepare_data(cfg, state.get("data_state"))
    signal = data.test.signal
    if len(signal.grid) != 2:
        raise ValueError(f"render draws images; this run fits a {len(signal.grid)}-D signal")
    model = build_model(cfg, data.info)
    load_model_state(model, state["model"], f"checkpoint {checkpoint}")
    everything = torch.arange(len(signal.coords))
    model.eval()
    with torch.no_grad():
        pred, _ = model(signal.coords, everything)
    report = evaluate(model, signal, everything)

    def as_image(values: torch.Tensor) -> np.ndarray:
        return ((signal.as_grid(values).permute(1, 2, 0) + 1) / 2).numpy()

    error = (pred - signal.values).abs().mean(1, keepdim=True)
    error = error / error.max().clamp_min(1e-12)
    return side_by_side(as_image(pred), as_image(signal.values), as_image(error * 2 - 1)), report


def main(argv: list[str] | None = None) -> None:
    """Command line: ``python -m deqkit.zoo.deq_inr.render RUN [--out FILE.png]``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", help="a run directory or its checkpoint.pt")
    parser.add_argument("--out", default=None, help="PNG path (default RUN/pictures/full.png)")
    args = parser.parse_args(argv)
    run = Path(args.run)
    checkpoint = run / "checkpoint.pt" if run.is_dir() else run
    picture, report = render(checkpoint)
    out = Path(args.out) if args.out else checkpoint.parent / "pictures" / "full.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    from skimage import io

    io.imsave(out, (picture * 255).round().astype(np.uint8), check_contrast=False)
    solve = {k: report[k] for k in ("status", "converged", "nstep_mean") if k in report}
    print(f"{out}: PSNR {report['psnr']:.2f} dB over every pixel; test-time solve {solve}")


if __name__ == "__main__":
    main()
