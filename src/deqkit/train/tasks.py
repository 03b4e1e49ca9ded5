"""The shipped tasks besides classification: multi-label node classification, language
modelling, dense regression (optical flow), signal fitting and generative models.

Each is a :class:`~deqkit.train.task.Task`; zoo packages use them as they are or subclass them
(another input layout: override ``split``/``forward``; pictures: override ``pictures``).

>>> import torch
>>> task = LanguageModel({"vocab_size": 4}, unit="char")
>>> logits = torch.zeros(1, 3, 4)                      # uniform over 4 symbols
>>> metrics = task.metrics()
>>> task.update(metrics, logits, torch.tensor([[0, 1, 2]]))
>>> {k: round(float(m.compute()), 3) for k, m in metrics.items()}
{'ppl': 4.0, 'bpc': 2.0}
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal

import torch
from torch import nn
from torchmetrics import Metric

from .task import Best, Task

__all__ = ["DenseRegression", "Generative", "LanguageModel", "MultiLabel", "SignalFit"]


def _need(task: str, info: Mapping[str, Any], key: str) -> int:
    if key not in info:
        raise ValueError(f"the {task} task needs data_info[{key!r}]; got keys {sorted(info)}")
    return int(info[key])


def _masked(targets: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    # Targets are a tensor or (tensor, mask): a mask selects the scored nodes/pixels.
    if isinstance(targets, (tuple, list)):
        y, mask = targets
        return y, mask
    return targets, None


class _MeanOf(Metric):
    """Sum of per-element values over the count, times ``scale`` (DDP-reduced by torchmetrics)."""

    full_state_update = False

    def __init__(self, scale: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.scale = scale
        self.add_state("total", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, values: torch.Tensor) -> None:
        self.total += values.detach().double().sum().cpu()
        self.count += values.numel()

    def compute(self) -> torch.Tensor:
        return self.total / self.count.clamp_min(1) * self.scale


class _Bits(_MeanOf):
    """Bits per unit (character or word): mean token cross-entropy in nats / ln 2."""

    def __init__(self, **kwargs):
        super().__init__(scale=1.0 / math.log(2.0), **kwargs)

    def update(self, logits: torch.Tensor, target: torch.Tensor) -> None:  # type: ignore[override]
        nll = nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]).float(), target.reshape(-1), reduction="none"
        )
        super().update(nll)


class MultiLabel(Task):
    """Multi-label (node) classification: binary cross-entropy per label, micro-F1 ("best").

    Targets are (N, L) 0/1 labels, or ``(labels, mask)`` with a boolean (N,) mask of the nodes
    that count (a transductive split of one graph). The model returns (N, L) logits.
    ``data_info`` needs ``num_labels``.

    >>> task = MultiLabel({"num_labels": 2})
    >>> logits = torch.tensor([[3.0, -3.0], [3.0, 3.0]])
    >>> y, mask = torch.tensor([[1, 0], [0, 1]]), torch.tensor([True, False])
    >>> m = task.metrics(); task.update(m, logits, (y, mask)); float(m["f1"].compute())
    1.0
    """

    name = "multilabel"
    best = Best("f1", "max")

    def __init__(self, data_info: Mapping[str, Any], threshold: float = 0.5):
        super().__init__(data_info)
        self.num_labels = _need("multilabel", self.data_info, "num_labels")
        self.threshold = float(threshold)

    @staticmethod
    def _select(output, targets):
        y, mask = _masked(targets)
        return (output, y) if mask is None else (output[mask], y[mask])

    def criterion(self, output, targets):
        logits, y = self._select(output, targets)
        return nn.functional.binary_cross_entropy_with_logits(logits, y.to(logits.dtype))

    def metrics(self):
        from torchmetrics.classification import MultilabelF1Score

        return {"f1": MultilabelF1Score(self.num_labels, threshold=self.threshold, average="micro")}

    def update(self, metrics, output, targets):
        logits, y = self._select(self.final(output), targets)
        metrics["f1"].update(torch.sigmoid(logits), y.long())

    def step_metrics(self, output, targets):
        logits, y = self._select(self.final(output), targets)
        hit = ((logits > 0) == y.bool()).float().mean().item()
        return {"label_acc": hit}

    def count(self, inputs, targets):
        y, mask = _masked(targets)
        return int(mask.sum()) if mask is not None else int(y.shape[0])


class LanguageModel(Task):
    """Next-token prediction: cross-entropy per token, perplexity ("best", min) and bits per
    character or word.

    Batches are ``(tokens, next_tokens)`` of shape (B, T); the model returns logits (B, T, V).
    Args: ``unit``: "char" logs ``bpc``, "word" logs ``bpw``, "token" neither.
    ``data_info`` needs ``vocab_size``.
    """

    name = "language_model"
    best = Best("ppl", "min")

    def __init__(
        self, data_info: Mapping[str, Any], unit: Literal["char", "word", "token"] = "token"
    ):
        super().__init__(data_info)
        if unit not in ("char", "word", "token"):
            raise ValueError(f"task.unit must be 'char', 'word' or 'token', got {unit!r}")
        self.vocab_size = _need("language_model", self.data_info, "vocab_size")
        self.unit = unit

    def criterion(self, output, targets):
        return nn.functional.cross_entropy(
            output.reshape(-1, output.shape[-1]).float(), targets.reshape(-1)
        )

    def metrics(self):
        from torchmetrics.text import Perplexity

        metrics: dict[str, Metric] = {"ppl": Perplexity()}
        if self.unit != "token":
            metrics["bpc" if self.unit == "char" else "bpw"] = _Bits()
        return metrics

    def update(self, metrics, output, targets):
        logits = self.final(output).float()
        for metric in metrics.values():
            metric.update(logits, targets)

    def step_metrics(self, output, targets):
        with torch.no_grad():
            nll = self.criterion(self.final(output), targets).item()
        return {"ppl": math.exp(min(nll, 50.0))}

    def count(self, inputs, targets):
        return int(targets.numel())


def _end_point_error(pred: torch.Tensor, target: torch.Tensor, mask) -> torch.Tensor:
    # Per-pixel L2 norm over the vector channel (dim 1): (N, C, H, W) -> (N, H, W).
    epe = (pred.float() - target.float()).norm(dim=1)
    return epe[mask.bool()] if mask is not None else epe


class DenseRegression(Task):
    """Dense vector fields (optical flow): L1 training loss, end-point error ("best", min) and
    the share of pixels off by more than 1, 3 and 5 px.

    Targets are (N, C, H, W), or ``(field, valid)`` with a (N, H, W) validity mask.

    >>> task = DenseRegression({})
    >>> pred, gt = torch.zeros(1, 2, 1, 2), torch.tensor([[[[3.0, 0.0]], [[4.0, 0.0]]]])
    >>> m = task.metrics(); task.update(m, pred, gt)
    >>> {k: float(v.compute()) for k, v in m.items()}
    {'epe': 2.5, 'out1px': 0.5, 'out3px': 0.5, 'out5px': 0.0}
    """

    name = "regression"
    best = Best("epe", "min")
    thresholds = (1.0, 3.0, 5.0)

    def criterion(self, output, targets):
        y, mask = _masked(targets)
        err = (output.float() - y.float()).abs().sum(dim=1)
        return err[mask.bool()].mean() if mask is not None else err.mean()

    def metrics(self):
        metrics: dict[str, Metric] = {"epe": _MeanOf()}
        for t in self.thresholds:
            metrics[f"out{t:g}px"] = _MeanOf()
        return metrics

    def update(self, metrics, output, targets):
        y, mask = _masked(targets)
        epe = _end_point_error(self.final(output), y, mask)
        metrics["epe"].update(epe)
        for t in self.thresholds:
            metrics[f"out{t:g}px"].update((epe > t).double())

    def step_metrics(self, output, targets):
        y, mask = _masked(targets)
        return {"epe": _end_point_error(self.final(output).detach(), y, mask).mean().item()}

    def pictures(self, inputs, targets, output):
        from ..plot import field_picture

        y, _ = _masked(targets)
        pred = self.final(output)
        return {"field": field_picture(pred[0], y[0])}


class SignalFit(Task):
    """Fitting a signal (an image, a sound) at coordinates: MSE loss, PSNR ("best", max).

    Batches are ``(coords, values)``; the model returns values of the same shape. Args:
    ``data_range``: the signal's value range for PSNR (1.0 for images in [0, 1]). When
    ``data_info`` has ``image_shape`` (H, W, C) and a batch holds the whole image in raster
    order, :meth:`pictures` shows the reconstruction next to the target.

    >>> task = SignalFit({})
    >>> m = task.metrics(); task.update(m, torch.zeros(4, 1), torch.full((4, 1), 0.1))
    >>> round(float(m["psnr"].compute()), 2)
    20.0
    """

    name = "signal"
    best = Best("psnr", "max")

    def __init__(self, data_info: Mapping[str, Any], data_range: float = 1.0):
        super().__init__(data_info)
        self.data_range = float(data_range)

    def criterion(self, output, targets):
        return nn.functional.mse_loss(output.float(), targets.float())

    def metrics(self):
        from torchmetrics.image import PeakSignalNoiseRatio

        return {"psnr": PeakSignalNoiseRatio(data_range=self.data_range)}

    def update(self, metrics, output, targets):
        metrics["psnr"].update(self.final(output).float(), targets.float())

    def step_metrics(self, output, targets):
        mse = self.criterion(self.final(output).detach(), targets).item()
        return {"psnr": 10 * math.log10(self.data_range**2 / max(mse, 1e-20))}

    def pictures(self, inputs, targets, output):
        shape = self.data_info.get("image_shape")
        pred = self.final(output)
        if shape is None or pred.numel() != math.prod(shape):
            return {}
        from ..plot import side_by_side

        as_image = [t.detach().float().reshape(shape) / self.data_range for t in (pred, targets)]
        return {"reconstruction": side_by_side(*as_image)}


class Generative(Task):
    """Generative models trained by a regression objective (a denoiser predicting the noise):
    the model returns ``(prediction, target)`` and the loss is their MSE ("best": the eval loss,
    min). A sample-quality measure (a Fréchet distance, say) plugs in by overriding
    :meth:`~deqkit.train.task.Task.model_metrics`, which the trainer calls at each evaluation.
    """

    name = "generative"
    best = Best("loss", "min")

    def split(self, batch):
        # Unlabelled data: the inputs are the batch (images, or images and their labels).
        return batch, None

    def criterion(self, output, targets):
        prediction, target = output
        return nn.functional.mse_loss(prediction.float(), target.float())

    def metrics(self):
        return {}

    def update(self, metrics, output, targets):
        return None
