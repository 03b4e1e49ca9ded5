"""The (Implicit)² claims at CPU scale, each next to its baseline: one command per table.

``python -m deqkit.zoo.deq_inr.bench quality`` (and ``amortize``, ``generalize``, ``nonorm``)
fits the models of one claim with :func:`~.fit.fit` and prints a Markdown table: parameters,
PSNR/SSIM, training time per step (wall and CPU), f applications per step, autograd memory of
a training step, and, for every DEQ, the convergence of the test-time solve from zeros
(fraction of coordinates within tolerance, iterations, largest residual, status). Seeds are
fixed; "s/step" is wall clock on whatever machine runs it, "CPU s/step" this process's CPU
time (load-independent on a shared machine; one thread by default).
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

from deqkit.data.signals import load_signal

from .fit import fit, saved_tensor_bytes
from .model import DEQINR, ExplicitMFN, INRConfig, count_parameters

__all__ = ["CLAIMS", "main", "run_claim"]

CLAIMS = ("quality", "amortize", "generalize", "nonorm")

_HEADER = (
    "| model | params | train PSNR | test PSNR | SSIM | s/step | CPU s/step | f/step | saved MB | "
    "test solve: converged, iters mean/max, max residual, status |\n"
    "|---|---|---|---|---|---|---|---|---|---|"
)


def _deq_options(args, backward: str = "one_step") -> dict:
    return {
        "solver": "fixed_point", "backward": backward, "tol": args.tol,
        "max_iter": args.max_iter, "stop_mode": "rel", "on_failure": "ignore",
    }  # fmt: skip


def _input_scale(claim: str, args) -> float:
    # The paper's ratios: camera at 512 px with scale 256 (representation), 512 px images with
    # scale 128 trained on their even pixels (generalisation).
    if args.input_scale is not None:
        return float(args.input_scale)
    return args.resolution / (4 if claim == "generalize" else 2)


def _variants(claim: str, args) -> list[tuple[str, dict, dict | None]]:
    base = {"filter": args.filter, "width": args.width, "layers": args.layers,
            "input_scale": _input_scale(claim, args), "norm_mode": args.norm_mode}  # fmt: skip
    explicit = [("explicit MFN", {**base, "explicit": True, "spectral_norm": False}, None)]
    if args.explicit_norm != "none":
        # (Implicit)^2's explicit baselines carry the same spectral norm as its DEQs.
        normed = ("explicit MFN + spectral norm", {**base, "explicit": True}, None)
        explicit = [normed] if args.explicit_norm == "spectral" else [*explicit, normed]
    amortised = {**base, "amortize_steps": args.amortize_steps,
                 "amortize_neumann": args.amortize_neumann}  # fmt: skip
    deq = ("DEQ-MFN amortised", amortised, _deq_options(args))
    if claim in ("quality", "generalize"):
        rows = [*explicit, deq]
        return [
            r for r in rows if args.only == "all" or (r[2] is None) == (args.only == "explicit")
        ]
    if claim == "amortize":
        resolve = ("DEQ-MFN re-solve every step", {**base, "amortize": False}, _deq_options(args))
        return [deq, resolve]
    nonorm = ("DEQ-MFN no spectral norm", {**base, "spectral_norm": False}, _deq_options(args))
    return [deq, nonorm]


def _row(name: str, params: int, result, saved: int) -> str:
    t = result.test
    ssim = f"{t['ssim']:.3f}" if "ssim" in t else "-"
    solve = "-"
    if "status" in t:
        solve = (
            f"{100 * t['converged']:.1f}%, {t['nstep_mean']:.1f}/{t['nstep_max']}, "
            f"{t['residual_max']:.1e}, {t['status']}"
        )
    return (
        f"| {name} | {params} | {result.train['psnr']:.2f} | {t['psnr']:.2f} | {ssim} | "
        f"{result.seconds_per_step:.3f} | {result.cpu_per_step:.3f} | "
        f"{result.f_per_step:.2f} (first {result.f_first_step}) | "
        f"{saved / 2**20:.1f} | {solve} |"
    )


def run_claim(claim: str, args) -> tuple[str, list[dict]]:
    """Fit every model of ``claim`` and return the Markdown table and the raw records."""
    split = "generalization" if claim == "generalize" else "full"
    signal = load_signal(args.signal, resolution=args.resolution, split=split)
    lines, records = [_HEADER], []
    for name, options, deq_options in _variants(claim, args):
        torch.manual_seed(args.seed)
        config = INRConfig.from_dict(options)
        n_train = len(signal.train_index)
        if config.explicit:
            model = ExplicitMFN(config, signal.in_features, signal.channels)
        else:
            model = DEQINR(config, signal.in_features, signal.channels, n_train, **deq_options)
        index = torch.arange(n_train)
        saved = saved_tensor_bytes(model, signal.coords[signal.train_index], index)
        if hasattr(model, "cache"):
            model.cache.clear()  # the measurement above must not count as a training step
        print(f"# {claim}: {name}", file=sys.stderr, flush=True)
        log = (lambda line: print(line, file=sys.stderr, flush=True)) if args.verbose else None
        result = fit(model, signal, args.steps, lr=args.lr, log_every=args.log_every if log else 0,
                     log=log or print)  # fmt: skip
        lines.append(_row(name, count_parameters(model), result, saved))
        records.append({"claim": claim, "model": name, "params": count_parameters(model),
                        "saved_bytes": saved, **result.__dict__})  # fmt: skip
    if claim == "quality" and args.only != "explicit":
        # What the DEQ would cost without an implicit backward: backprop through every
        # iteration of the solve from zeros, an explicit network as deep as the solve.
        torch.manual_seed(args.seed)
        config = INRConfig.from_dict(_variants(claim, args)[-1][1])
        unrolled = DEQINR(config, signal.in_features, signal.channels, len(signal.train_index),
                          **_deq_options(args, backward="unrolled"))  # fmt: skip
        saved = saved_tensor_bytes(unrolled.eval(), signal.coords[signal.train_index], None)
        lines.append(
            f"\nSame DEQ, backprop through its solve from zeros: {saved / 2**20:.1f} MB saved."
        )
    setting = (
        f"{args.signal} {args.resolution}x{args.resolution} ({split} split), {args.filter} "
        f"{args.layers}L-{args.width}D, input scale {_input_scale(claim, args):g}, "
        + (f"{args.amortize_steps} f per amortised step, " if args.amortize_steps != 1 else "")
        + (
            f"amortised gradient I + {args.amortize_neumann} Jᵀ term(s), "
            if args.amortize_neumann
            else ""
        )
        + (f"spectral norm {args.norm_mode}ed, " if args.norm_mode != "scale" else "")
        + f"{args.steps} full-batch Adam steps, lr {args.lr}, "
        f"Picard tol {args.tol} (rel) max {args.max_iter}, seed {args.seed}"
    )
    return f"**{claim}**: {setting}\n\n" + "\n".join(lines), records


def main(argv: list[str] | None = None) -> None:
    """Command line: ``python -m deqkit.zoo.deq_inr.bench CLAIM [options]``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("claim", choices=CLAIMS + ("all",))
    parser.add_argument("--signal", default="camera")
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--filter", default="fourier")
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--layers", type=int, default=1)
    parser.add_argument("--input-scale", type=float, default=None)
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--tol", type=float, default=1e-3)
    parser.add_argument("--max-iter", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", choices=("all", "explicit", "deq"), default="all",
                        help="quality/generalize: fit only these rows (parallel runs)")  # fmt: skip
    parser.add_argument(
        "--norm-mode",
        choices=("scale", "clamp"),
        default="scale",
        help="spectral norm = target (scale) or <= target (clamp, as ImpSq)",
    )
    parser.add_argument("--amortize-steps", type=int, default=1, help="f per amortised step")
    parser.add_argument(
        "--amortize-neumann",
        type=int,
        default=0,
        help="Jᵀ terms in the amortised step's gradient (1: ImpSq's one-step I + Jᵀ; 0: I)",
    )
    parser.add_argument(
        "--explicit-norm",
        choices=("none", "spectral", "both"),
        default="none",
        help="spectral norm on the explicit baseline (ImpSq's baselines have it)",
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--log-every", type=int, default=50)
    parser.add_argument("--verbose", action="store_true")
    parser.add_argument("--json", default=None, help="also write the raw records here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    claims = CLAIMS if args.claim == "all" else (args.claim,)
    records = []
    for claim in claims:
        table, recs = run_claim(claim, args)
        print(table + "\n", flush=True)
        records += recs
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(records, fh, indent=1, default=float)


if __name__ == "__main__":
    main()
