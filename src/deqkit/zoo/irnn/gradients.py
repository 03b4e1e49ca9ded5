"""Gradient behaviour over time: ‖∂L/∂h_t‖ per step, and the spectrum of ∂h_t/∂h_{t−1}.

``python -m deqkit.zoo.irnn.gradients --out DIR [--trained RUNS]`` measures both for every
variant on the adding task and writes ``gradients.json`` and ``gradients.png`` into DIR.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

import deqkit as dk
from deqkit.data.sequences import adding_task

from .dense import dense_product_norms, dense_states, step_products
from .experiment import RunConfig, build_network, loss_and_metric
from .model import IncrementalRNN
from .network import SequenceNet

__all__ = ["gradient_profile", "jacobian_product_norms", "step_spectrum"]


def gradient_profile(net: SequenceNet, x: torch.Tensor, y: torch.Tensor, kind: str) -> list[float]:
    """Batch mean of ‖∂L/∂h_t‖ for t = 1..T (L the task loss of the batch).

    >>> net = SequenceNet(IncrementalRNN(2, 4, variant="euler"), 1)
    >>> data = adding_task(6, 3)
    >>> len(gradient_profile(net, data.inputs, data.targets, "regression"))
    6
    """
    out, _ = net(x, keep_grads=True)
    loss, _ = loss_and_metric(out, y, kind)
    loss.backward()
    states = net.encoder.last_states
    return [h.grad.norm(dim=-1).mean().item() for h in states]


@torch.no_grad()
def step_spectrum(rnn: IncrementalRNN, x: torch.Tensor) -> dict[str, float]:
    """Eigenvalues μ of the exact ∂h_t/∂h_{t−1} over a batch and all steps: median |μ + 1|,
    median and extreme |μ|, and the fraction with |μ| > 0.9.

    >>> rnn = IncrementalRNN(2, 4, activation="tanh", recurrent="stable", deq={"tol": 1e-8})
    >>> stats = step_spectrum(rnn, torch.randn(2, 3, 2))
    >>> stats["max_modulus"] < 1.0
    True
    """
    h, _ = rnn(x)
    cell = rnn.cell
    U, wx = cell.recurrent_matrix(), cell.drive(x)
    h_prev = torch.cat([torch.zeros_like(h[:, :1]), h[:, :-1]], dim=1)
    J = cell.step_jacobian(h.flatten(0, 1), h_prev.flatten(0, 1), wx.flatten(0, 1), U)
    mu = torch.linalg.eigvals(J).flatten()
    modulus = mu.abs()
    return {
        "median_dist_to_minus_one": (mu + 1).abs().median().item(),
        "median_modulus": modulus.median().item(),
        "min_modulus": modulus.min().item(),
        "max_modulus": modulus.max().item(),
        "frac_modulus_above_0.9": (modulus > 0.9).float().mean().item(),
    }


@torch.no_grad()
def jacobian_product_norms(rnn: IncrementalRNN, x: torch.Tensor) -> list[float]:
    """Batch mean of ‖∂h_t/∂h_1‖₂ = ‖J_t ⋯ J_2‖₂ for t = 2..T, from the exact per-step Jacobians.

    >>> rnn = IncrementalRNN(2, 4, activation="tanh", recurrent="stable", deq={"tol": 1e-8})
    >>> norms = jacobian_product_norms(rnn, torch.randn(2, 5, 2))
    >>> len(norms), all(n > 0 for n in norms)
    (4, True)
    """
    h, _ = rnn(x)
    cell = rnn.cell
    products = step_products(cell, h, cell.drive(x), cell.recurrent_matrix())
    return torch.linalg.matrix_norm(products, ord=2).mean(0).tolist()


_VARIANTS = {
    "irnn-euler (tanh)": dict(model="irnn-euler", activation="tanh", recurrent="free"),
    "irnn-root": dict(model="irnn-root"),
    "irnn-phantom": dict(model="irnn-phantom"),
    "lstm": dict(model="lstm"),
    "gru": dict(model="gru"),
    "rnn (tanh)": dict(model="rnn"),
}


def _profiles(length: int, trained: Path | None) -> dict[str, dict[str, list[float]]]:
    data = adding_task(length, 32, seed=5)
    result: dict[str, dict[str, list[float]]] = {}
    names = {"irnn-euler (tanh)": "add100-euler-tanh", "irnn-root": "add100-root",
             "irnn-phantom": "add100-phantom", "lstm": "add100-lstm", "gru": "add100-gru",
             "rnn (tanh)": "add100-rnn"}  # fmt: skip
    for label, options in _VARIANTS.items():
        cfg = RunConfig(task="adding", length=length, alpha=1.0, **options)
        net = build_network(cfg, data)
        result[label] = {"init": gradient_profile(net, data.inputs, data.targets, "regression")}
        path = trained / f"{names[label]}.pt" if trained else None
        if path is not None and path.is_file():
            saved = torch.load(path, weights_only=False)
            net.load_state_dict(saved["state"])
            prof = gradient_profile(net, data.inputs, data.targets, "regression")
            result[label]["trained"] = prof
    return result


def _spectra() -> dict[str, dict[str, float]]:
    # Below α ≈ 0.1 even Newton-Krylov stalls on these roots (tanh saturates on the way).
    deq = dict(solver=dk.NewtonKrylov(line_search=True), tol=1e-8, max_iter=60)
    x = torch.randn(8, 6, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    out = {}
    for alpha in (1.0, 0.3, 0.1):
        torch.manual_seed(0)
        rnn = IncrementalRNN(2, 16, activation="tanh", recurrent="stable", alpha=alpha,
                             init_scale=1.0, deq=deq).double()  # fmt: skip
        stats = step_spectrum(rnn, x)
        _, sol = rnn(x)
        stats["converged"] = sol.step_converged.mean().item()
        out[str(alpha)] = stats
    return out


_SETTINGS = ((1.0, 0.1, 0.3), (1.0, 0.01, 1.0), (0.1, 0.01, 1.0))  # (alpha, gamma, init scale)


def _products(length: int) -> dict[str, dict]:
    # Dense Newton roots (hidden 16, float64) and the closed-form step Jacobians: Newton-Krylov
    # through dk.DEQ took over 15 minutes at alpha = 0.1 (README, Not done).
    data = adding_task(length, 4, seed=6)
    x = data.inputs.double()
    out = {}
    for alpha, gamma, scale in _SETTINGS:
        torch.manual_seed(0)
        rnn = IncrementalRNN(2, 16, activation="tanh", recurrent="stable", alpha=alpha,
                             gamma=gamma, init_scale=scale).double()  # fmt: skip
        states = dense_states(rnn, x)
        norms = dense_product_norms(rnn, states)  # (B, T - 1)
        out[f"alpha={alpha} gamma={gamma} scale={scale}"] = {
            "mean": norms.mean(0).tolist(),
            "min": norms.min(0).values.tolist(),
            "max": norms.max(0).values.tolist(),
            "max_residual": states.residual.max().item(),
            "mean_newton_iterations": states.iterations.double().mean().item(),
        }
    return out


def _plot(profiles: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    colors = {label: f"C{i}" for i, label in enumerate(profiles)}  # one colour per model
    for ax, stage in zip(axes, ("init", "trained"), strict=True):
        for label, prof in profiles.items():
            if stage in prof:
                steps = range(1, len(prof[stage]) + 1)
                ax.semilogy(steps, prof[stage], label=label, color=colors[label])
        ax.set_title(f"adding task, ‖∂L/∂h_t‖ ({stage})")
        ax.set_xlabel("t")
    axes[0].set_ylabel("batch mean ‖∂L/∂h_t‖")
    for ax in axes:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--trained", default=None, help="folder with add100-*.pt of experiment")
    parser.add_argument("--length", type=int, default=100)
    parser.add_argument("--products-only", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.products_only:
        products = _products(args.length)
        (out / f"products_T{args.length}.json").write_text(json.dumps(products))
        for label, rec in products.items():
            marks = [t for t in (2, 10, 50, 100, 200, 500) if t <= args.length]
            text = ", ".join(f"t={t}: {rec['mean'][t - 2]:.2e}" for t in marks)
            print(
                f"{label}: mean ||dh_t/dh_1|| {text} (t={args.length}: min "
                f"{rec['min'][-1]:.2e}, max {rec['max'][-1]:.2e}); max |F(h_t)| "
                f"{rec['max_residual']:.1e}, {rec['mean_newton_iterations']:.1f} Newton it/step"
            )
        return
    profiles = _profiles(args.length, Path(args.trained) if args.trained else None)
    spectra = _spectra()
    (out / "gradients.json").write_text(json.dumps({"profiles": profiles, "spectra": spectra}))
    _plot(profiles, out / "gradients.png")
    for label, prof in profiles.items():
        for stage, values in prof.items():
            print(f"{label:18s} {stage:8s} |dL/dh_1| {values[0]:.2e}  |dL/dh_T| {values[-1]:.2e}")
    for alpha, stats in spectra.items():
        print(f"alpha {alpha}: " + ", ".join(f"{k} {v:.3f}" for k, v in stats.items()))


if __name__ == "__main__":
    main()
