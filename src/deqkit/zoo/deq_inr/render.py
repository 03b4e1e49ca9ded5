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

__all__ = ["eval_picture", "main", "render", "write_picture"]


def render(
    checkpoint: str | Path, overrides: list[str] | tuple[str, ...] = ()
) -> tuple[np.ndarray, dict]:
    """The full-resolution picture (H, 3W + 4, 3) in [0, 1] and the evaluation report.

    ``checkpoint`` is a run directory or its ``checkpoint.pt``; ``overrides`` are ``KEY=VALUE``
    recipe overrides as for ``deqkit eval --set`` (e.g. ``deq.max_iter=200``). The report is
    :func:`~.fit.evaluate` on every grid coordinate (PSNR, SSIM, the solve).
    """
    from deqkit.train.build import build_model, prepare_data
    from deqkit.train.checkpoint import load_checkpoint, load_model_state
    from deqkit.train.recipe import apply_overrides, parse

    state = load_checkpoint(checkpoint)
    cfg = parse(apply_overrides(state["config"], list(overrides)))
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


def write_picture(picture: np.ndarray, out: str | Path) -> Path:
    """Save a picture in [0, 1] as an 8-bit PNG (parent folders created); returns the path."""
    from skimage import io

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    io.imsave(out, (picture * 255).round().astype(np.uint8), check_contrast=False)
    return out


def _default_png(checkpoint: Path) -> Path:
    return (checkpoint if checkpoint.is_dir() else checkpoint.parent) / "pictures" / "full.png"


def eval_picture(
    checkpoint: str | Path,
    overrides: list[str] | tuple[str, ...] = (),
    out: str | Path | None = None,
) -> tuple[Path, dict] | None:
    """What ``deqkit eval`` adds for DEQ-INR image runs: the full-resolution PNG.

    Returns ``(png_path, report)`` for a ``deq_inr`` run fitting an image (default path
    ``RUN/pictures/full.png``), ``None`` for any other run (another model, or a 1-D signal),
    so the command can call it on every checkpoint.

    >>> import tempfile
    >>> from deqkit.train.loop import train
    >>> from deqkit.train.recipe import load_config
    >>> run = Path(tempfile.mkdtemp()) / "run"
    >>> sets = ["train.steps=1", "data.resolution=12", "model.width=4", "model.input_scale=6.0"]
    >>> _ = train(load_config("deq-inr-camera", sets), run, progress=False)
    >>> png, report = eval_picture(run)
    >>> png.name, report["status"]
    ('full.png', 'CONVERGED')
    """
    from deqkit.train.checkpoint import load_checkpoint

    state = load_checkpoint(checkpoint)
    config = state.get("config") or {}
    data = config.get("data") or {}
    if (config.get("model") or {}).get("name") != "deq_inr" or data.get("signal") == "chirps":
        return None
    picture, report = render(checkpoint, overrides)
    return write_picture(picture, out or _default_png(Path(checkpoint))), report


def main(argv: list[str] | None = None) -> None:
    """Command line: ``python -m deqkit.zoo.deq_inr.render RUN [--out FILE.png]``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", help="a run directory or its checkpoint.pt")
    parser.add_argument("--out", default=None, help="PNG path (default RUN/pictures/full.png)")
    args = parser.parse_args(argv)
    run = Path(args.run)
    checkpoint = run / "checkpoint.pt" if run.is_dir() else run
    picture, report = render(checkpoint)
    out = write_picture(picture, args.out or _default_png(checkpoint))
    solve = {k: report[k] for k in ("status", "converged", "nstep_mean") if k in report}
    print(f"{out}: PSNR {report['psnr']:.2f} dB over every pixel; test-time solve {solve}")


if __name__ == "__main__":
    main()
