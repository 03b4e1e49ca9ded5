"""The reusable piece of every sequence DEQ: history padding, injection once, memories.

A sequence cell is the transformation f of the original DEQ code, called as
``cell(z1s, us, z0, *extra)``::

    [<--------------- us --------------->]
    [<==== z0 ====>|<======= z1s =======>]
    [  (pad_len=L) |    (seq_len=L')     ]

- ``z1s`` (B, L', D): the hidden sequence of the current segment, the unknown of the solve;
- ``us`` (B, L + L', U): the input injection over history and segment, computed once per
  forward by ``cell.inject`` (the history part is cached from the previous segment);
- ``z0`` (B, L, D): history padding, the previous segment's equilibrium. It is context for f,
  never part of the unknown, and is detached (Transformer-XL style memories);
- ``extra``: further inputs such as positional encodings (``cell.extra_inputs``).

:class:`SequenceDEQ` solves such a cell with :class:`deqkit.DEQ` (or unrolls it with
``unroll=n`` for the explicit weight-tied baseline) and returns the new :class:`Memory`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import nn

import deqkit as dk

__all__ = ["Memory", "SequenceCell", "SequenceDEQ", "combine_solutions", "explicit_record"]


@dataclass(frozen=True)
class Memory:
    """What one segment hands the next: history padding ``z`` (B, L, D), the injection at those
    positions ``u`` (B, L, U) and the last ``x`` embeddings (B, k, E) that ``cell.inject`` needs
    as left context (k = ``cell.input_context``). All are detached.

    >>> m = Memory(torch.zeros(2, 3, 4), torch.zeros(2, 3, 12), torch.zeros(2, 0, 4))
    >>> m.length, m.batch_size
    (3, 2)
    """

    z: torch.Tensor
    u: torch.Tensor
    x: torch.Tensor

    @property
    def length(self) -> int:
        """History length L."""
        return self.z.shape[1]

    @property
    def batch_size(self) -> int:
        """Batch size B."""
        return self.z.shape[0]

    def advance(self, z, u, x, mem_len: int, context: int) -> Memory:
        """The memory the next segment gets after this one's output ``z``, injection ``u`` and
        embeddings ``x``: the last ``mem_len`` positions of z and u and the last ``context`` of
        x, each after this memory's, detached.

        >>> m = Memory(torch.zeros(1, 2, 4), torch.zeros(1, 2, 3), torch.zeros(1, 0, 4))
        >>> n = m.advance(torch.ones(1, 5, 4), torch.ones(1, 5, 3), torch.ones(1, 5, 4), 3, 1)
        >>> n.length, n.x.shape[1], bool(n.z.requires_grad)
        (3, 1, False)
        """
        return Memory(
            _keep(self.z, z, mem_len), _keep(self.u, u, mem_len), _keep(self.x, x, context)
        )


class SequenceCell(nn.Module):
    """Base class of a sequence DEQ cell: override ``inject``, ``forward`` and the sizes.

    Attributes a subclass sets: ``d_state`` (D of z), ``d_inject`` (U of us), ``d_input`` (E of
    the embeddings), ``d_out`` (features of :meth:`output`), ``input_context`` (previous
    embeddings ``inject`` needs) and ``min_history`` (history positions f needs even on the first
    segment; they start as zeros).

    >>> class Decay(SequenceCell):
    ...     d_state = d_inject = d_input = d_out = 2
    ...     def inject(self, x):
    ...         return x
    ...     def forward(self, z1s, us, z0):
    ...         return 0.5 * z1s + us[:, z0.shape[1]:]
    >>> cell = Decay()
    >>> m = cell.initial_memory(torch.zeros(1, 3, 2))
    >>> m.length
    0
    """

    d_state: int
    d_inject: int
    d_input: int
    d_out: int
    input_context: int = 0
    min_history: int = 0

    def inject(self, x: torch.Tensor) -> torch.Tensor:
        """Injection for the segment's positions from ``x`` = [previous context, segment]."""
        raise NotImplementedError

    def extra_inputs(self, qlen: int, klen: int, like: torch.Tensor) -> tuple:
        """Further inputs of f that depend only on the lengths (e.g. positional encodings)."""
        return ()

    def output(self, z: torch.Tensor) -> torch.Tensor:
        """The features the head reads from the equilibrium (default: all of z)."""
        return z

    def initial_memory(self, x: torch.Tensor) -> Memory:
        """Zero history for the first segment of a batch of embeddings ``x`` (B, L', E)."""
        b, n = x.shape[0], self.min_history
        zeros = x.new_zeros
        context = zeros(b, self.input_context, x.shape[2])
        return Memory(zeros(b, n, self.d_state), zeros(b, n, self.d_inject), context)


