"""Fit one signal with a DEQ-MFN or an explicit MFN, and measure what the (Implicit)² claims need.

Full-batch Adam on the training coordinates, as in the paper, timing every step and counting the
applications of f; then evaluation on the train and test coordinates with a solve from zeros
(PSNR, SSIM on images, and the solve's convergence rate, iterations and residuals). The trainer
(``deqkit train``) runs the same models through the task in :mod:`.task`; this module is the
short path without the trainer that the README's benchmark and the tests use.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field

import torch
from torch import nn
from torchmetrics.functional.image import (
    peak_signal_noise_ratio,
    structural_similarity_index_measure,
)

import deqkit as dk
from deqkit.data.signals import Signal

__all__ = ["FitResult", "evaluate", "fit", "psnr", "saved_tensor_bytes"]

#: Values live in [−1, 1]: a data range of 2 gives the PSNR of the same images in [0, 1].
DATA_RANGE = 2.0


def psnr(pred: torch.Tensor, target: torch.Tensor) -> float:
    """PSNR in dB of values in [−1, 1] (torchmetrics, data range 2).

    >>> round(psnr(torch.zeros(4, 1), torch.full((4, 1), 0.2)), 2)  # 10·log10(4 / 0.04)
    20.0
    """
    return float(peak_signal_noise_ratio(pred, target, data_range=DATA_RANGE))


def _ssim(signal: Signal, index: torch.Tensor, pred: torch.Tensor) -> float | None:
    grid = signal.grid_of(index)
    if len(grid) != 2 or min(grid) < 11:  # SSIM's 11x11 Gaussian window needs a 2-D grid
        return None
    shape = (1, signal.channels, *grid)
    target = signal.values[index].T.reshape(shape)
    value = structural_similarity_index_measure(
        pred.T.reshape(shape), target, data_range=DATA_RANGE
    )
    return float(value)


def _solve_stats(sol: dk.Solution | None) -> dict:
    if sol is None:
        return {}
    return {
        "status": sol.status.name,
        "converged": float(sol.converged.float().mean()),
        "nstep_mean": float(sol.nstep.float().mean()),
        "nstep_max": int(sol.nstep.max()),
        "residual_mean": float(sol.residual.mean()),
        "residual_max": float(sol.residual.max()),
    }


@torch.no_grad()
def evaluate(model: nn.Module, signal: Signal, index: torch.Tensor) -> dict:
    """PSNR (and SSIM for images) on ``index``, with the eval-mode solve from zeros.

    The model is switched to eval mode for the call and restored afterwards. Non-finite
    predictions (a failed solve) give ``psnr = -inf`` rather than an exception.

    >>> from deqkit.data.signals import load_signal
    >>> from deqkit.zoo.deq_inr.model import DEQINR, INRConfig
    >>> s = load_signal("camera", resolution=16)
    >>> net = DEQINR(INRConfig(width=16, input_scale=16.0), 2, 1, len(s.coords), tol=1e-3)
    >>> r = evaluate(net, s, s.test_index)
    >>> sorted(r)[:4], r["status"]
    (['converged', 'nstep_max', 'nstep_mean', 'psnr'], 'CONVERGED')
    """
    was_training = model.training
    model.eval()
    try:
        pred, sol = model(signal.coords[index], index)
    finally:
        model.train(was_training)
    target = signal.values[index]
    finite = bool(torch.isfinite(pred).all())
    out = {"psnr": psnr(pred, target) if finite else float("-inf")}
    ssim = _ssim(signal, index, pred) if finite else None
    if ssim is not None:
        out["ssim"] = ssim
    out.update(_solve_stats(sol))
    return out


def saved_tensor_bytes(model: nn.Module, coords: torch.Tensor, index: torch.Tensor | None) -> int:
    """Bytes autograd keeps for the backward of one training forward (distinct storages).

    The memory a training step needs beyond the parameters: it grows with depth for explicit
    or unrolled networks and stays at one f call for a DEQ with an implicit/one-step backward.

    >>> from deqkit.zoo.deq_inr.model import ExplicitMFN, INRConfig
    >>> net = ExplicitMFN(INRConfig(width=8, explicit=True), 2, 1)
    >>> saved_tensor_bytes(net, torch.zeros(10, 2), torch.arange(10)) > 10 * 8 * 4
    True
    """
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out, _ = model(coords, index)
    del out
    return sum(seen.values())


@dataclass
class FitResult:
    """What :func:`fit` measured; ``history`` has one record per logged step."""

    steps: int
    seconds: float
    seconds_per_step: float
    f_per_step: float
    cpu_per_step: float
    f_first_step: int
    train: dict
    test: dict
    history: list[dict] = field(default_factory=list)


def fit(
    model: nn.Module,
    signal: Signal,
    steps: int,
    *,
    lr: float = 1e-3,
    log_every: int = 0,
    log=print,
) -> FitResult:
    """Full-batch Adam on the training coordinates with an MSE loss, then :func:`evaluate`.

    Args:
        model: :class:`~.model.DEQINR` or :class:`~.model.ExplicitMFN`: called as
            ``model(coords, index)`` and returning ``(values, solution or None)``.
        signal: the data, with its train/test split.
        steps: optimiser steps.
        lr: Adam learning rate.
        log_every: print a progress line every this many steps (0: never).
        log: where progress lines go.

    Returns:
        A :class:`FitResult`. ``f_per_step`` is the mean number of f applications (forward and
        backward re-evaluations; adjoint vector–Jacobian products not included) over the steps
        after the first; ``seconds_per_step`` is the median wall time of those steps (robust to
        other processes sharing the CPU), ``cpu_per_step`` their median CPU time of this process
        (``time.process_time``: what a step costs whatever the machine's load, all threads
        summed); ``seconds`` is the total wall time, first step included.

    >>> from deqkit.data.signals import load_signal
    >>> from deqkit.zoo.deq_inr.model import DEQINR, INRConfig
    >>> s = load_signal("camera", resolution=16)
    >>> net = DEQINR(INRConfig(width=16, input_scale=16.0), 2, 1, len(s.coords), tol=1e-3)
    >>> r = fit(net, s, steps=3)
    >>> r.f_per_step, r.test["converged"] > 0.9
    (1.0, True)
    """
    calls = [0]  # applications of f = calls of the MFN cell, in the solver and the backward
    handle = model.cell.register_forward_pre_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    coords, target = signal.coords[signal.train_index], signal.values[signal.train_index]
    index = torch.arange(len(signal.train_index))
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    times, cpu_times, fcalls, history = [], [], [], []
    try:
        for step in range(steps):
            calls[0] = 0
            start, cpu_start = time.perf_counter(), time.process_time()
            pred, sol = model(coords, index)
            loss = torch.nn.functional.mse_loss(pred, target)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            times.append(time.perf_counter() - start)
            cpu_times.append(time.process_time() - cpu_start)
            fcalls.append(calls[0])
            if log_every and (step % log_every == 0 or step == steps - 1):
                record = {
                    "step": step,
                    "loss": loss.item(),
                    "train_psnr": psnr(pred.detach(), target),
                }
                record.update({"f": calls[0], "seconds": times[-1]})
                if sol is not None:
                    record["residual"] = float(sol.residual.mean())
                history.append(record)
                log(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                             for k, v in record.items()))  # fmt: skip
    finally:
        handle.remove()
    later = slice(1, None) if steps > 1 else slice(None)
    return FitResult(
        steps=steps,
        seconds=sum(times),
        seconds_per_step=statistics.median(times[later]),
        f_per_step=sum(fcalls[later]) / len(fcalls[later]),
        cpu_per_step=statistics.median(cpu_times[later]),
        f_first_step=fcalls[0],
        train=evaluate(model, signal, signal.train_index),
        test=evaluate(model, signal, signal.test_index),
        history=history,
    )
