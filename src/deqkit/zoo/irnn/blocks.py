"""The incremental-equilibrium form carried from time steps to layers.

Layer l's output z_l is the root of

    α ⊙ (z − z_{l−1}) = B(z + z_{l−1}) + x_inj,

with the previous layer's output z_{l−1} in the role of h_{t−1} and B a residual branch (a
convolutional block or a Transformer block). It is found by a deqkit solver started from z_{l−1},
with implicit gradients, so a stack of L such layers is L small equilibria instead of one big one.
A layer's Jacobian ∂z_l/∂z_{l−1} is (αI − J_B)⁻¹(αI + J_B), as for the incremental RNN.

The plain counterpart, ``mode="deq"``, solves one equilibrium z = B(z) + x_inj with the same
branch (the usual DEQ layer), so the two can be compared at equal parameter count.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

import deqkit as dk

from .cell import inverse_softplus

__all__ = [
    "BlockClassifier",
    "ConvBranch",
    "IncrementalBlock",
    "IncrementalResidualBlock",
    "IncrementalTransformerBlock",
    "TransformerBranch",
]


class ConvBranch(nn.Module):
    """conv3x3 → GroupNorm → ReLU → conv3x3 → GroupNorm: a residual branch on (B, C, H, W)."""

    def __init__(self, channels: int, groups: int = 4, scale: float = 0.5):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.norm1 = nn.GroupNorm(groups, channels)
        self.norm2 = nn.GroupNorm(groups, channels, affine=False)
        self.scale = scale  # keeps the branch's Lipschitz constant below α at initialisation

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return self.scale * self.norm2(self.conv2(F.relu(self.norm1(self.conv1(u)))))


class TransformerBranch(nn.Module):
    """Pre-norm self-attention plus MLP on tokens (B, N, d): attn(LN u) + MLP(LN u)."""

    def __init__(self, dim: int, heads: int = 2, expansion: int = 2, scale: float = 0.5):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.mlp = nn.Sequential(
            nn.Linear(dim, expansion * dim), nn.GELU(), nn.Linear(expansion * dim, dim)
        )
        self.scale = scale

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        a = self.norm1(u)
        return self.scale * (self.attn(a, a, a, need_weights=False)[0] + self.mlp(self.norm2(u)))


class IncrementalBlock(nn.Module):
    """One layer solved as the root of α(z − z_prev) = B(z + z_prev) + x_inj (see module doc).

    Args:
        branch: the module B, mapping a state to one of the same shape.
        alpha: initial α (a learned positive scalar).
        deq: ``dk.DEQ`` keyword arguments for the layer's solve.

    >>> block = IncrementalResidualBlock(4, deq={"tol": 1e-6, "max_iter": 50})
    >>> z_prev = torch.randn(2, 4, 5, 5)
    >>> z, sol = block(z_prev, torch.zeros_like(z_prev))
    >>> z.shape, sol.status.name
    (torch.Size([2, 4, 5, 5]), 'CONVERGED')
    """

    def __init__(self, branch: nn.Module, alpha: float = 1.0, deq: dict | None = None):
        super().__init__()
        self.branch = branch
        self.alpha_raw = nn.Parameter(torch.tensor(inverse_softplus(alpha)))
        options = {"solver": "anderson", "tol": 1e-3, "max_iter": 20, "on_failure": "ignore"}
        options.update(deq or {})
        self.deq = dk.DEQ(self._map, **options)

    @property
    def alpha(self) -> torch.Tensor:
        return F.softplus(self.alpha_raw)

    def residual(self, z, z_prev, injection, *context):
        """F(z) = B(z + z_prev, *context) + x_inj − α(z − z_prev), zero at the layer's output."""
        return self.branch(z + z_prev, *context) + injection - self.alpha * (z - z_prev)

    def _map(self, z, injection, z_prev, *context):
        # z ↦ z + F(z)/α, i.e. z_prev + (B(z + z_prev) + x_inj)/α: a contraction while Lip(B) < α.
        return z + self.residual(z, z_prev, injection, *context) / self.alpha

    def forward(self, z_prev: torch.Tensor, injection: torch.Tensor, *context):
        """The layer's output and its :class:`deqkit.Solution`; the solve starts from z_prev.

        ``context``: further inputs the branch takes after its state (a sequence cell's
        injection, history and positions in :mod:`deqkit.zoo.irnn.lm`)."""
        return self.deq(injection, z_prev, *context, z0=z_prev.detach())


