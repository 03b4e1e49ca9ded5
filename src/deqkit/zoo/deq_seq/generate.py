"""Sampling from a trained sequence LM, reusing the cached equilibria as memory.

The prompt is solved once; each new token is then a segment of length one whose history
padding is the memory (the previous positions' equilibria and injections), so the prompt is
never re-solved. With ``mem_len`` at least the total length this is exactly the distribution of
re-solving the whole prefix (tested).
"""

from __future__ import annotations

import torch

from .model import SequenceLM

__all__ = ["generate"]


@torch.no_grad()
def generate(
    model: SequenceLM,
    prompt: torch.Tensor,
    tokens: int,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Extend ``prompt`` (B, P) by ``tokens`` sampled tokens → (B, P + tokens).

    ``temperature`` 0 decodes greedily.

    >>> from deqkit.zoo.deq_seq import SeqLMConfig
    >>> lm = SequenceLM(SeqLMConfig(block="lstm", d_model=4, d_hidden=4), vocab_size=5)
    >>> generate(lm, torch.tensor([[1, 2]]), 3, temperature=0.0).shape
    torch.Size([1, 5])
    """
    if prompt.dim() != 2 or prompt.shape[1] < 1:
        raise ValueError(f"prompt must be (batch, length >= 1), got shape {tuple(prompt.shape)}")
    if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 0:
        raise ValueError(f"tokens must be an int >= 0, got {tokens!r}")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    was = model.training
    model.eval()
    out = [prompt]
    h, memory, _ = model(prompt)
    for i in range(tokens):
        logp = model.log_probs(h[:, -1])
        if temperature == 0:
            nxt = logp.argmax(-1, keepdim=True)
        else:
            probs = torch.softmax(logp / temperature, dim=-1)
            nxt = torch.multinomial(probs, 1, generator=generator)
        out.append(nxt)
        if i + 1 < tokens:
            h, memory, _ = model(nxt, memory)
    model.train(was)
    return torch.cat(out, dim=1)
