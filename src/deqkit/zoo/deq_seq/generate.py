"""Sampling from a trained sequence LM, reusing the cached equilibria as memory.

``deqkit generate CHECKPOINT --prompt TEXT --n N [--temperature T]`` (also
``python -m deqkit.zoo.deq_seq.generate``) prints the prompt and its continuation from a
``deqkit train`` checkpoint of this package.

The prompt is solved once; each new token is then a segment of length one whose history
padding is the memory (the previous positions' equilibria and injections), so the prompt is
never re-solved. With ``mem_len`` at least the total length this is exactly the distribution of
re-solving the whole prefix (tested).
"""

from __future__ import annotations

import argparse

import torch

from .model import SequenceLM

__all__ = ["generate", "generate_text", "main", "run_generate"]


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


def generate_text(
    checkpoint: str, prompt: str, n: int, temperature: float = 1.0, seed: int = 0
) -> str:
    """Load a ``deqkit train`` checkpoint of this package and continue ``prompt`` by ``n`` tokens.

    User mistakes (no such checkpoint, not a text LM of this package, an empty prompt, a
    negative ``n`` or temperature) raise :class:`~deqkit.train.errors.UserError` subclasses.

    >>> generate_text("/nonexistent/run", "ab", 3)
    Traceback (most recent call last):
    ...
    deqkit.train.errors.CheckpointError: checkpoint /nonexistent/run does not exist
    """
    from deqkit.data.text import Vocab, tokenize
    from deqkit.train.build import build_model
    from deqkit.train.checkpoint import load_checkpoint, load_model_state
    from deqkit.train.errors import CheckpointError, ConfigError
    from deqkit.train.recipe import parse

    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ConfigError(f"--n must be an int >= 0, got {n!r}")
    if not temperature >= 0:
        raise ConfigError(f"--temperature must be >= 0, got {temperature!r}")
    state = load_checkpoint(checkpoint)
    cfg = parse(state["config"])
    name = cfg.model.get("name")
    itos = (state.get("data_state") or {}).get("itos")
    if name not in ("deq_seq", "deq_transformer", "trellisnet") or itos is None:
        raise CheckpointError(
            f"{checkpoint} is not a text language model of the sequence DEQs (model {name!r}, "
            f"dataset {cfg.data.name!r}); generate needs a run of e.g. deq-transformer-wiki-char"
        )
    vocab, level = Vocab(tuple(itos)), cfg.data_options.level
    model = build_model(cfg, {"vocab_size": len(vocab), "level": level})
    load_model_state(model, state["model"], f"checkpoint {checkpoint}")
    ids = vocab.encode(tokenize(prompt, level) if level == "word" else list(prompt))
    if ids.numel() == 0:
        raise ConfigError(f"--prompt has no {level} tokens: {prompt!r}")
    gen = torch.Generator().manual_seed(seed)
    out = generate(model, ids[None], n, temperature, gen)
    return ("" if level == "char" else " ").join(vocab.decode(out[0]))


def run_generate(args: argparse.Namespace) -> int:
    """``deqkit generate``: print the prompt and its continuation; returns the exit status.

    >>> ns = argparse.Namespace(checkpoint="/nonexistent", prompt="a", n=2, temperature=1.0, seed=0)
    >>> run_generate(ns)
    Traceback (most recent call last):
    ...
    deqkit.train.errors.CheckpointError: checkpoint /nonexistent does not exist
    """
    print(generate_text(args.checkpoint, args.prompt, args.n, args.temperature, args.seed))
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m deqkit.zoo.deq_seq.generate ARGS`` is ``deqkit generate ARGS``.

    >>> main(["/nonexistent", "--prompt", "a"])  # the one-line error goes to stderr
    2
    """
    import sys

    from deqkit.cli import main as cli_main

    return cli_main(["generate", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    raise SystemExit(main())
