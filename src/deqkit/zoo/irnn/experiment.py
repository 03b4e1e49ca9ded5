"""Train and score sequence models on the sequence tasks (a plain loop; one JSON line per record).

``python -m deqkit.zoo.irnn.experiment --model irnn-root --task adding --length 100`` trains one
network and prints its records; ``--out file.jsonl`` also writes them. Models: ``irnn-euler``
(the paper's K-step Euler model), ``irnn-root`` (exact roots, implicit gradients),
``irnn-phantom`` (exact roots, phantom gradients), and ``lstm``, ``gru``, ``rnn`` with the
parameter count of the incremental network.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F

import deqkit as dk
from deqkit.data.sequences import SequenceSet, load_sequence_task, memoryless_baseline

from .model import IncrementalRNN
from .network import RecurrentBaseline, SequenceNet, matched_hidden, parameter_count

__all__ = ["MODELS", "RunConfig", "build_network", "evaluate", "loss_and_metric", "train"]

MODELS = ("irnn-euler", "irnn-root", "irnn-phantom", "lstm", "gru", "rnn")


@dataclass
class RunConfig:
    """One run: model, task, sizes and optimisation (every field is a command-line flag)."""

    model: str = "irnn-root"
    task: str = "adding"
    length: int | None = 100
    hidden: int = 32
    activation: str = "tanh"
    recurrent: str = "stable"
    alpha: float = 0.5
    eta: float = 1.0
    euler_steps: int = 1
    euler_start: str = "zero"
    init_scale: float = 0.3
    root_step: float = 1.0
    solver: str = "anderson"
    tol: float = 1e-3
    max_iter: int = 10
    bwd_tol: float = 1e-3
    bwd_max_iter: int = 8
    phantom_steps: int = 5
    steps: int = 300
    batch: int = 32
    lr: float = 3e-3
    clip: float = 1.0
    n_train: int = 5000
    n_test: int = 500
    eval_every: int = 100
    seed: int = 0
    deq: dict = field(default_factory=dict)


def _readout(train: SequenceSet) -> tuple[int, str]:
    return train.num_outputs, "all" if train.kind == "per_step" else "last"


def build_network(cfg: RunConfig, train: SequenceSet) -> SequenceNet:
    """The network of ``cfg.model`` for the task of ``train`` (baselines matched in size)."""
    outputs, readout = _readout(train)
    if cfg.model not in MODELS:
        raise ValueError(f"model must be one of {MODELS}, got {cfg.model!r}")
    torch.manual_seed(cfg.seed)
    variant = {"irnn-euler": "euler", "irnn-root": "implicit", "irnn-phantom": "phantom"}
    cell = dict(
        activation=cfg.activation,
        recurrent=cfg.recurrent,
        alpha=cfg.alpha,
        eta=cfg.eta,
        init_scale=cfg.init_scale,
    )
    deq = {"solver": cfg.solver, "tol": cfg.tol, "max_iter": cfg.max_iter, **cfg.deq}
    if cfg.model == "irnn-phantom":
        deq["backward"] = dk.Phantom(steps=cfg.phantom_steps, damping=0.5)
    elif cfg.model == "irnn-root":
        deq["backward"] = dk.Implicit(cfg.solver, tol=cfg.bwd_tol, max_iter=cfg.bwd_max_iter)
    irnn = IncrementalRNN(
        train.input_size,
        cfg.hidden,
        variant=variant.get(cfg.model, "euler"),
        euler_steps=cfg.euler_steps,
        euler_start=cfg.euler_start,
        root_step=cfg.root_step,
        deq=deq,
        **cell,
    )
    net = SequenceNet(irnn, outputs, readout)
    if cfg.model in variant:
        return net
    hidden = matched_hidden(cfg.model, parameter_count(net), train.input_size, outputs)
    torch.manual_seed(cfg.seed)
    return SequenceNet(RecurrentBaseline(cfg.model, train.input_size, hidden), outputs, readout)


def loss_and_metric(out: torch.Tensor, y: torch.Tensor, kind: str) -> tuple[torch.Tensor, float]:
    """Training loss and the task's metric: MSE (regression), accuracy, or per-step CE (copy)."""
    if kind == "regression":
        loss = F.mse_loss(out, y)
        return loss, loss.item()
    if kind == "per_step":
        loss = F.cross_entropy(out.flatten(0, 1), y.flatten())
        return loss, loss.item()
    return F.cross_entropy(out, y), (out.argmax(-1) == y).float().mean().item()


