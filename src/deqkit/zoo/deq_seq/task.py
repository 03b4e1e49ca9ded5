"""Language-modelling training and evaluation with segment recurrence (memories carried over).

A plain loop used by the experiments of this package's README: contiguous-stream batches,
truncated BPTT through memories (detached), Adam with linear warm-up and cosine decay, gradient
clipping, optional unrolled pretraining of the DEQ for the first steps, and per-step solver
statistics (forward/backward steps, fraction of samples within the tolerance).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from deqkit.data.text import batchify, segments

from .model import SequenceLM

__all__ = ["LMRun", "evaluate_lm", "train_lm"]


@dataclass
class LMRun:
    """What :func:`train_lm` returns: per-step records and the final evaluation."""

    steps: list[dict] = field(default_factory=list)
    evals: list[dict] = field(default_factory=list)


def _solver_stats(sol) -> dict:
    out = {
        "fwd_nstep": float(sol.nstep.float().mean()),
        "fwd_converged": float(sol.converged.float().mean()),
        "fwd_residual": float(sol.residual.float().mean()),
    }
    back = getattr(sol, "backward", None)
    if back is not None:
        out["bwd_nstep"] = float(back.nstep.float().mean())
        out["bwd_converged"] = float(back.converged.float().mean())
    return out


@torch.no_grad()
def evaluate_lm(
    model: SequenceLM, stream: torch.Tensor, batch_size: int, seq_len: int, max_tokens: int = 0
) -> dict:
    """Mean NLL (nats/token), perplexity, bits per token and solver statistics over a stream.

    >>> from deqkit.zoo.deq_seq import SeqLMConfig
    >>> lm = SequenceLM(SeqLMConfig(block="lstm", d_model=4, d_hidden=4), vocab_size=5)
    >>> r = evaluate_lm(lm, torch.randint(0, 5, (200,)), 2, 10)
    >>> sorted(r)[:4], r["tokens"]
    (['bits', 'fwd_converged', 'fwd_nstep', 'fwd_residual'], 198)
    """
    was = model.training
    model.eval()
    rows = batchify(stream, batch_size)
    if max_tokens:
        rows = rows[:, : max(2, max_tokens // batch_size + 1)]
    total, count, memory, stats = 0.0, 0, None, []
    for x, y in segments(rows, seq_len):
        h, memory, sol = model(x, memory)
        total += float(model.loss(h, y)) * y.numel()
        count += y.numel()
        stats.append(_solver_stats(sol))
    model.train(was)
    nll = total / count
    out = {"nll": nll, "ppl": math.exp(min(nll, 50.0)), "bits": nll / math.log(2), "tokens": count}
    for key in stats[0]:
        out[key] = sum(s[key] for s in stats) / len(stats)
    return out


def train_lm(
    model: SequenceLM,
    train: torch.Tensor,
    val: torch.Tensor,
    *,
    steps: int,
    batch_size: int = 16,
    seq_len: int = 32,
    lr: float = 1e-3,
    warmup: int = 0,
    grad_clip: float = 0.25,
    pretrain_steps: int = 0,
    pretrain_depth: int = 2,
    eval_every: int = 0,
    eval_tokens: int = 0,
    jac_weight: float = 0.0,
    log: Callable[[dict], None] | None = None,
    seed: int = 0,
) -> LMRun:
    """Train ``model`` on the token stream ``train``; evaluate on ``val`` every ``eval_every``.

    The DEQ (if any) runs as a ``pretrain_depth``-layer weight-tied unroll for the first
    ``pretrain_steps`` steps. ``jac_weight`` scales ``sol.jac_loss`` (Jacobian regularisation,
    drawn with the DEQ's ``jac_reg_prob``) added to the loss.

    >>> from deqkit.zoo.deq_seq import SeqLMConfig
    >>> lm = SequenceLM(SeqLMConfig(block="lstm", d_model=4, d_hidden=4), vocab_size=5)
    >>> run = train_lm(lm, torch.randint(0, 5, (400,)), torch.randint(0, 5, (100,)), steps=3,
    ...                batch_size=2, seq_len=8)
    >>> len(run.steps), "loss" in run.steps[0], len(run.evals)
    (3, True, 1)
    """
    torch.manual_seed(seed)
    rows = batchify(train, batch_size)
    opt = torch.optim.Adam(model.parameters(), lr=lr)

    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * min(step, steps) / steps))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    deq = model.deq
    if deq is not None and pretrain_steps:
        deq.pretrain(pretrain_depth)
    run, memory, batches, step = LMRun(), None, iter(()), 0
    model.train()
    while step < steps:
        try:
            x, y = next(batches)
        except StopIteration:
            batches, memory = segments(rows, seq_len), None
            continue
        if deq is not None and pretrain_steps and step == pretrain_steps:
            deq.pretrain(0)
        start = time.perf_counter()
        h, memory, sol = model(x, memory)
        loss = model.loss(h, y)
        total = loss
        jac = sol.outputs.jac_loss if sol.outputs is not None else None
        if jac_weight and jac is not None:
            total = total + jac_weight * jac
        opt.zero_grad(set_to_none=True)
        total.backward()
        if grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        opt.step()
        sched.step()
        record = {"step": step, "loss": float(loss), "time": time.perf_counter() - start}
        record["pretrain"] = deq is not None and step < pretrain_steps
        record.update(_solver_stats(sol))
        run.steps.append(record)
        if log is not None:
            log(record)
        step += 1
        if (eval_every and step % eval_every == 0) or step == steps:
            result = {"step": step, **evaluate_lm(model, val, batch_size, seq_len, eval_tokens)}
            run.evals.append(result)
            if log is not None:
                log({"eval": result})
    return run
