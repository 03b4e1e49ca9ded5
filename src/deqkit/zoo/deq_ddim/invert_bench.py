"""Claim 3 on a trained denoiser: model inversion through the DEQ sampler (implicit and phantom
gradients) vs backpropagation through the sequential DDIM chain, at equal wall time, and the
activation memory of one gradient for several T.

``python -m deqkit.zoo.deq_ddim.invert_bench CHECKPOINT [--steps 20] [--n 4] [--seconds 60]
[--memory-steps 10 20 50] [--png curves.png]``

The targets are DDIM samples of the model itself (from other x_T), so a perfect inversion
exists; every method starts from x_T = 0 and gets the same optimisation wall-time budget. The
MSE curve is that of sequential DDIM from the logged x_T (measured off the clock).
"""

from __future__ import annotations

import argparse

import torch

from .commands import load_denoiser
from .model_inversion import METHODS, InversionOptions, invert_model, reconstruct
from .sampler import ddim_sample
from .schedule import ddim_steps

__all__ = ["activation_bytes", "main"]


def activation_bytes(model, n_steps: int, x_T: torch.Tensor, method: str, **options) -> int:
    """Bytes autograd saves for one inversion gradient (frozen denoiser; parameters excluded).

    >>> from deqkit.zoo.deq_ddim.ddpm import DDPM, DDPMConfig
    >>> model = DDPM(1, DDPMConfig(train_steps=100, unet={"channels": 8})).eval()
    >>> x = torch.zeros(1, 1, 8, 8)
    >>> activation_bytes(model, 4, x, "backprop") > activation_bytes(model, 4, x, "deq-phantom")
    True
    """
    from deqkit.zoo.deq_seq.memory import saved_tensor_bytes

    from .model_inversion import frozen

    steps = ddim_steps(model.abar, n_steps)
    opts = InversionOptions(method, **options)
    x = x_T.detach().clone().requires_grad_()

    def loss():
        x0, _, _ = reconstruct(model.eps, x, steps, opts)
        return x0.pow(2).sum()

    with frozen(model):
        return saved_tensor_bytes(loss)


def _plot(curves: dict, path: str, title: str, clock: str = "wall") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for method, run in curves.items():
        ax.semilogy(run.seconds, run.mse, marker="o", ms=3, label=method)
    ax.set_xlabel(f"optimisation time (s, {'CPU of 1 thread' if clock == 'process' else 'wall'})")
    ax.set_ylabel("per-pixel MSE of DDIM(x_T)")
    ax.set_title(title, fontsize=9)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    """Run the inversion comparison and the memory table; print Markdown tables."""
    p = argparse.ArgumentParser(description="DEQ-DDIM model inversion vs backprop (claim 3).")
    p.add_argument("checkpoint")
    p.add_argument("--steps", type=int, default=20, help="T of the inversion runs")
    p.add_argument("--n", type=int, default=4, help="target images (one batch)")
    p.add_argument("--seconds", type=float, default=60.0, help="wall budget per method")
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--memory-steps", type=int, nargs="*", default=[10, 20, 50])
    p.add_argument("--clock", choices=("wall", "process"), default="wall",
                   help="process: CPU time of this 1-thread process")  # fmt: skip
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--png", help="write the MSE-vs-time curves here")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    model, state = load_denoiser(args.checkpoint)
    info = state["data_info"]
    shape = (args.n, info["in_channels"], info["image_size"], info["image_size"])
    g = torch.Generator().manual_seed(args.seed)
    steps = ddim_steps(model.abar, args.steps)
    target = ddim_sample(model.eps, torch.randn(shape, generator=g), steps)
    curves = {}
    head = f"| method (T={args.steps}, {args.n} images, {args.seconds:g} s {args.clock}) | iters | "
    print(head + "MSE at 0 | MSE at 1/4 budget | MSE at end | DEQ rounds/iter | DEQ converged |")
    print("|---|---|---|---|---|---|---|")
    for method in args.methods:
        opts = InversionOptions(method, lr=args.lr, iters=10**6, seconds=args.seconds,
                                log_points=20, clock=args.clock)  # fmt: skip
        run = invert_model(model.eps, target, steps, opts, module=model)
        curves[method] = run
        quarter = min(range(len(run.seconds)), key=lambda i: abs(run.seconds[i] - args.seconds / 4))
        conv = "—" if run.converged is None else f"{run.converged:.0%}"
        rounds = "—" if run.rounds is None else f"{run.rounds:.1f}"
        print(f"| {method} | {run.iters[-1]} | {run.mse[0]:.2e} | {run.mse[quarter]:.2e} "
              f"| {run.mse[-1]:.2e} | {rounds} | {conv} |")  # fmt: skip
    memory = {}
    if args.memory_steps:
        print("\n| saved activation bytes (one gradient) | " +
              " | ".join(f"T={t}" for t in args.memory_steps) + " |")  # fmt: skip
        print("|---|" + "---|" * len(args.memory_steps))
        x_T = torch.randn(shape, generator=g)
        for method in args.methods:
            memory[method] = [activation_bytes(model, t, x_T, method) for t in args.memory_steps]
            cells = " | ".join(f"{b / 2**20:.2f} MiB" for b in memory[method])
            print(f"| {method} | {cells} |")
    if args.png:
        _plot(curves, args.png, f"inversion, T={args.steps}, {args.n} images", args.clock)
        print(f"wrote {args.png}")
    return {"curves": curves, "memory": memory}


if __name__ == "__main__":
    main()