@torch.no_grad()
def evaluate(net: SequenceNet, data: SequenceSet, batch: int = 250) -> dict[str, float]:
    """Mean metric and solver statistics over ``data`` (eval mode)."""
    net.eval()
    metric = nstep = converged = 0.0
    for start in range(0, len(data), batch):
        x, y = data.batch(torch.arange(start, min(start + batch, len(data))))
        out, sol = net(x)
        weight = len(y) / len(data)
        metric += loss_and_metric(out, y, data.kind)[1] * weight
        if sol is not None:
            nstep += sol.nstep.mean().item() * weight
            converged += sol.step_converged.mean().item() * weight
    net.train()
    record = {"test_metric": metric}
    if net.encoder.__class__ is IncrementalRNN and net.encoder.variant != "euler":
        record.update(test_nstep=nstep, test_step_converged=converged)
    return record


def train(cfg: RunConfig, log=print, save: str | None = None) -> list[dict]:
    """Train ``cfg`` and return its records (one per ``eval_every`` steps and a final one).

    ``save`` writes the trained network's state dict there.
    """
    splits = load_sequence_task(cfg.task, cfg.length, cfg.n_train, cfg.n_test)
    net = build_network(cfg, splits.train)
    optim = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    gen = torch.Generator().manual_seed(cfg.seed)
    records, start = [], time.time()
    header = {"config": asdict(cfg), "params": parameter_count(net)}
    if cfg.task in ("adding", "copy"):
        header["memoryless"] = memoryless_baseline(cfg.task, cfg.length)
    log(json.dumps(header))
    for step in range(1, cfg.steps + 1):
        index = torch.randint(0, len(splits.train), (cfg.batch,), generator=gen)
        x, y = splits.train.batch(index)
        out, sol = net(x)
        loss, metric = loss_and_metric(out, y, splits.train.kind)
        optim.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.clip)
        optim.step()
        if step % cfg.eval_every == 0 or step == cfg.steps:
            record = {"step": step, "train_loss": loss.item(), "train_metric": metric}
            record["sec_per_step"] = (time.time() - start) / step
            if sol is not None:
                record.update(fwd_nstep=sol.nstep.mean().item(),
                              fwd_converged=sol.step_converged.mean().item())  # fmt: skip
                if sol.backward is not None:
                    record["bwd_nstep"] = sol.backward.nstep.mean().item()
            cell = getattr(net.encoder, "cell", None)
            if cell is not None:
                record.update(alpha=cell.alpha.mean().item(), eta=cell.eta.mean().item())
            record.update(evaluate(net, splits.test))
            records.append(record)
            log(json.dumps(record))
    if save:
        torch.save({"config": asdict(cfg), "state": net.state_dict()}, save)
    return records


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name, value in asdict(RunConfig()).items():
        if name == "deq":
            continue
        kind = type(value) if value is not None else int
        parser.add_argument("--" + name.replace("_", "-"), type=kind, default=value)
    parser.add_argument("--out", default=None)
    parser.add_argument("--save", default=None)
    args = vars(parser.parse_args(argv))
    out, save = args.pop("out"), args.pop("save")
    if args["task"] not in ("adding", "copy"):
        args["length"] = None  # the pixel tasks have a fixed length
    torch.set_num_threads(1)
    sink = open(out, "w") if out else None  # noqa: SIM115 - closed below

    def log(line: str) -> None:
        print(line, flush=True)
        if sink:
            sink.write(line + "\n")
            sink.flush()

    try:
        train(RunConfig(**args), log, save)
    finally:
        if sink:
            sink.close()


if __name__ == "__main__":
    main()
