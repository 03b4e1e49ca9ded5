"""The DEQ-Transformer cell (Bai, Kolter, Koltun, NeurIPS 2019, §4 and the reference code).

f(z1s; us, z0) is one Transformer block over [z0, z1s] whose queries, keys and values receive
the input injection us (a position-wise linear map of the embeddings to 3·d, added to Q, K and
V), with Transformer-XL relative positional attention (learned biases r_w, r_r, Dai et al.
2019), a causal mask, and a two-layer FFN; post-LN by default, pre-LN optional.
"""

from __future__ import annotations

import math

import torch
from torch import nn

import deqkit as dk
from deqkit.zoo.deq_seq.seq import SequenceCell

__all__ = ["DEQTransformerCell", "sinusoid"]


def sinusoid(length: int, dim: int, like: torch.Tensor) -> torch.Tensor:
    """Sinusoidal encodings of the distances length−1, …, 0 → (length, dim); row k is distance k.

    >>> sinusoid(3, 4, torch.zeros(1)).shape
    torch.Size([3, 4])
    """
    dist = torch.arange(length, device=like.device, dtype=like.dtype)
    inv = 1.0 / (10000 ** (torch.arange(0, dim, 2, device=like.device, dtype=like.dtype) / dim))
    angles = dist[:, None] * inv[None, :]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


class DEQTransformerCell(SequenceCell):
    """One weight-tied Transformer-XL block with input injection into Q, K and V.

    Args:
        d_model: width d of z (and of the embeddings).
        n_head: attention heads (must divide d_model).
        d_inner: hidden width of the FFN.
        dropout: variational dropout after attention and FFN (one mask per DEQ call, shared by
            every position of a sample, as the reference's VariationalHidDropout).
        pre_ln: pre-LN block instead of the default post-LN.
        init_std: std of the N(0, init_std) initialisation of every linear weight (small, as
            the paper's 0.05, so f starts close to a contraction).
        weight_norm: weight-normalise every linear layer (evaluated once per forward).
        residual: add z1s to the attention output (the reference code) or not (the default:
            the paper's equation f = LN(φ(LN(SelfAttn(z W + x̃))))). Without it f depends on
            z only through attention, which is far better conditioned: at small init it is a
            contraction with one equilibrium, where the residual form is close to the
            identity on the LayerNorm sphere (slow, ill-posed roots; see the README).
        attn_dropout: dropout on the attention probabilities with one mask per DEQ call
            (per sample, head, query and key), so f stays a fixed map during the solve (the
            reference's ``dropatt`` draws a new mask at every call of f).

    >>> cell = DEQTransformerCell(8, 2, 16)
    >>> x, z0 = torch.randn(2, 5, 8), torch.randn(2, 3, 8)
    >>> us = torch.cat([torch.zeros(2, 3, 24), cell.inject(x)], dim=1)
    >>> cell(torch.zeros(2, 5, 8), us, z0, *cell.extra_inputs(5, 8, x)).shape
    torch.Size([2, 5, 8])
    """

    def __init__(
        self,
        d_model: int,
        n_head: int,
        d_inner: int,
        dropout: float = 0.0,
        pre_ln: bool = False,
        init_std: float = 0.05,
        weight_norm: bool = True,
        residual: bool = False,
        attn_dropout: float = 0.0,
    ):
        super().__init__()
        if d_model % n_head:
            raise ValueError(f"n_head={n_head} must divide d_model={d_model}")
        self.d_state = self.d_input = self.d_out = d_model
        self.d_inject = 3 * d_model
        self.n_head, self.d_head = n_head, d_model // n_head
        self.pre_ln, self.residual = pre_ln, residual
        self.inject_net = nn.Linear(d_model, 3 * d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)
        self.r_net = nn.Linear(d_model, d_model, bias=False)
        self.o_net = nn.Linear(d_model, d_model, bias=False)
        self.r_w_bias = nn.Parameter(torch.zeros(n_head, self.d_head))
        self.r_r_bias = nn.Parameter(torch.zeros(n_head, self.d_head))
        self.ff = nn.Sequential(
            nn.Linear(d_model, d_inner), nn.ReLU(), nn.Linear(d_inner, d_model)
        )  # fmt: skip
        self.ln1, self.ln2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.drop_attn = dk.VariationalDropout(dropout, shared_dims=(1,))
        self.drop_ff = dk.VariationalDropout(dropout, shared_dims=(1,))
        self.drop_prob = dk.VariationalDropout(attn_dropout)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, 0.0, init_std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        nn.init.normal_(self.r_w_bias, 0.0, init_std)
        nn.init.normal_(self.r_r_bias, 0.0, init_std)
        if weight_norm:
            dk.apply_norm(self, "weight")

    def inject(self, x: torch.Tensor) -> torch.Tensor:
        """Injection (B, L', 3d) added to Q, K, V: a position-wise map of the embeddings."""
        return self.inject_net(x)

    def extra_inputs(self, qlen: int, klen: int, like: torch.Tensor) -> tuple:
        """Relative encodings (klen, d), each (query, key)'s distance index and the causal mask."""
        mlen = klen - qlen
        pos = sinusoid(klen, self.d_state, like)
        dist = mlen + torch.arange(qlen, device=like.device)[:, None]
        dist = dist - torch.arange(klen, device=like.device)[None, :]
        masked = dist < 0  # a key after the query
        return pos, dist.clamp(0, klen - 1), masked

    def forward(self, z1s, us, z0, pos, dist, masked):
        b, qlen, d = z1s.shape
        h, dh = self.n_head, self.d_head
        full = torch.cat([z0, z1s], dim=1)
        klen = full.shape[1]
        heads = self.qkv(self.ln1(full) if self.pre_ln else full) + us
        q = heads[:, -qlen:, :d].reshape(b, qlen, h, dh)
        k = heads[:, :, d : 2 * d].reshape(b, klen, h, dh)
        v = heads[:, :, 2 * d :].reshape(b, klen, h, dh)
        r = self.r_net(pos).reshape(klen, h, dh)
        content = torch.einsum("bqhd,bkhd->bhqk", q + self.r_w_bias, k)
        by_dist = torch.einsum("bqhd,rhd->bhqr", q + self.r_r_bias, r)
        position = by_dist.gather(3, dist.expand(b, h, qlen, klen))
        score = (content + position) / math.sqrt(dh)
        prob = self.drop_prob(score.masked_fill(masked, float("-inf")).softmax(dim=3))
        attn = torch.einsum("bhqk,bkhd->bqhd", prob, v).reshape(b, qlen, d)
        attn = self.drop_attn(self.o_net(attn))
        if self.residual:
            attn = attn + z1s
        if self.pre_ln:
            return attn + self.drop_ff(self.ff(self.ln2(attn)))
        mid = self.ln1(attn)
        return self.ln2(mid + self.drop_ff(self.ff(mid)))
