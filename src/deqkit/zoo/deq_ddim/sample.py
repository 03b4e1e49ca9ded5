"""Sample a trained denoiser sequentially (DDIM) and as one fixed point (DEQ-DDIM) and compare:
``python -m deqkit.zoo.deq_ddim.sample CHECKPOINT --steps 20 50 100 --n 16 [--png grid.png]``
prints, per T, the sequential denoiser rounds, f evaluations, wall time and the max abs
difference of the DEQ x₀ from sequential DDIM's, with the DEQ's convergence rate."""

from __future__ import annotations

import argparse
import time

import torch

from .commands import load_denoiser, pixels, save_grid
from .ddpm import DDPM
from .sampler import CRITERIA, ddim_sample, deq_sample, draw_noise
from .schedule import ddim_steps

__all__ = ["compare", "main"]


def compare(
    model: DDPM,
    n_steps: int,
    x_T: torch.Tensor,
    eta: float = 0.0,
    tol: float = 1e-4,
    criterion: str = "per_state",
    seed: int = 0,
) -> dict:
    """Sequential DDIM vs DEQ-DDIM from the same x_T (and pre-drawn noise for η > 0).

    >>> from deqkit.zoo.deq_ddim.ddpm import DDPMConfig
    >>> model = DDPM(1, DDPMConfig(train_steps=100, unet={"channels": 8})).eval()
    >>> row = compare(model, 5, torch.randn(2, 1, 8, 8), tol=1e-4)
    >>> row["steps"], row["converged"], row["max_abs_diff"] < 1e-3
    (5, 1.0, True)
    """
    steps = ddim_steps(model.abar, n_steps, eta=eta)
    noise = draw_noise(steps, x_T, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        start = time.perf_counter()
        ref = ddim_sample(model.eps, x_T, steps, noise)
        seq_seconds = time.perf_counter() - start
        out = deq_sample(model.eps, x_T, steps, noise, tol=tol, criterion=criterion)
    return {
        "steps": n_steps,
        "eta": eta,
        "ddim_rounds": n_steps,
        "ddim_seconds": seq_seconds,
        "deq_rounds": out.rounds,
        "deq_nfev": out.solution.nfev,
        "deq_seconds": out.seconds,
        "converged": out.converged.float().mean().item(),
        "max_abs_diff": (out.x0 - ref).abs().max().item(),
        "ddim_x0": ref,
        "deq_x0": out.x0,
    }


def main(argv: list[str] | None = None) -> list[dict]:
    """Compare the two samplers on a checkpoint at each ``--steps`` T; print one line per T."""
    p = argparse.ArgumentParser(description="DDIM vs DEQ-DDIM sampling from a trained denoiser.")
    p.add_argument("checkpoint")
    p.add_argument("--steps", type=int, nargs="+", default=[20, 50, 100])
    p.add_argument("--n", type=int, default=16, help="images sampled (one batch)")
    p.add_argument("--eta", type=float, default=0.0)
    p.add_argument("--tol", type=float, default=1e-4)
    p.add_argument("--criterion", choices=CRITERIA, default="per_state")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--png", help="write the DEQ samples of the last T as a grid here")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    model, state = load_denoiser(args.checkpoint)
    info = state["data_info"]
    shape = (args.n, info["in_channels"], info["image_size"], info["image_size"])
    x_T = torch.randn(shape, generator=torch.Generator().manual_seed(args.seed))
    rows = []
    for n_steps in args.steps:
        row = compare(model, n_steps, x_T, args.eta, args.tol, args.criterion, args.seed)
        rows.append(row)
        print(
            f"T={n_steps} eta={args.eta} | DDIM: {n_steps} rounds {row['ddim_seconds']:.3f}s | "
            f"DEQ ({args.criterion} tol {args.tol:g}): {row['deq_rounds']} rounds, "
            f"{row['deq_nfev']} f-evals, {row['deq_seconds']:.3f}s, converged "
            f"{row['converged']:.0%} | max|x0_DEQ - x0_DDIM| = {row['max_abs_diff']:.2e}"
        )
    if args.png:
        save_grid(pixels(rows[-1]["deq_x0"], state), args.png)
        print(f"wrote {args.png}")
    return rows


if __name__ == "__main__":
    main()