def IncrementalResidualBlock(channels: int, alpha: float = 1.0, deq: dict | None = None, **branch):
    """An :class:`IncrementalBlock` with a :class:`ConvBranch` on (B, channels, H, W) maps."""
    return IncrementalBlock(ConvBranch(channels, **branch), alpha, deq)


def IncrementalTransformerBlock(dim: int, alpha: float = 1.0, deq: dict | None = None, **branch):
    """An :class:`IncrementalBlock` with a :class:`TransformerBranch` on (B, N, dim) tokens."""
    return IncrementalBlock(TransformerBranch(dim, **branch), alpha, deq)


class _PlainDEQ(nn.Module):
    """z = B(z) + x_inj solved from zeros: the usual DEQ layer around the same branch."""

    def __init__(self, branch: nn.Module, deq: dict | None = None):
        super().__init__()
        self.branch = branch
        options = {"solver": "anderson", "tol": 1e-3, "max_iter": 20, "on_failure": "ignore"}
        options.update(deq or {})
        self.deq = dk.DEQ(lambda z, injection: self.branch(z) + injection, **options)

    def forward(self, z_prev, injection):
        return self.deq(injection)


class BlockClassifier(nn.Module):
    """A digits classifier whose body is ``depth`` incremental layers or one plain DEQ layer.

    ``kind="residual"``: images (B, 1, H, W) → conv stem → body on (B, C, H, W) → pool → linear.
    ``kind="transformer"``: image rows as tokens (B, H, W) → linear → + position → body →
    mean over tokens → linear. ``mode``: "incremental" (``depth`` layers, each from the last) or
    "deq" (one equilibrium, the same branch). The injection is the stem's output. ``tied``
    (the default) shares one incremental layer across the depth, as the incremental RNN shares
    its cell across time, so both modes have the same parameters.

    >>> net = BlockClassifier("transformer", "incremental", width=8, depth=2, deq={"max_iter": 4})
    >>> logits, sol = net(torch.randn(3, 1, 8, 8))
    >>> logits.shape, sol.nstep.shape
    (torch.Size([3, 10]), torch.Size([3]))
    """

    def __init__(
        self,
        kind: str = "residual",
        mode: str = "incremental",
        *,
        width: int = 16,
        depth: int = 3,
        alpha: float = 1.0,
        image_size: int = 8,
        num_classes: int = 10,
        deq: dict | None = None,
        tied: bool = True,
    ):
        super().__init__()
        if kind not in ("residual", "transformer"):
            raise ValueError(f"kind must be 'residual' or 'transformer', got {kind!r}")
        if mode not in ("incremental", "deq"):
            raise ValueError(f"mode must be 'incremental' or 'deq', got {mode!r}")
        self.kind, self.mode = kind, mode
        if kind == "residual":
            self.stem = nn.Sequential(nn.Conv2d(1, width, 3, padding=1), nn.GroupNorm(4, width))
            make_branch = lambda: ConvBranch(width)  # noqa: E731
        else:
            self.stem = nn.Linear(image_size, width)
            self.position = nn.Parameter(torch.randn(image_size, width) * 0.1)
            make_branch = lambda: TransformerBranch(width)  # noqa: E731
        if mode == "incremental":
            count = 1 if tied else depth
            layers = [IncrementalBlock(make_branch(), alpha, deq) for _ in range(count)]
            self.layers = nn.ModuleList(layers)
            self.schedule = [i % count for i in range(depth)]
        else:
            self.layers = nn.ModuleList([_PlainDEQ(make_branch(), deq)])
            self.schedule = [0]
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor):
        """Logits and the last layer's Solution (every layer's in ``self.solutions``)."""
        if self.kind == "residual":
            injection = self.stem(x)
        else:
            injection = self.stem(x[:, 0]) + self.position
        z, self.solutions = torch.zeros_like(injection), []
        for index in self.schedule:
            z, sol = self.layers[index](z, injection)
            self.solutions.append(sol)
        pooled = z.mean(dim=(2, 3)) if self.kind == "residual" else z.mean(dim=1)
        return self.head(pooled), sol
