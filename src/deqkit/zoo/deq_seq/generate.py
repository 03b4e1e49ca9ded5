"""Sampling from a trained sequence LM, reusing the cached equilibria as memory.

``python -m deqkit.zoo.deq_seq.generate CHECKPOINT --prompt TEXT --tokens N [--temperature T]``
prints the prompt and its continuation from a ``deqkit train`` checkpoint of this package.

The prompt is solved once; each new token is then a segment of length one whose history
padding is the memory (the previous positions' equilibria and injections), so the prompt is
never re-solved. With ``mem_len`` at least the total length this is exactly the distribution of
re-solving the whole prefix (tested).
"""

from __future__ import annotations

import argparse

import torch

from .model import SequenceLM

__all__ = ["generate", "main"]


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


def main(argv: list[str] | None = None) -> str:
    """Load a checkpoint, continue ``--prompt`` by ``--tokens`` tokens, print and return it."""
    from deqkit.data.text import Vocab, tokenize
    from deqkit.train.build import build_model
    from deqkit.train.checkpoint import load_checkpoint, load_model_state
    from deqkit.train.recipe import parse

    p = argparse.ArgumentParser(description="Sample text from a trained sequence LM.")
    p.add_argument("checkpoint")
    p.add_argument("--prompt", required=True)
    p.add_argument("--tokens", type=int, default=100)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    state = load_checkpoint(args.checkpoint)
    cfg = parse(state["config"])
    itos = (state.get("data_state") or {}).get("itos")
    if itos is None:
        raise ValueError(f"{args.checkpoint} holds no vocabulary: not a text-dataset run")
    vocab, level = Vocab(tuple(itos)), cfg.data_options.level
    model = build_model(cfg, {"vocab_size": len(vocab), "level": level})
    load_model_state(model, state["model"], f"checkpoint {args.checkpoint}")
    ids = vocab.encode(tokenize(args.prompt, level) if level == "word" else list(args.prompt))
    if ids.numel() == 0:
        raise ValueError("--prompt has no tokens")
    gen = torch.Generator().manual_seed(args.seed)
    out = generate(model, ids[None], args.tokens, args.temperature, gen)
    text = ("" if level == "char" else " ").join(vocab.decode(out[0]))
    print(text)
    return text


if __name__ == "__main__":
    main()
