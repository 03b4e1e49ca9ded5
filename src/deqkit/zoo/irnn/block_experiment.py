"""Incremental residual / Transformer layers against their plain DEQ counterparts on digits.

``python -m deqkit.zoo.irnn.block_experiment --kind residual --mode incremental`` trains one
:class:`BlockClassifier` on the scikit-learn digits and prints JSON records: test accuracy, the
forward iterations of every layer and the fraction of samples within tolerance.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F

from deqkit.data import load_digits

from .blocks import BlockClassifier
from .network import parameter_count

__all__ = ["train_blocks"]


@torch.no_grad()
def _evaluate(net: BlockClassifier, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    net.eval()
    logits, _ = net(x)
    record = {"test_acc": (logits.argmax(-1) == y).float().mean().item()}
    record["test_nstep"] = [s.nstep.float().mean().item() for s in net.solutions]
    record["test_converged"] = [s.converged.float().mean().item() for s in net.solutions]
    net.train()
    return record


def train_blocks(
    kind: str, mode: str, steps: int = 300, batch: int = 64, lr: float = 3e-3, seed: int = 0,
    depth: int = 3, width: int = 16, max_iter: int = 15, log=print,
) -> list[dict]:  # fmt: skip
    """Train one block classifier on digits; returns the records it logged.

    >>> records = train_blocks("residual", "incremental", steps=1, depth=1, width=4,
    ...                        max_iter=2, log=lambda line: None)
    >>> len(records), records[-1]["step"], len(records[-1]["test_nstep"])
    (1, 1, 1)
    """
    torch.manual_seed(seed)
    digits = load_digits()
    xtr, ytr = digits.train.batch(torch.arange(len(digits.train)))
    xte, yte = digits.test.batch(torch.arange(len(digits.test)))
    mean, std = xtr.mean(), xtr.std()
    xtr, xte = (xtr - mean) / std, (xte - mean) / std
    deq = {"solver": "anderson", "tol": 1e-3, "max_iter": max_iter}
    net = BlockClassifier(kind, mode, width=width, depth=depth, deq=deq)
    optim = torch.optim.Adam(net.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    records, start = [], time.time()
    for step in range(1, steps + 1):
        index = torch.randint(0, len(ytr), (batch,), generator=gen)
        logits, _ = net(xtr[index])
        loss = F.cross_entropy(logits, ytr[index])
        optim.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        optim.step()
        if step % 100 == 0 or step == steps:
            record = {"step": step, "params": parameter_count(net), "train_loss": loss.item()}
            record["sec_per_step"] = (time.time() - start) / step
            record["fwd_nstep"] = [s.nstep.float().mean().item() for s in net.solutions]
            record.update(_evaluate(net, xte, yte))
            records.append(record)
            log(json.dumps({"kind": kind, "mode": mode, **record}))
    return records


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", default="residual", choices=["residual", "transformer"])
    parser.add_argument("--mode", default="incremental", choices=["incremental", "deq"])
    for name, value in dict(
        steps=300, batch=64, lr=3e-3, seed=0, depth=3, width=16, max_iter=15
    ).items():
        parser.add_argument("--" + name.replace("_", "-"), type=type(value), default=value)
    args = vars(parser.parse_args(argv))
    torch.set_num_threads(1)
    train_blocks(**args, log=lambda line: print(line, flush=True))


if __name__ == "__main__":
    main()
