"""Forward and backward time per step of the implicit incremental RNN against the length T.

``python -m deqkit.zoo.irnn.backward_cost 100 200 400 800`` prints one line per T. With an
implicit backward whose VJPs walk only one step's graph, the backward time per step does not
grow with T; before the core fix (commit f9ea4e4) it grew linearly (the whole backward O(T²)).
"""

from __future__ import annotations

import argparse
import time

import torch

from .model import IncrementalRNN

__all__ = ["step_times"]


def step_times(length: int, hidden: int = 8, batch: int = 8, seed: int = 0) -> dict[str, float]:
    """Seconds per time step of one forward and one backward over a random sequence.

    >>> times = step_times(5, hidden=4, batch=2)
    >>> sorted(times), times["backward"] > 0
    (['backward', 'forward', 'grad_norm'], True)
    """
    torch.manual_seed(seed)
    deq = {"tol": 1e-3, "max_iter": 10, "solver": "anderson"}
    rnn = IncrementalRNN(1, hidden, variant="implicit", activation="tanh", recurrent="stable",
                         init_scale=0.3, deq=deq)  # fmt: skip
    x = torch.randn(batch, length, 1)
    start = time.perf_counter()
    h, _ = rnn(x)
    mid = time.perf_counter()
    h[:, -1].sum().backward()
    end = time.perf_counter()
    grad = rnn.cell.U.grad
    assert grad is not None
    return {
        "forward": (mid - start) / length,
        "backward": (end - mid) / length,
        "grad_norm": grad.norm().item(),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("lengths", type=int, nargs="*", default=[100, 200, 400, 800])
    parser.add_argument("--hidden", type=int, default=8)
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    step_times(10, args.hidden, args.batch)  # warm-up: the first backward pays one-off costs
    for length in args.lengths:
        t = step_times(length, args.hidden, args.batch)
        ms = {key: value * 1e3 for key, value in t.items()}
        print(f"T={length}: forward {ms['forward']:.1f} ms/step, backward "
              f"{ms['backward']:.1f} ms/step, |dL/dU| {t['grad_norm']:.4e}")  # fmt: skip


if __name__ == "__main__":
    main()
