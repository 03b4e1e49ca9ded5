"""Text loaders: the standard WikiText / PTB layouts (written here), bundled corpora, batching."""

from __future__ import annotations

import pytest
import torch

from deqkit.data.text import (
    EOS,
    UNK,
    TextSplits,
    Vocab,
    batchify,
    load_text,
    segments,
    split_stream,
    tokenize,
)

WIKI = {
    "train": " \n = Valkyria Chronicles III = \n \n Senjō no Valkyria 3 : <unk> Chronicles \n",
    "valid": " \n = Homarus gammarus = \n \n Homarus gammarus , known as the lobster \n",
    "test": " \n = Robert Boulter = \n \n Robert Boulter is an English actor \n",
}
PTB = {
    "train": " aer banknote berlitz <unk> \n pierre <unk> N years old \n",
    "valid": " consumers may want to move \n",
    "test": " no it was n't black monday \n",
}


def _write(folder, pattern, texts):
    for split, text in texts.items():
        (folder / pattern.format(split)).write_text(text, encoding="utf-8")


@pytest.mark.parametrize("name", ["wikitext2", "wikitext103"])
def test_wikitext_word_layout(tmp_path, name):
    _write(tmp_path, "wiki.{}.tokens", WIKI)
    s = load_text(name, "word", tmp_path)
    train = s.vocab.decode(s.train)
    assert train[:5] == ["=", "Valkyria", "Chronicles", "III", "="]
    assert train.count(EOS) == 2  # blank lines give no <eos>
    assert s.vocab.itos[-1] == UNK and s.vocab.itos.count(UNK) == 1  # the file's own <unk>
    test = s.vocab.decode(s.test)
    assert test[:4] == ["=", UNK, UNK, "="]  # words unseen in training are unknown
    assert s.info == {"vocab_size": len(s.vocab)}


def test_wikitext_char_reads_raw(tmp_path):
    _write(tmp_path, "wiki.{}.raw", {k: v.replace("<unk>", "x") for k, v in WIKI.items()})
    s = load_text("wikitext2", "char", tmp_path)
    assert "".join(s.vocab.decode(s.train)) == WIKI["train"].replace("<unk>", "x")


def test_ptb_word_and_char(tmp_path):
    _write(tmp_path, "ptb.{}.txt", PTB)
    s = load_text("ptb", "word", tmp_path)
    assert s.vocab.decode(s.train[:5]) == ["aer", "banknote", "berlitz", UNK, EOS]
    assert len(s.val) == 6 and int((s.val == s.vocab.unk).sum()) == 5
    chars = {k: " ".join("_".join(line.split()) for line in v.split("\n")) for k, v in PTB.items()}
    _write(tmp_path, "ptb.char.{}.txt", {k: v.replace("", " ").strip() for k, v in chars.items()})
    c = load_text("ptb", "char", tmp_path)
    assert "".join(c.vocab.decode(c.train[:15])) == "aer banknote be"


def test_missing_files_and_bad_names(tmp_path):
    with pytest.raises(ValueError, match="wiki.train.tokens"):
        load_text("wikitext2", "word", tmp_path)
    with pytest.raises(ValueError, match="set data.root"):
        load_text("ptb", "word")
    with pytest.raises(ValueError, match="level must be one of"):
        load_text("kjv", "byte")
    with pytest.raises(ValueError, match="takes no data.root"):
        load_text("kjv", "char", tmp_path)


def test_kjv_is_real_text():
    s = load_text("kjv", "char")
    text = "".join(s.vocab.decode(s.train[:60]))
    assert text.startswith("In the beginning God created the heaven")
    assert 3_000_000 < s.train.numel() < 4_500_000
    assert not any(ch.isdigit() for ch in text)  # verse markers stripped
    assert len(s.test) > 100_000 and float((s.test == s.vocab.unk).float().mean()) < 1e-3


def test_vocab_and_tokenize():
    v = Vocab.build(["b", "a", UNK, "b"])
    assert v.itos == ("b", "a", UNK)
    assert v.encode(["a", "zzz"]).tolist() == [1, 2]
    assert tokenize(" x  y \n", "word") == ["x", "y", EOS]
    with pytest.raises(ValueError, match="level"):
        tokenize("x", "subword")


def test_split_stream_is_contiguous_and_complete():
    text = "".join(f"line {i}\n" for i in range(1000))
    parts = split_stream(text)
    assert "".join(parts) == text
    assert all(p.endswith("\n") for p in parts)


def test_batchify_and_segments_cover_the_stream():
    stream = torch.arange(103)
    rows = batchify(stream, 4)
    assert rows.shape == (4, 25) and rows[1, 0] == 25  # contiguous rows
    xs, ys = zip(*segments(rows, 7), strict=True)
    assert torch.equal(torch.cat(xs, 1), rows[:, :-1])
    assert torch.equal(torch.cat(ys, 1), rows[:, 1:])
    with pytest.raises(ValueError, match="too short"):
        batchify(torch.arange(3), 2)
    with pytest.raises(ValueError, match="seq_len"):
        next(segments(rows, 0))


def test_from_texts_uses_training_vocabulary():
    s = TextSplits.from_texts("t", "word", "a b\n", "a c\n", "d\n")
    assert s.vocab.decode(s.val) == ["a", UNK, EOS]
    assert s.vocab.decode(s.test) == [UNK, EOS]
