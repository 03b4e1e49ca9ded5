"""Claim (2) of the DEQ paper at CPU scale, in one run: a one-layer DEQ-Transformer against the
L-layer weight-tied unroll (and an untied stack) of the same block on character-level text —
bits per character, convergence rate, and training memory measured side by side.

``python -m deqkit.zoo.deq_seq.compare --steps 3000 --out runs/deq-seq-compare.json``
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import deqkit as dk
from deqkit.data.text import load_text

from .memory import peak_tensor_bytes, saved_tensor_bytes
from .model import SeqLMConfig, SequenceLM
from .task import evaluate_lm, train_lm

__all__ = ["deq_options", "measure_memory", "main"]


def deq_options(max_iter: int, tol: float, solver: str = "anderson", **extra) -> dict:
    """The DEQ settings of the comparison: forward solver, implicit backward (Broyden-free)."""
    return {
        "solver": solver,
        "tol": tol,
        "max_iter": max_iter,
        "stop_mode": "rel",
        "on_failure": "ignore",
        "backward": dk.Implicit(tol=tol, max_iter=max_iter),
        **extra,
    }


def measure_memory(model: SequenceLM, tokens: torch.Tensor) -> dict:
    """Saved-tensor bytes and peak live tensor bytes of one training step on ``tokens``.

    >>> lm = SequenceLM(SeqLMConfig(block="lstm", d_model=4, d_hidden=4), vocab_size=5)
    >>> sorted(measure_memory(lm, torch.randint(0, 5, (2, 6))))
    ['peak_bytes', 'saved_bytes']
    """
    tokens = tokens.clone()  # a view would charge the whole stream's storage to the embedding
    x, y = tokens[:, :-1], tokens[:, 1:]

    def loss():
        h, _, _ = model(x)
        return model.loss(h, y)

    def step():
        model.zero_grad(set_to_none=True)
        loss().backward()

    step()  # one-off allocations (autograd, workspaces) outside the measurement
    saved = saved_tensor_bytes(loss, exclude=list(model.parameters()))
    return {"saved_bytes": saved, "peak_bytes": peak_tensor_bytes(step)}


def main(argv: list[str] | None = None) -> dict:
    """Train each model, evaluate on the test split, measure memory, write JSON."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--corpus", default="wiki-sample")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seq-len", type=int, default=32)
    p.add_argument("--mem-len", type=int, default=32)
    p.add_argument("--d-model", type=int, default=64)
    p.add_argument("--depth", type=int, default=6, help="layers of the explicit baselines")
    p.add_argument("--max-iter", type=int, default=12)
    p.add_argument("--tol", type=float, default=1e-2)
    p.add_argument("--solver", default="anderson")
    p.add_argument("--pretrain", type=int, default=300)
    p.add_argument("--models", default="deq,unrolled")
    p.add_argument("--init-std", type=float, default=0.05)
    p.add_argument("--jac-weight", type=float, default=0.0, help="JR weight (0: off)")
    p.add_argument("--jac-prob", type=float, default=0.35)
    p.add_argument("--eval-tokens", type=int, default=50_000)
    p.add_argument("--memory-iters", default="8,16,32", help="DEQ budgets of --steps 0")
    p.add_argument(
        "--subseq-lens", default="", help="--steps 0: also the DEQ with these subseq_len values"
    )
    p.add_argument("--out", type=Path, default=Path("runs/deq-seq-compare.json"))
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    data = load_text(args.corpus, "char")
    if args.steps == 0:
        return _memory_only(args, data)
    base = dict(
        d_model=args.d_model, n_head=4, d_inner=2 * args.d_model, mem_len=args.mem_len,
        init_std=args.init_std,
    )  # fmt: skip
    results: dict = {"args": {k: str(v) for k, v in vars(args).items()}, "models": {}}
    for name in args.models.split(","):
        torch.manual_seed(0)
        mode, layers = (name, args.depth) if name != "deq" else ("deq", 1)
        cfg = SeqLMConfig(mode=mode, layers=layers, **base)
        opts = {}
        if mode == "deq":
            jac = {"jac_reg_prob": args.jac_prob} if args.jac_weight else {}
            opts = deq_options(args.max_iter, args.tol, args.solver, **jac)
        model = SequenceLM(cfg, len(data.vocab), **opts)
        started = time.time()
        run = train_lm(
            model, data.train, data.val, steps=args.steps, batch_size=args.batch,
            seq_len=args.seq_len, lr=2e-3, warmup=100,
            pretrain_steps=args.pretrain if mode == "deq" else 0, pretrain_depth=2,
            eval_every=max(args.steps // 5, 1), eval_tokens=args.eval_tokens,
            jac_weight=args.jac_weight,
            log=lambda r, n=name: print(n, json.dumps(r), flush=True) if "eval" in r else None,
        )  # fmt: skip
        test = evaluate_lm(model, data.test, args.batch, args.seq_len, args.eval_tokens)
        tokens = data.train[: args.batch * (args.seq_len + 1)].reshape(args.batch, -1)
        results["models"][name] = {
            "params": sum(p.numel() for p in model.parameters()),
            "test": test,
            "evals": run.evals,
            "steps": run.steps[:: max(len(run.steps) // 200, 1)],
            "train_seconds": time.time() - started,
            "memory": measure_memory(model, tokens),
        }
        print(name, "test", json.dumps(test), results["models"][name]["memory"], flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))
    return results


def _memory_only(args, data) -> dict:
    """Training memory of the DEQ at several budgets and of the explicit baselines, no training."""
    tokens = data.train[: args.batch * (args.seq_len + 1)].reshape(args.batch, -1)
    base = dict(
        d_model=args.d_model, n_head=4, d_inner=2 * args.d_model, mem_len=args.mem_len,
        init_std=args.init_std,
    )  # fmt: skip
    rows = {}
    for budget in (int(b) for b in args.memory_iters.split(",")):
        torch.manual_seed(0)
        # tol 0: every solve spends the whole budget, the worst case for memory
        opts = deq_options(budget, 1e-30, args.solver)
        model = SequenceLM(SeqLMConfig(**base), len(data.vocab), **opts)
        rows[f"deq max_iter={budget}"] = measure_memory(model, tokens)
    for n in (int(n) for n in args.subseq_lens.split(",") if n.strip()):
        # A segment solved in parts of n positions (paper App. E), at the largest budget
        torch.manual_seed(0)
        opts = deq_options(budget, 1e-30, args.solver)
        model = SequenceLM(SeqLMConfig(subseq_len=n, **base), len(data.vocab), **opts)
        rows[f"deq max_iter={budget} subseq_len={n}"] = measure_memory(model, tokens)
    for name in args.models.split(","):
        if name == "deq":
            continue
        torch.manual_seed(0)
        model = SequenceLM(SeqLMConfig(mode=name, layers=args.depth, **base), len(data.vocab))
        rows[f"{name} layers={args.depth}"] = measure_memory(model, tokens)
    for name, row in rows.items():
        saved, peak = row["saved_bytes"] / 2**20, row["peak_bytes"] / 2**20
        print(f"{name:24s} saved {saved:8.2f} MiB  peak {peak:8.2f} MiB")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=1))
    return rows


if __name__ == "__main__":
    main()
