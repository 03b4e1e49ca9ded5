"""Peak memory of one training step (forward + backward), one configuration per process.

Run as ``python benchmarks/memory.py PROBLEM BACKWARD MAX_ITER``; prints one JSON line. The
solve runs all ``max_iter`` iterations (tol far below reach) so memory grows with the budget
wherever it can. Three measures: the peak of live tensor bytes from the profiler's allocator
events (the target measure: deterministic), the rise of peak RSS over the RSS just before the
step (after an identical warm-up step and ``malloc_trim``; the kernel's peak mark is reset
first; everything included, C-heap slack too), and the bytes of
distinct tensors autograd saved for backward (the graph alone, via ``saved_tensors_hooks``).
:func:`measure_all` runs every configuration in a fresh subprocess so no run inherits another's
allocator state.
"""

from __future__ import annotations

import ctypes
import gc
import json
import statistics
import subprocess
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
#: Measured steps per configuration (after the warm-up step); the median is reported.
REPEATS = 3


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


def _release_free_heap() -> None:
    """Return freed heap memory to the kernel (glibc ``malloc_trim``), so that RSS counts what
    is live and the next step's allocations show up in its peak."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: the measure keeps the allocator's slack
        pass


def _peak_tensor_bytes(step) -> int:
    """Peak of live tensor bytes allocated during ``step``, from the profiler's allocator events.

    Deterministic where RSS is not: it counts what the CPU allocator hands out, not what the C
    heap keeps. deqkit's pool of solver history buffers is emptied first, so the step allocates
    (and is charged for) its own buffers."""
    from deqkit import clear_buffer_pool
    from deqkit.zoo.deq_seq.memory import peak_tensor_bytes

    clear_buffer_pool()
    return peak_tensor_bytes(step)


def training_step(problem_key: str, backward: str, max_iter: int) -> dict:
    """One forward + backward of a DEQ on the problem; returns the two memory measures.

    A first, identical step runs unmeasured: one-off costs (autograd and thread-pool start-up,
    BLAS workspaces, the first backward of each op) would otherwise be a larger and noisier part
    of the peak than the step itself. Then ``REPEATS`` measured steps; the median peak rise is
    reported (allocator behaviour moves single measurements by a few MiB)."""
    import problems

    import deqkit as dk

    torch.set_num_threads(2)
    problem = problems.make(problem_key)
    gen = torch.Generator().manual_seed(7)
    readout = torch.randn(problem.z0.shape, generator=gen)
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    def step() -> None:
        problem.cell.zero_grad(set_to_none=True)
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

    step()
    peak_alloc = _peak_tensor_bytes(step)
    rises = []
    for _ in range(REPEATS):
        saved.clear()
        _release_free_heap()
        before = _reset_peak()
        step()
        rises.append(_status_bytes("VmHWM") - before)
    params = sum(p.numel() * p.element_size() for p in problem.cell.parameters())
    graph = sum(saved.values())
    return {
        "problem": problem_key,
        "backward": backward,
        "max_iter": max_iter,
        "peak_alloc_bytes": peak_alloc,
        "peak_rss_rise_bytes": statistics.median(rises),
        "peak_rss_rise_each": rises,
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
                f"  ({problem_key}) {backward:9s} max_iter {max_iter:3d}: peak tensor bytes "
                f"{row['peak_alloc_bytes'] / 2**20:7.1f} MiB, peak RSS rise "
                f"{row['peak_rss_rise_bytes'] / 2**20:7.1f} MiB, saved tensors "
                f"{row['saved_tensor_bytes'] / 2**20:7.1f} MiB"
            )
            rows.append(row)
    return rows


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    print(json.dumps(training_step(sys.argv[1], sys.argv[2], int(sys.argv[3]))))
