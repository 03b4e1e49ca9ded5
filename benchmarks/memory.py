"""Peak memory of one training step (forward + backward), one configuration per process.

Run as ``python benchmarks/memory.py PROBLEM BACKWARD MAX_ITER``; prints one JSON line. The
solve runs all ``max_iter`` iterations (tol far below reach) so memory grows with the budget
wherever it can. Two measures: the rise of peak RSS over the RSS just before the step (the
kernel's peak mark is reset first; allocator level, everything included), and the bytes of
distinct tensors autograd saved for backward (the graph alone, via ``saved_tensors_hooks``).
:func:`measure_all` runs every configuration in a fresh subprocess so no run inherits another's
allocator state.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent


def _status_bytes(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


def _reset_peak() -> int:
    """Reset the kernel's peak-RSS mark to the current RSS (Linux ≥ 4.0) and return the RSS.

    Without the reset, peaks from imports and setup (higher than a small training step) would
    hide the step's own peak."""
    Path("/proc/self/clear_refs").write_text("5")
    return _status_bytes("VmRSS")


def training_step(problem_key: str, backward: str, max_iter: int) -> dict:
    """One forward + backward of a DEQ on the problem; returns the two memory measures."""
    import problems

    import deqkit as dk

    torch.set_num_threads(2)
    problem = problems.make(problem_key)
    with torch.no_grad():
        problem.f(problem.z0)
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    gen = torch.Generator().manual_seed(7)
    readout = torch.randn(problem.z0.shape, generator=gen)
    before = _reset_peak()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        z, _ = dk.fixed_point(
            problem.f,
            problem.z0,
            "anderson",
            backward,
            tol=1e-30,
            max_iter=max_iter,
            on_failure="ignore",
        )
    # A random readout, as in backward_bench: ‖z‖² has no gradient through a normalised z*.
    loss = (z * readout).sum() / z.shape[0]
    loss.backward()
    params = sum(p.numel() * p.element_size() for p in problem.cell.parameters())
    graph = sum(saved.values())
    return {
        "problem": problem_key,
        "backward": backward,
        "max_iter": max_iter,
        "peak_rss_rise_bytes": _status_bytes("VmHWM") - before,
        "saved_tensor_bytes": graph,
        "parameter_bytes": params,
    }


def measure_all(problem_key: str, backwards, budgets, log) -> list[dict]:
    """Every (backward, max_iter) pair in its own subprocess, in order."""
    rows = []
    for max_iter in budgets:
        for backward in backwards:
            out = subprocess.run(
                [
                    sys.executable,
                    str(Path(__file__).resolve()),
                    problem_key,
                    backward,
                    str(max_iter),
                ],
                capture_output=True,
                text=True,
                check=True,
                cwd=HERE,
            )
            row = json.loads(out.stdout.strip().splitlines()[-1])
            log(
                f"  ({problem_key}) {backward:9s} max_iter {max_iter:3d}: peak RSS rise "
                f"{row['peak_rss_rise_bytes'] / 2**20:7.1f} MiB, saved tensors "
                f"{row['saved_tensor_bytes'] / 2**20:7.1f} MiB"
            )
            rows.append(row)
    return rows


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    print(json.dumps(training_step(sys.argv[1], sys.argv[2], int(sys.argv[3]))))
