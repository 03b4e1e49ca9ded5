"""The shipped tasks: losses, metrics against closed forms, DEQ terms, pictures, lookup."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from deqkit.train.task import Classification, DEQTerms, get_task
from deqkit.train.tasks import DenseRegression, Generative, LanguageModel, MultiLabel, SignalFit


def _compute(task, output, targets):
    metrics = task.metrics()
    task.update(metrics, output, targets)
    return {k: float(m.compute()) for k, m in metrics.items()}


def test_language_model_perplexity_and_bits_agree():
    torch.manual_seed(0)
    logits, y = torch.randn(3, 5, 7), torch.randint(0, 7, (3, 5))
    nll = torch.nn.functional.cross_entropy(logits.reshape(-1, 7), y.reshape(-1)).item()
    char = _compute(LanguageModel({"vocab_size": 7}, unit="char"), logits, y)
    assert char["ppl"] == pytest.approx(math.exp(nll), rel=1e-5)
    assert char["bpc"] == pytest.approx(nll / math.log(2), rel=1e-5)
    word = _compute(LanguageModel({"vocab_size": 7}, unit="word"), logits, y)
    assert set(word) == {"ppl", "bpw"}
    assert LanguageModel({"vocab_size": 7}).count(None, y) == 15
    with pytest.raises(ValueError, match="vocab_size"):
        LanguageModel({})


def test_multilabel_counts_only_masked_nodes():
    task = MultiLabel({"num_labels": 3})
    logits = torch.tensor([[5.0, -5.0, 5.0], [-5.0, -5.0, -5.0]])
    y = torch.tensor([[1, 0, 1], [1, 1, 1]])
    assert _compute(task, logits, (y, torch.tensor([True, False])))["f1"] == 1.0
    assert _compute(task, logits, y)["f1"] == pytest.approx(2 * 2 / (2 * 2 + 3))
    assert task.count(None, (y, torch.tensor([True, False]))) == 1


def test_dense_regression_masks_invalid_pixels():
    pred = torch.zeros(1, 2, 2, 2)
    gt = torch.ones(1, 2, 2, 2) * torch.tensor([3.0, 4.0]).view(1, 2, 1, 1)
    valid = torch.tensor([[[True, False], [False, False]]])
    assert _compute(DenseRegression({}), pred, (gt, valid))["epe"] == pytest.approx(5.0)
    assert DenseRegression({}).criterion(pred, (gt, valid)).item() == pytest.approx(7.0)
    picture = DenseRegression({}).pictures(None, gt, pred)["field"]
    assert picture.shape == (2, 6, 3) and picture.max() <= 1.0


def test_signal_fit_psnr_and_picture():
    task = SignalFit({"image_shape": (2, 2, 1)})
    target = torch.full((4, 1), 0.5)
    assert _compute(task, target + 0.1, target)["psnr"] == pytest.approx(20.0, rel=1e-4)
    assert task.pictures(None, target, target)["reconstruction"].shape == (2, 6, 3)


def test_deq_terms_and_fixed_point_correction_in_the_loss():
    task = Classification({"num_classes": 2})
    logits, y = torch.tensor([[2.0, 0.0]]), torch.tensor([1])
    outputs = SimpleNamespace(jac_loss=torch.tensor(3.0), skip_loss=torch.tensor(0.5))
    sol = SimpleNamespace(outputs=outputs)
    loss = task.loss(logits, y, sol, DEQTerms(jac_weight=2.0, skip_weight=4.0))
    ce = task.criterion(logits, y)
    assert loss.total.item() == pytest.approx(ce.item() + 6.0 + 2.0)
    assert set(loss.terms) == {"task", "jac", "skip"}
    both = task.loss([logits, logits], y, None, DEQTerms(fpc_gamma=0.5))
    assert both.total.item() == pytest.approx(1.5 * ce.item())
    assert both.terms["task_final"].item() == pytest.approx(ce.item())


def test_generative_loss_and_lookup():
    task = Generative({})
    assert task.split(torch.zeros(2, 3))[1] is None
    out = (torch.ones(2, 3), torch.zeros(2, 3))
    assert task.criterion(out, None).item() == 1.0 and task.count(torch.zeros(2, 3), None) == 2
    assert get_task("language_model") is LanguageModel
    with pytest.raises(ValueError, match="cannot import"):
        get_task("no_such_module:Task")
