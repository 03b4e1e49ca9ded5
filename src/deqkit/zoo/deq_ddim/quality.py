"""An offline sample-quality measure: the Fréchet distance (torchmetrics' FID computation) in the
feature space of a small CNN classifier trained here on the denoiser's own dataset — no
Inception weights, nothing downloaded. Not comparable with published FIDs; comparable between
samplers, and against held-out real images (the floor).

``python -m deqkit.zoo.deq_ddim.quality CHECKPOINT [--n 360] [--steps 20] [--chunk 60]``
prints the classifier's test accuracy and the distances of DEQ and sequential DDIM samples (from
the same x_T) to the test images, between them, and of training images to the test images.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn
from torch.nn import functional as F
from torchmetrics.image.fid import FrechetInceptionDistance

from .commands import load_denoiser
from .sampler import ddim_sample, deq_sample
from .schedule import ddim_steps

__all__ = ["FeatureNet", "frechet_distance", "main", "train_features"]


class FeatureNet(nn.Module):
    """A small CNN classifier; ``forward`` returns its ``num_features``-d penultimate features
    (what the Fréchet distance compares), ``logits`` the class scores.

    >>> net = FeatureNet(1, 10)
    >>> net(torch.zeros(2, 1, 8, 8)).shape, net.logits(torch.zeros(2, 1, 14, 14)).shape
    (torch.Size([2, 64]), torch.Size([2, 10]))
    """

    num_features = 64

    def __init__(self, in_channels: int, num_classes: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1, stride=2)
        self.fc = nn.Linear(64 * 4, self.num_features)
        self.head = nn.Linear(self.num_features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.conv2(F.relu(self.conv1(x))))
        return F.relu(self.fc(F.adaptive_avg_pool2d(h, 2).flatten(1)))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Class scores (B, num_classes)."""
        return self.head(self(x))


def train_features(train, test, steps: int = 600, seed: int = 0) -> tuple[FeatureNet, float]:
    """Train a :class:`FeatureNet` on ``train`` ((x, y) of the checkpoint's data) with Adam;
    returns it (eval mode) and its accuracy on ``test``.

    >>> x = torch.randn(64, 1, 8, 8); y = (x.mean((1, 2, 3)) > 0).long()
    >>> net, acc = train_features((x, y), (x, y), steps=50)
    >>> acc > 0.8
    True
    """
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    x, y = train
    net = FeatureNet(x.shape[1], int(max(y.max().item(), test[1].max().item())) + 1)
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    for _ in range(steps):
        idx = torch.randint(0, len(x), (128,), generator=g)
        opt.zero_grad()
        F.cross_entropy(net.logits(x[idx]), y[idx]).backward()
        opt.step()
    net.eval()
    with torch.no_grad():
        pred = torch.cat([net.logits(c).argmax(1) for c in test[0].split(1000)])
    return net, (pred == test[1]).float().mean().item()


def frechet_distance(net: FeatureNet, a: torch.Tensor, b: torch.Tensor) -> float:
    """Fréchet distance between the feature Gaussians of image sets ``a`` and ``b`` (torchmetrics'
    FID with ``net`` as the feature extractor).

    >>> net = FeatureNet(1, 10).eval()
    >>> x = torch.randn(50, 1, 8, 8)
    >>> abs(frechet_distance(net, x, x)) < 1e-6
    True
    """
    fid = FrechetInceptionDistance(feature=net, normalize=True)
    with torch.no_grad():
        for real, images in ((True, a), (False, b)):
            for chunk in images.split(500):
                fid.update(chunk, real=real)
        return float(fid.compute())


def _whole(split) -> tuple[torch.Tensor, torch.Tensor]:
    return split.batch(torch.arange(len(split)))


def main(argv: list[str] | None = None) -> dict:
    """Print the sample-quality table of a checkpoint (DEQ and DDIM samples from the same x_T)."""
    p = argparse.ArgumentParser(description="Fréchet distance of DEQ-DDIM and DDIM samples.")
    p.add_argument("checkpoint")
    p.add_argument("--n", type=int, default=360, help="samples per sampler")
    p.add_argument("--steps", type=int, default=20, help="T")
    p.add_argument("--tol", type=float, default=1e-3, help="DEQ per-state RMS tolerance")
    p.add_argument("--chunk", type=int, default=60, help="images per DEQ solve")
    p.add_argument("--deq-n", type=int, default=None, help="DEQ on the first N x_T (all)")
    p.add_argument("--feature-steps", type=int, default=600, help="classifier Adam steps")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    from deqkit.train.build import prepare_data
    from deqkit.train.recipe import parse

    model, state = load_denoiser(args.checkpoint)
    data = prepare_data(parse(state["config"]), state.get("data_state"))
    train, test = _whole(data.train), _whole(data.test)
    net, accuracy = train_features(train, test, args.feature_steps, args.seed)
    steps = ddim_steps(model.abar, args.steps)
    g = torch.Generator().manual_seed(args.seed)
    x_T = torch.randn((args.n, *test[0].shape[1:]), generator=g)
    t0 = time.perf_counter()
    ddim = torch.cat([ddim_sample(model.eps, c, steps) for c in x_T.split(args.chunk)])
    t1 = time.perf_counter()
    n_deq = min(args.deq_n or args.n, args.n)
    outs = [deq_sample(model.eps, c, steps, tol=args.tol) for c in x_T[:n_deq].split(args.chunk)]
    t2 = time.perf_counter()
    deq = torch.cat([o.x0 for o in outs])
    converged = torch.cat([o.converged for o in outs]).float().mean().item()
    real = test[0][: args.n]
    other = train[0][torch.randperm(len(train[0]), generator=g)[: args.n]]
    row = {
        "classifier_test_accuracy": accuracy,
        "fd_train_vs_test": frechet_distance(net, real, other),
        "fd_ddim_vs_test": frechet_distance(net, real, ddim),
        "deq_n": n_deq,
        "fd_ddim_subset_vs_test": frechet_distance(net, real, ddim[:n_deq]),
        "fd_deq_vs_test": frechet_distance(net, real, deq),
        "fd_deq_vs_ddim": frechet_distance(net, ddim[:n_deq], deq),
        "max_abs_diff": (deq - ddim[:n_deq]).abs().max().item(),
        "deq_converged": converged,
        "deq_rounds": max(o.rounds for o in outs),
        "ddim_seconds": t1 - t0,
        "deq_seconds": t2 - t1,
    }
    print(
        f"T={args.steps}, {args.n} samples, {len(real)} test images; feature classifier test "
        f"accuracy {accuracy:.3f}\n"
        f"| Fréchet distance (classifier features) | value |\n|---|---|\n"
        f"| train images vs test images (floor) | {row['fd_train_vs_test']:.3f} |\n"
        f"| DDIM samples vs test images | {row['fd_ddim_vs_test']:.3f} |\n"
        f"| first {n_deq} DDIM samples vs test images | {row['fd_ddim_subset_vs_test']:.3f} |\n"
        f"| DEQ samples (same {n_deq} x_T) vs test images | {row['fd_deq_vs_test']:.3f} |\n"
        f"| DEQ samples vs DDIM samples ({n_deq}) | {row['fd_deq_vs_ddim']:.2e} |\n"
        f"DEQ (per-state tol {args.tol:g}): converged {converged:.1%}, at most "
        f"{row['deq_rounds']} rounds, max |x0_DEQ - x0_DDIM| {row['max_abs_diff']:.1e}; "
        f"wall DDIM {row['ddim_seconds']:.1f}s, DEQ {row['deq_seconds']:.1f}s (1 thread)"
    )
    return row


if __name__ == "__main__":
    main()
