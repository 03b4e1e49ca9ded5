"""The measurements behind the README's claims, one subcommand each:

- ``zero``: the zero-flow EPE of a test set (the reference every trained EPE is divided by);
- ``warm``: a trained DEQ-Flow on smooth sequences from held-out photographs, each pair solved
  from zeros (cold) or from the previous pair's (h, flow) (warm): iterations to the tolerance and
  EPE against the iteration budget;
- ``memory``: bytes saved for backward by one training step against the forward budget, for the
  DEQ (phantom gradient) and the same block unrolled (RAFT);
- ``picture``: the colour-wheel picture of a test pair (frame, prediction, truth, error);
- ``curves``: training EPE of several runs (``metrics.jsonl``) side by side, as a PNG and a table.

``python -m deqkit.zoo.deq_flow.experiments zero --size 64 96``

>>> rows = memory_rows(budgets=(2, 4), size=(32, 48), batch=1, width=8)
>>> [r["model"] for r in rows], rows[0]["saved_mb"] == rows[1]["saved_mb"]
(['deq', 'deq', 'unrolled', 'unrolled'], True)
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

import deqkit as dk

from .metrics import end_point_error
from .model import DEQFlow, FlowConfig

__all__ = ["STARTS", "load_flow_model", "main", "memory_rows", "picture", "saved_bytes",
           "warm_rows", "zero_rows"]  # fmt: skip


def load_flow_model(path: str) -> tuple[DEQFlow, dict]:
    """The DEQ-Flow model of a ``deqkit train`` run (directory or checkpoint file), eval mode."""
    from deqkit.train.build import build_model
    from deqkit.train.checkpoint import load_checkpoint, load_model_state
    from deqkit.train.errors import CheckpointError
    from deqkit.train.recipe import parse

    file = Path(path) / "checkpoint.pt" if Path(path).is_dir() else Path(path)
    if not file.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    state = load_checkpoint(str(file))
    name = ((state.get("config") or {}).get("model") or {}).get("name")
    if name != "deq_flow":
        raise CheckpointError(f"{path} holds a {name!r} model, not deq_flow")
    model = build_model(parse(state["config"]), state["data_info"])
    load_model_state(model, state["model"], f"checkpoint {path}")
    return model.eval(), state


def _epe(pred: torch.Tensor, flow: torch.Tensor, valid: torch.Tensor) -> tuple[float, int]:
    err = end_point_error(pred, torch.nan_to_num(flow))[valid]
    return float(err.sum()), int(err.numel())


def zero_rows(size: tuple[int, int], test_pairs: int = 64) -> list[dict]:
    """Zero-flow EPE of the held-out synthetic pairs and of the motorcycle pair at ``size``."""
    from deqkit.data import DataContext
    from deqkit.data.flow import SOURCE, SyntheticFlowOptions

    rows = []
    for test_set in ("synthetic", "motorcycle"):
        options = SyntheticFlowOptions(size=size, test_pairs=test_pairs, test_set=test_set)
        test = SOURCE.load(options, DataContext()).test
        batch = test.batch(torch.arange(len(test)))
        total, count = _epe(torch.zeros_like(batch["flow"]), batch["flow"], batch["valid"])
        rows.append({"test_set": test_set, "pairs": len(test), "zero_flow_epe": total / count})
    return rows


#: Warm-start modes: from zeros, from the previous pair's (h, flow), or its flow with h = 0.
STARTS = ("cold", "warm", "warm_flow")


def _start(mode: str, z):
    if mode == "cold" or z is None:
        return None
    if mode == "warm":
        return z
    return torch.zeros_like(z[0]), z[1]


def _coarse_distance(a: torch.Tensor, b: torch.Tensor, factor: int) -> float:
    """Mean length of a - b over the 1/factor grid, in full-resolution pixels."""
    return float(factor * (a - b).square().sum(1).sqrt().mean())


def warm_rows(model: DEQFlow, sequences: int = 4, frames: int = 8, size=(64, 96),
              budgets=(2, 4, 6, 8, 12, 16, 24), seed: int = 0, tol: float | None = None,
              stop_mode: str | None = None, starts=("cold", "warm")) -> list[dict]:  # fmt: skip
    """Cold vs warm starts on smooth sequences (held-out photographs): per budget and start,
    EPE, converged share and mean iterations used, at the model's tolerance or ``tol`` /
    ``stop_mode``. A warm start (``STARTS``) begins from the previous pair's solution. The
    first pair of each sequence has no predecessor and is left out. Each row also gives
    ``to_cold``, the mean distance (px) of its final 1/4-grid flow to the cold solve's at the
    same budget, and for warm starts ``init_to_cold``, the distance of its initial flow.

    >>> cfg = FlowConfig(hidden=8, context=8, feature_dim=16, encoder_widths=(8, 8, 16),
    ...                  corr_dim=8, flow_dim=8, motion_dim=16, head_dim=16)
    >>> rows = warm_rows(DEQFlow(cfg, max_iter=3, on_failure="ignore").eval(), sequences=1,
    ...                  frames=3, size=(32, 48), budgets=(3,), tol=1e-3)
    >>> [r["start"] for r in rows], rows[0]["to_cold"], rows[1]["init_to_cold"] > 0
    (['cold', 'warm'], 0.0, True)
    """
    from deqkit.data.flow_synthetic import heldout_photos, smooth_sequence

    unknown = sorted(set(starts) - set(STARTS))
    if unknown or "cold" not in starts:
        raise ValueError(f"starts must include 'cold' and be among {STARTS}, got {starts}")
    g = torch.Generator().manual_seed(seed)
    photos = heldout_photos()
    seqs = [smooth_sequence(photos[i % len(photos)], size, frames, g) for i in range(sequences)]
    deq, rows, factor = model.deq, [], model.config.downsample
    saved = deq.eval_max_iter, deq.tol, deq.stop_mode
    deq.tol = deq.tol if tol is None else float(tol)
    deq.stop_mode = deq.stop_mode if stop_mode is None else stop_mode
    try:
        for budget in budgets:
            deq.eval_max_iter = budget
            cold: dict[tuple[int, int], torch.Tensor] = {}
            for mode in ["cold", *[s for s in starts if s != "cold"]]:
                total = count = steps = converged = pairs = 0
                to_cold = init_to_cold = 0.0
                for i, seq in enumerate(seqs):
                    z = None
                    for t in range(frames - 1):
                        a, b = seq["images"][t : t + 1], seq["images"][t + 1 : t + 2]
                        z0 = _start(mode, z)
                        with torch.no_grad():
                            flow, sol = model(a, b, z0=z0)
                        flow, z = flow[-1] if isinstance(flow, list) else flow, sol.z
                        if t == 0:
                            continue
                        if mode == "cold":
                            cold[i, t] = z[1]
                        else:
                            to_cold += _coarse_distance(z[1], cold[i, t], factor)
                            init_to_cold += _coarse_distance(z0[1], cold[i, t], factor)
                        e, n = _epe(flow, seq["flows"][t : t + 1], seq["valid"][t : t + 1])
                        total, count, pairs = total + e, count + n, pairs + 1
                        steps += int(sol.nstep.sum())
                        converged += int(sol.converged.sum())
                row = {"budget": budget, "tol": deq.tol, "stop_mode": deq.stop_mode,
                       "start": mode, "epe": total / count, "iterations": steps / pairs,
                       "converged": converged / pairs, "to_cold": to_cold / pairs}  # fmt: skip
                if mode != "cold":
                    row["init_to_cold"] = init_to_cold / pairs
                rows.append(row)
    finally:
        deq.eval_max_iter, deq.tol, deq.stop_mode = saved
    return rows


def saved_bytes(fn) -> int:
    """Bytes of the distinct tensor storages autograd saves for backward while ``fn()`` runs."""
    storages: dict[int, int] = {}

    def pack(t):
        storage = t.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(storages.values())


def memory_rows(budgets=(4, 8, 16, 32), size=(64, 96), batch: int = 4,
                width: int = 24) -> list[dict]:  # fmt: skip
    """Activation memory of one training forward (what backward keeps) against the forward
    budget: the DEQ (fixed-point solve without graph, one-step phantom gradient, one
    fixed-point-correction state) vs the same model unrolled ``budget`` times (RAFT)."""
    torch.manual_seed(0)
    a, b = torch.rand(batch, 3, *size), torch.rand(batch, 3, *size)
    base = dict(hidden=width, context=16, feature_dim=32, encoder_widths=(8, 16, 24),
                corr_dim=24, flow_dim=16, motion_dim=24, head_dim=32, downsample=8)  # fmt: skip
    rows = []
    for kind in ("deq", "unrolled"):
        for budget in budgets:
            cfg = FlowConfig(**base, unroll=budget if kind == "unrolled" else 0)
            model = DEQFlow(cfg, solver="fixed_point", backward=dk.Phantom(steps=1),
                            max_iter=budget, tol=1e-12, on_failure="ignore").train()  # fmt: skip

            def step(model=model):
                flow, _ = model(a, b)
                flows = flow if isinstance(flow, list) else [flow]
                return sum(f.square().mean() for f in flows)

            rows.append({"model": kind, "budget": budget, "saved_mb": saved_bytes(step) / 2**20})
    return rows


def _curves(runs: list[str], png: str | None, window: int) -> list[dict]:
    series = {}
    for run in runs:
        records = [json.loads(line) for line in (Path(run) / "metrics.jsonl").open()]
        train = [r for r in records if r.get("kind") == "train"]
        series[run] = [(r["step"], r["epe"]) for r in train]
    rows = []
    for run, points in series.items():
        for start in range(0, len(points), window):
            chunk = points[start : start + window]
            rows.append({"run": run, "steps": f"{chunk[0][0]}-{chunk[-1][0]}",
                         "train_epe": sum(e for _, e in chunk) / len(chunk)})  # fmt: skip
    if png:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 3.5))
        for run, points in series.items():
            steps = [s for s, _ in points]
            epe = torch.tensor([e for _, e in points])
            smooth = torch.nn.functional.avg_pool1d(
                epe[None, None], window, 1, count_include_pad=False
            )
            ax.plot(steps[window - 1 :], smooth[0, 0].tolist(), label=Path(run).name)
        ax.set_xlabel("training step")
        ax.set_ylabel(f"training EPE (px, mean of {window})")
        ax.legend()
        fig.tight_layout()
        fig.savefig(png, dpi=120)
    return rows


def picture(model: DEQFlow, test_set: str, size, png: str) -> list[dict]:
    """Write frame 1 | prediction | ground truth | error of the first test pair of ``test_set``
    (colour-wheel coding, 4x nearest-neighbour enlarged) to ``png``; return its EPE."""
    import numpy as np
    from skimage import io

    from deqkit.data import DataContext
    from deqkit.data.flow import SOURCE, SyntheticFlowOptions

    from .viz import flow_picture

    options = SyntheticFlowOptions(size=size, test_pairs=1, test_set=test_set)
    batch = SOURCE.load(options, DataContext()).test.batch(torch.arange(1))
    with torch.no_grad():
        flow, sol = model(batch["image1"], batch["image2"])
    flow = flow[-1] if isinstance(flow, list) else flow
    image = flow_picture(batch["image1"][0], flow[0], batch["flow"][0], batch["valid"][0])
    image = np.kron(image, np.ones((4, 4, 1)))
    io.imsave(png, (255 * np.clip(image, 0, 1)).astype(np.uint8), check_contrast=False)
    total, count = _epe(flow, batch["flow"], batch["valid"])
    return [{"test_set": test_set, "epe": total / count, "png": png}]


def main(argv: list[str] | None = None) -> list[dict]:
    """Run one measurement, print one JSON line per row, and return the rows."""
    p = argparse.ArgumentParser(prog="python -m deqkit.zoo.deq_flow.experiments")
    sub = p.add_subparsers(dest="command", required=True)
    z = sub.add_parser("zero", help="zero-flow EPE of the test sets")
    z.add_argument("--size", type=int, nargs=2, default=[64, 96])
    w = sub.add_parser("warm", help="cold vs warm starts on smooth sequences")
    w.add_argument("run")
    w.add_argument("--sequences", type=int, default=4)
    w.add_argument("--frames", type=int, default=8)
    w.add_argument("--budgets", default="2,4,6,8,12,16,24")
    w.add_argument("--tol", type=float, help="solver tolerance (default: the run's)")
    w.add_argument("--stop-mode", choices=["rel", "abs"], help="default: the run's")
    w.add_argument("--starts", default="cold,warm", help=f"comma-separated among {STARTS}")
    m = sub.add_parser("memory", help="activation memory against the forward budget")
    m.add_argument("--budgets", default="4,8,16,32")
    q = sub.add_parser("picture", help="colour-wheel picture of the first test pair")
    q.add_argument("run")
    q.add_argument("--test-set", default="motorcycle")
    q.add_argument("--png", required=True)
    c = sub.add_parser("curves", help="training EPE of runs side by side")
    c.add_argument("runs", nargs="+")
    c.add_argument("--png")
    c.add_argument("--window", type=int, default=50)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    if args.command == "zero":
        rows = zero_rows(tuple(args.size))
    elif args.command == "warm":
        model, state = load_flow_model(args.run)
        size = tuple(state["data_info"]["image_size"])
        budgets = tuple(int(v) for v in args.budgets.split(","))
        starts = tuple(args.starts.split(","))
        try:
            rows = warm_rows(model, args.sequences, args.frames, size, budgets, tol=args.tol,
                             stop_mode=args.stop_mode, starts=starts)  # fmt: skip
        except ValueError as exc:
            p.error(str(exc))
    elif args.command == "picture":
        model, state = load_flow_model(args.run)
        rows = picture(model, args.test_set, tuple(state["data_info"]["image_size"]), args.png)
    elif args.command == "memory":
        rows = memory_rows(tuple(int(v) for v in args.budgets.split(",")))
    else:
        rows = _curves(args.runs, args.png, args.window)
    for row in rows:
        print(json.dumps(row))
    return rows


if __name__ == "__main__":
    main()
