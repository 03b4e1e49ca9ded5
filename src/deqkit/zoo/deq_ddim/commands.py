"""The ``deqkit sample`` and ``deqkit invert`` commands on a trained DEQ-DDIM denoiser.

``deqkit sample CHECKPOINT --sampler deq|ddim --steps T --n N [--out grid.png]`` samples N
images and prints the sequential denoiser rounds, f evaluations and wall time (and, for the
DEQ, the share of images whose every state reached the tolerance).

``deqkit invert CHECKPOINT --image PATH | --index K [--method deq-implicit|deq-phantom|backprop]``
optimises x_T so that DDIM(x_T) reconstructs the image (a PNG, or test image K of the
checkpoint's dataset), prints the per-pixel MSE and writes target | reconstruction as a PNG.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from deqkit.train.errors import CheckpointError, ConfigError, DataError

from .ddpm import DDPM
from .model_inversion import InversionOptions, invert_model
from .sampler import ddim_sample, deq_sample, draw_noise
from .schedule import ddim_steps

__all__ = ["load_denoiser", "pixels", "read_image", "run_invert", "run_sample", "save_grid"]


def load_denoiser(path: str) -> tuple[DDPM, dict]:
    """The DDPM of a ``deqkit train`` checkpoint (file or run directory) of this package and the
    checkpoint's state; a missing file or another model is a :class:`CheckpointError`."""
    from deqkit.train.build import build_model
    from deqkit.train.checkpoint import load_checkpoint, load_model_state
    from deqkit.train.recipe import parse

    file = Path(path)
    if file.is_dir():
        file = file / "checkpoint.pt"
    if not file.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    state = load_checkpoint(str(file))
    name = ((state.get("config") or {}).get("model") or {}).get("name")
    if name != "deq_ddim":
        raise CheckpointError(f"{path} holds a {name!r} model, not a deq_ddim denoiser")
    cfg = parse(state["config"])
    model = build_model(cfg, state["data_info"])
    load_model_state(model, state["model"], f"checkpoint {path}")
    return model.eval(), state


def _scaling(state: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel (1, C, 1, 1) mean and std of the checkpoint's preprocessing (colour too)."""
    pre = (state.get("data_state") or {}).get("preprocess", {})
    mean = torch.tensor(pre.get("mean") or [0.0], dtype=torch.float32)
    std = torch.tensor(pre.get("std") or [1.0], dtype=torch.float32)
    return mean.view(1, -1, 1, 1), std.view(1, -1, 1, 1)


def pixels(images: torch.Tensor, state: dict) -> torch.Tensor:
    """Standardised images of a checkpoint's data back in [0, 1] pixels, per channel."""
    mean, std = _scaling(state)
    return (images * std.to(images) + mean.to(images)).clamp(0, 1)


def save_grid(images: torch.Tensor, path: str | Path, columns: int | None = None) -> None:
    """Write images (N, C, H, W) with values in [0, 1] as one PNG grid (1-pixel white gaps).

    >>> import tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "g.png")
    >>> save_grid(torch.zeros(3, 1, 4, 4), p)
    >>> from skimage import io; io.imread(p).shape[:2]
    (11, 11)
    """
    from skimage import io

    n, c, h, w = images.shape
    cols = columns or int(n**0.5 + 0.999)
    rows = (n + cols - 1) // cols
    canvas = torch.ones(c, rows * (h + 1) + 1, cols * (w + 1) + 1)
    for i in range(n):
        r, col = divmod(i, cols)
        y, x = 1 + r * (h + 1), 1 + col * (w + 1)
        canvas[:, y : y + h, x : x + w] = images[i]
    pixels = (canvas.clamp(0, 1) * 255).round().to(torch.uint8)
    array = pixels[0].numpy() if c == 1 else pixels.permute(1, 2, 0).numpy()
    io.imsave(str(path), array, check_contrast=False)


def run_sample(args) -> int:
    """``deqkit sample``: sample, print the cost, write the grid."""
    if args.n < 1:
        raise ConfigError(f"--n must be >= 1, got {args.n}")
    model, state = load_denoiser(args.checkpoint)
    try:
        steps = ddim_steps(model.abar, args.steps, eta=args.eta)
    except ValueError as exc:
        raise ConfigError(f"--steps/--eta: {exc}") from None
    info = state["data_info"]
    shape = (args.n, info["in_channels"], info["image_size"], info["image_size"])
    g = torch.Generator().manual_seed(args.seed)
    x_T = torch.randn(shape, generator=g)
    noise = draw_noise(steps, x_T, generator=g)
    start = time.perf_counter()
    if args.sampler == "ddim":
        x0 = ddim_sample(model.eps, x_T, steps, noise)
        text = f"{args.steps} sequential denoiser rounds, {args.steps} f evaluations"
    else:
        out = deq_sample(model.eps, x_T, steps, noise, tol=args.tol, criterion=args.criterion)
        x0 = out.x0
        converged = out.converged.float().mean().item()
        text = (
            f"{out.rounds} sequential denoiser rounds (batched over {args.steps} states), "
            f"{out.solution.nfev} f evaluations, converged {converged:.0%} "
            f"({args.criterion} tol {args.tol:g})"
        )
    seconds = time.perf_counter() - start
    path = args.out or f"samples-{args.sampler}-T{args.steps}.png"
    save_grid(pixels(x0, state), path)
    print(f"{args.sampler} T={args.steps} eta={args.eta:g} n={args.n}: {text}; "
          f"wall {seconds:.2f}s on {torch.get_num_threads()} thread(s); wrote {path}")  # fmt: skip
    return 0


def read_image(path: str, channels: int, size: int) -> torch.Tensor:
    """An image file as a (1, channels, size, size) tensor in [0, 1] (grey or RGB, resized);
    an unreadable file is a :class:`DataError`.

    >>> import tempfile, os, numpy as np
    >>> from skimage import io
    >>> p = os.path.join(tempfile.mkdtemp(), "x.png")
    >>> io.imsave(p, np.full((16, 16), 255, np.uint8), check_contrast=False)
    >>> read_image(p, 1, 8).shape, read_image(p, 1, 8).max().item()
    (torch.Size([1, 1, 8, 8]), 1.0)
    """
    import numpy as np
    from skimage import color, io, transform, util

    if not Path(path).is_file():
        raise DataError(f"--image {path} does not exist")
    try:
        image = util.img_as_float(io.imread(path))
    except Exception as exc:  # skimage/imageio raise many kinds for a non-image file
        raise DataError(f"--image {path} is not a readable image ({type(exc).__name__})") from None
    if image.ndim == 3 and image.shape[2] == 4:
        image = color.rgba2rgb(image)
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] != 3):
        raise DataError(f"--image {path}: expected a grey or RGB image, got shape {image.shape}")
    if channels == 1 and image.ndim == 3:
        image = color.rgb2gray(image)
    elif channels == 3 and image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    image = transform.resize(image, (size, size), anti_aliasing=True)
    tensor = torch.as_tensor(np.asarray(image), dtype=torch.float32)
    tensor = tensor[None] if tensor.dim() == 2 else tensor.permute(2, 0, 1)
    return tensor.unsqueeze(0)