class SequenceDEQ(nn.Module):
    """Solve a :class:`SequenceCell` over a segment with history; returns (z*, memory, solution).

    Args:
        cell: the sequence cell.
        mem_len: history positions kept for the next segment (at least ``cell.min_history``).
        unroll: 0 solves to equilibrium; n > 0 applies the cell n times explicitly (the
            weight-tied unrolled baseline, backpropagated like an n-layer network).
        subseq_len: 0 solves the whole segment at once; n > 0 splits it into subsequences of
            n positions solved in turn, each with the memory and the earlier subsequences'
            equilibria as history (DEQ paper, Appendix E). For a causal cell this is the same
            fixed point and the same gradient (the earlier equilibria stay in the graph), with
            shorter solves. The returned solution combines the subsequences (see
            :func:`combine_solutions`).
        **deq_options: keyword arguments of :class:`deqkit.DEQ`.

    >>> from deqkit.zoo.deq_transformer import DEQTransformerCell
    >>> layer = SequenceDEQ(DEQTransformerCell(8, 2, 16), mem_len=4, max_iter=30, tol=1e-4)
    >>> x = torch.randn(2, 5, 8)
    >>> z, mem, sol = layer(x)
    >>> z.shape, mem.z.shape, mem.u.shape
    (torch.Size([2, 5, 8]), torch.Size([2, 4, 8]), torch.Size([2, 4, 24]))
    """

    def __init__(
        self,
        cell: SequenceCell,
        mem_len: int = 0,
        unroll: int = 0,
        subseq_len: int = 0,
        **deq_options,
    ):
        super().__init__()
        if not isinstance(cell, SequenceCell):
            raise TypeError(f"cell must be a SequenceCell, got {type(cell).__name__}")
        if isinstance(mem_len, bool) or not isinstance(mem_len, int) or mem_len < 0:
            raise ValueError(f"mem_len must be an int >= 0, got {mem_len!r}")
        self.mem_len = max(mem_len, cell.min_history)
        if isinstance(unroll, bool) or not isinstance(unroll, int) or unroll < 0:
            raise ValueError(f"unroll must be an int >= 0, got {unroll!r}")
        self.unroll = unroll
        if isinstance(subseq_len, bool) or not isinstance(subseq_len, int) or subseq_len < 0:
            raise ValueError(f"subseq_len must be an int >= 0, got {subseq_len!r}")
        self.subseq_len = subseq_len
        if unroll:
            # An explicit network, not a DEQ (the trainer's pretraining switch leaves it alone).
            self.unrolled_cell = cell
            self.deq = None
        else:
            self.deq = dk.DEQ(cell, **deq_options)

    @property
    def cell(self) -> SequenceCell:
        """The sequence cell."""
        return self.unrolled_cell if self.deq is None else self.deq.cell

    def output(self, z: torch.Tensor) -> torch.Tensor:
        """The features of the equilibrium the head reads (``cell.output``)."""
        return self.cell.output(z)

    def forward(
        self, x: torch.Tensor, memory: Memory | None = None, z_init: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, Memory, dk.Solution]:
        """Equilibrium of segment embeddings ``x`` (B, L', E) given the previous ``memory``."""
        cell = self.cell
        if memory is None:
            memory = cell.initial_memory(x)
        if memory.batch_size != x.shape[0]:
            raise ValueError(f"memory has batch size {memory.batch_size} but x has {x.shape[0]}")
        qlen, klen = x.shape[1], memory.length + x.shape[1]
        u = cell.inject(torch.cat([memory.x, x], dim=1))  # once per forward, outside the solve
        us = torch.cat([memory.u, u], dim=1)
        extra = cell.extra_inputs(qlen, klen, x)
        z0 = memory.z
        start = z_init if z_init is not None else x.new_zeros(x.shape[0], qlen, cell.d_state)
        if self.deq is None:
            z, sol = self._unrolled(start, us, z0, extra)
        elif self.subseq_len and qlen > self.subseq_len:
            z, sol = self._by_subsequence(start, memory, u)
        else:
            z, sol = self.deq(us, z0, *extra, z0=start)
        new = self._next_memory(memory, z, u, x)
        return z, new, sol

    def _by_subsequence(self, start, memory: Memory, u):
        cell, n = self.cell, self.subseq_len
        hist_z, hist_u, parts, sols = memory.z, memory.u, [], []
        for a in range(0, u.shape[1], n):
            u_part = u[:, a : a + n]
            q = u_part.shape[1]
            hist_u = torch.cat([hist_u, u_part], dim=1)
            extra = cell.extra_inputs(q, hist_z.shape[1] + q, u_part)
            z_part, sol = self.deq(hist_u, hist_z, *extra, z0=start[:, a : a + q])
            # Not detached: the later subsequences' gradient reaches this equilibrium.
            hist_z = torch.cat([hist_z, z_part], dim=1)
            parts.append(z_part)
            sols.append(sol)
        return torch.cat(parts, dim=1), combine_solutions(sols)

    def _unrolled(self, z, us, z0, extra):
        cell = self.unrolled_cell
        dk.reset_dropout(cell)  # one mask for all layers, as in the DEQ's solve
        with dk.cached_weights(cell):
            for _ in range(self.unroll):
                z = cell(z, us, z0, *extra)
        return z, explicit_record(z, self.unroll)

    def _next_memory(self, memory: Memory, z, u, x) -> Memory:
        return memory.advance(z, u, x, self.mem_len, self.cell.input_context)


