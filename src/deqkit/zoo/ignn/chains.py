"""The chains experiment of Gu et al. (2020) at CPU scale: IGNN vs a 2-layer GCN and SGC (K = 2).

``python -m deqkit.zoo.ignn.chains --lengths 10,20,50,100`` trains every model on every chain
length (transductive, 20 labelled nodes) and prints one table: test accuracy, and for IGNN the
convergence of its Picard solves (fraction of evaluation solves within tolerance, iterations),
the largest ‖W‖_∞·λ_pf (≤ κ) and Picard convergence from random starts on the trained model.
"""

from __future__ import annotations

import argparse
import time
import warnings

import torch
from torch import nn

import deqkit as dk
from deqkit.data.graph_synthetic import chains
from deqkit.data.graphs import batch_graphs

from .baselines import GCN, SGC
from .model import IGNN, IGNNConfig

__all__ = ["random_start_convergence", "run_length", "train_node_model"]


def train_node_model(
    model: nn.Module,
    batch,
    y,
    masks,
    epochs: int,
    lr: float = 0.01,
    weight_decay: float = 5e-4,
    clip: float = 0.5,
) -> dict:
    """Full-batch training on the train mask (Adam, gradient clipping as in the paper); an IGNN
    is projected after every step. Keeps the weights of the best validation accuracy; returns
    test accuracy and, for a DEQ, the solver statistics of the test forward.

    >>> b = batch_graphs([chains(length=10)])
    >>> out = train_node_model(SGC(100, 2), b, b.y, b.masks, epochs=2)
    >>> sorted(out)
    ['test_acc', 'val_acc']
    """
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    if isinstance(model, IGNN):
        model.projection_hook(opt)
    best, best_state = -1.0, None
    train_converged = []
    for _ in range(epochs):
        model.train()
        opt.zero_grad()
        logits, sol = model(batch)
        if sol is not None:
            train_converged.append(float(sol.converged.float().mean()))
        loss = nn.functional.cross_entropy(logits[masks["train"]], y[masks["train"]])
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        acc, _ = evaluate(model, batch, y, masks["val"])
        if acc > best:
            best, best_state = acc, {k: v.clone() for k, v in model.state_dict().items()}
    model.load_state_dict(best_state)
    acc, sol = evaluate(model, batch, y, masks["test"])
    out = {"val_acc": best, "test_acc": acc}
    if train_converged:
        out["train_converged"] = sum(train_converged) / len(train_converged)
    if sol is not None:
        out.update(
            converged=float(sol.converged.float().mean()),
            nstep=int(sol.nstep.max()),
            residual=float(sol.residual.max()),
        )
    return out


@torch.no_grad()
def evaluate(model: nn.Module, batch, y, mask) -> tuple[float, dk.Solution | None]:
    """Accuracy on ``mask`` in eval mode and the solution of that forward.

    >>> b = batch_graphs([chains(length=10)])
    >>> acc, sol = evaluate(SGC(100, 2), b, b.y, b.masks["test"])
    >>> 0.0 <= acc <= 1.0, sol
    (True, None)
    """
    model.eval()
    logits, sol = model(batch)
    return float((logits[mask].argmax(-1) == y[mask]).float().mean()), sol


@torch.no_grad()
def random_start_convergence(model: IGNN, batch, starts: int = 5, scale: float = 10.0) -> float:
    """Fraction of Picard solves, from ``starts`` random nonnegative X₀ per layer, that reach
    the model's tolerance (well-posedness promises all of them).

    >>> b = batch_graphs([chains(length=10)])
    >>> model = IGNN(IGNNConfig(), 100, 2, tol=1e-6, max_iter=300)
    >>> _ = model(b)  # records lambda_pf and projects W
    >>> random_start_convergence(model, b, starts=2)
    1.0
    """
    model.eval()
    hits, total = 0, 0
    h = batch.x
    for layer in model.layers:
        b = layer.injection(h, batch.operator)
        deq = layer.deq
        for _ in range(starts):
            z0 = scale * torch.rand_like(b)
            sol = dk.solve(
                lambda z, b=b, c=layer.cell: c(z, b, batch.operator),
                z0,
                "fixed_point",
                tol=deq.tol,
                max_iter=deq.max_iter,
                stop_mode=deq.stop_mode,
                on_failure="ignore",
            )
            hits += int(sol.converged.sum())
            total += sol.converged.numel()
        h, _ = layer(h, batch.operator)
    return hits / total


def run_length(
    length: int,
    epochs: int,
    seed: int = 0,
    max_iter: int = 300,
    tol: float = 1e-6,
    dtype: torch.dtype = torch.float32,
    models: tuple[str, ...] = ("IGNN", "GCN", "SGC"),
    normalisation: str = "sym_undirected",
    identity_init: float = 1.5,
    kappa: float = 0.75,
) -> dict[str, dict]:
    """Train IGNN, GCN and SGC on chains of ``length``; one result dict per model (the rows
    of :func:`main`'s table; minutes per length, so no example here beyond the test suite's)."""
    graph = chains(length=length, seed=seed, normalisation=normalisation)
    batch = batch_graphs([graph], dtype=dtype)
    y, masks = batch.y, batch.masks
    results = {}
    deq = {
        "solver": "fixed_point",
        "backward": dk.Implicit(tol=tol, max_iter=max_iter),
        "tol": tol,
        "max_iter": max_iter,
        "stop_mode": "rel",
        "on_failure": "ignore",
    }
    builders = {
        "IGNN": lambda: IGNN(
            IGNNConfig(hidden=(16,), kappa=kappa, identity_init=identity_init), 100, 2, **deq
        ),
        "GCN": lambda: GCN(100, 16, 2),
        "SGC": lambda: SGC(100, 2, hops=2),
    }
    for name in models:
        torch.manual_seed(seed)
        model = builders[name]().to(dtype)
        start = time.time()
        out = train_node_model(model, batch, y, masks, epochs)
        out["seconds"] = time.time() - start
        if isinstance(model, IGNN):
            out["wellposed"] = model.wellposedness()
            out["random_starts"] = random_start_convergence(model, batch)
        results[name] = out
    return results


def main(argv: list[str] | None = None) -> None:
    """Print the chains table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", default="10,20,50,100")
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tol", type=float, default=1e-10)
    parser.add_argument("--max-iter", type=int, default=600)
    parser.add_argument("--normalisation", default="sym_undirected")
    parser.add_argument("--identity-init", type=float, default=1.5)
    parser.add_argument("--kappa", type=float, default=0.75)
    parser.add_argument("--float32", action="store_true", help="solve in float32, not float64")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    warnings.simplefilter("ignore", dk.DEQWarning)
    dtype = torch.float32 if args.float32 else torch.float64
    print(
        "| length | IGNN test acc | IGNN converged (train solves / test) | Picard iters "
        "| ‖W‖∞·λ_pf | random starts converged | GCN test acc | SGC test acc | IGNN train s |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for length in [int(v) for v in args.lengths.split(",")]:
        r = run_length(
            length, args.epochs, args.seed, args.max_iter, args.tol, dtype,
            normalisation=args.normalisation, identity_init=args.identity_init, kappa=args.kappa,
        )  # fmt: skip
        i = r["IGNN"]
        print(
            f"| {length} | {i['test_acc']:.1%} | {i['train_converged']:.0%} / "
            f"{i['converged']:.0%} | {i['nstep']} "
            f"| {i['wellposed']:.3f} | {i['random_starts']:.0%} | {r['GCN']['test_acc']:.1%} "
            f"| {r['SGC']['test_acc']:.1%} | {i['seconds']:.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