def _test_image(state: dict, index: int) -> torch.Tensor:
    from deqkit.train.build import prepare_data
    from deqkit.train.recipe import parse

    data = prepare_data(parse(state["config"]), state.get("data_state"))
    if not 0 <= index < len(data.test):
        raise ConfigError(f"--index must be in [0, {len(data.test) - 1}], got {index}")
    x, _ = data.test.batch(torch.tensor([index]))
    return x


def run_invert(args) -> int:
    """``deqkit invert``: optimise x_T, print the per-pixel MSE, write the reconstruction."""
    model, state = load_denoiser(args.checkpoint)
    info = state["data_info"]
    if args.image is not None:
        mean, std = _scaling(state)
        target = (read_image(args.image, info["in_channels"], info["image_size"]) - mean) / std
    else:
        target = _test_image(state, args.index)
    try:
        steps = ddim_steps(model.abar, args.steps)
        options = InversionOptions(args.method, lr=args.lr, iters=args.iters, seconds=args.seconds)
    except ValueError as exc:
        raise ConfigError(f"deqkit invert: {exc}") from None
    run = invert_model(model.eps, target, steps, options, module=model)
    with torch.no_grad():
        x0 = ddim_sample(model.eps, run.x_T, steps)
    pixel_mse = (pixels(x0, state) - pixels(target, state)).pow(2).mean().item()
    health = "" if run.converged is None else (
        f"; DEQ forward converged {run.converged:.0%}, {run.rounds:.1f} rounds/iteration"
    )  # fmt: skip
    path = args.out or f"inversion-{args.method}.png"
    save_grid(torch.cat([pixels(target, state), pixels(x0, state)]), path, columns=2)
    print(
        f"{args.method} T={args.steps}: {run.iters[-1]} iterations in {run.seconds[-1]:.2f}s; "
        f"per-pixel MSE {run.mse[-1]:.3e} (standardised), {pixel_mse:.3e} (pixels in [0, 1]), "
        f"from {run.mse[0]:.3e} at x_T = 0{health}; wrote {path}"
    )
    return 0