def combine_solutions(sols: list[dk.Solution]) -> dk.Solution:
    """One Solution for the subsequences of a segment, per sample: converged if every part
    converged, ``nstep`` and residuals the worst part's, ``nfev`` summed, the worst status,
    the mean of the parts' Jacobian penalties; ``backward`` is the last part's adjoint.

    >>> import deqkit as dk
    >>> f = lambda z: 0.5 * z + 1.0
    >>> a = dk.solve(f, torch.zeros(2, 1), "fixed_point", max_iter=3, on_failure="ignore")
    >>> b = dk.solve(f, torch.zeros(2, 1), "fixed_point", tol=1e-6)
    >>> c = combine_solutions([a, b])
    >>> c.status.name, c.nstep.tolist() == b.nstep.tolist(), c.nfev == a.nfev + b.nfev
    ('MAX_ITER', True, True)
    """
    last = sols[-1]
    worst = lambda name: torch.stack([getattr(s, name) for s in sols]).amax(0)  # noqa: E731
    jac = [s.outputs.jac_loss for s in sols if s.outputs.jac_loss is not None]
    outputs = last.outputs
    if jac:
        outputs = dataclasses.replace(outputs, jac_loss=torch.stack(jac).mean())
    return dataclasses.replace(
        last,
        status=max(s.status for s in sols),
        converged=torch.stack([s.converged for s in sols]).all(0),
        nstep=worst("nstep"),
        residual=worst("residual"),
        abs_residual=worst("abs_residual"),
        rel_residual=worst("rel_residual"),
        nfev=sum(s.nfev for s in sols),
        trace=None,
        outputs=outputs,
    )


def explicit_record(z: torch.Tensor, layers: int) -> dk.Solution:
    """A Solution describing an explicit pass of ``layers`` cell calls (for uniform logging).

    >>> explicit_record(torch.zeros(2, 3, 4), 5).nfev
    5
    """
    _, sol = dk.DEQ(lambda s, x: s).pretrain(layers)(z.detach().reshape(z.shape[0], -1))
    return sol


def _keep(old: torch.Tensor, new: torch.Tensor, m: int) -> torch.Tensor:
    """The last m positions of [old, new], detached (memories carry no gradient)."""
    if m == 0:
        return new[:, :0].detach()
    return torch.cat([old, new.detach()], dim=1)[:, -m:]
