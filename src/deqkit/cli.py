"""The ``deqkit`` command: ``train``, ``eval``, ``bench``, ``diagnose``, ``generate``, ``sample``,
``invert``, ``plot``, ``recipes``.

``python -m deqkit ...`` and ``torchrun --nproc_per_node=N -m deqkit train ...`` run the same
code. User errors (:class:`deqkit.train.errors.UserError`: a bad recipe key, missing data, a
corrupt checkpoint, a run directory in the way) print one clear line (on rank 0 only) and exit
with status 2; any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

__all__ = ["main"]


def _cmd_train(args) -> int:
    from .train.distributed import init_distributed
    from .train.loop import check_run_dir, train
    from .train.recipe import load_config

    cfg = load_config(args.recipe, args.set)
    out = Path(args.out) if args.out else Path("runs") / Path(args.recipe).stem
    check_run_dir(out, args.resume, args.force)
    env = init_distributed(cfg.train.device)
    try:
        summary = train(
            cfg,
            out,
            resume=args.resume,
            force=args.force,
            progress=not args.no_progress,
            env=env,
        )
    finally:
        env.close()
    if env.is_main:
        print(json.dumps(summary, indent=2))
        print(
            f"run directory: {out}  (checkpoint: {out / 'checkpoint.pt'}; plots: deqkit plot {out})"
        )
    return 0


def _cmd_eval(args) -> int:
    from .train.evaluate import evaluate_checkpoint

    result = evaluate_checkpoint(args.checkpoint, args.set, split=args.split)
    if args.json:
        print(json.dumps(result))
    else:
        skip = {"split", "step", "task", "best", "max_iter", "n", "loss"}
        skip |= {k for k in result if k.startswith("fwd_")}
        metrics = [result["best"]] + [k for k in result if k not in skip and k != result["best"]]
        text = f"{result['split']} " + "  ".join(
            f"{k} {result[k]:.4f}" for k in metrics if isinstance(result.get(k), float)
        )
        text += f"  loss {result['loss']:.4f}  "
        if "fwd_nstep" in result:
            text += (
                f"mean forward steps {result['fwd_nstep']:.2f} (max_iter {result['max_iter']})  "
                f"converged {result['fwd_converged']:.3f}  "
            )
        print(text + f"n={result['n']}  step {result['step']}")
    picture = None
    if result["task"] == "deq_inr":  # DEQ-INR image runs: the full-resolution PNG
        from .zoo.deq_inr.render import eval_picture

        picture = eval_picture(args.checkpoint, args.set, args.render)
    if picture is not None:
        print(f"reconstruction | original | error map: {picture[0]} "
              f"(every pixel: PSNR {picture[1]['psnr']:.2f} dB)",
              file=sys.stderr if args.json else sys.stdout)  # fmt: skip
    return 0


def _cmd_bench(args) -> int:
    import time

    from .train.errors import ConfigError
    from .train.evaluate import evaluate_checkpoint

    solvers = [name.strip() for name in args.solvers.split(",") if name.strip()]
    try:
        budgets = [int(k) for k in args.max_iter.split(",")] if args.max_iter else [None]
    except ValueError:
        raise ConfigError(
            f"--max-iter must be comma-separated integers, e.g. 4,8,16; got {args.max_iter!r}"
        ) from None
    rows = []
    for solver in solvers:
        for budget in budgets:
            # Another solver's options do not fit this one: start from its defaults.
            overrides = [*args.set, f"deq.solver={solver}", "deq.solver_options={}"]
            if budget is not None:
                overrides.append(f"deq.max_iter={budget}")
            start = time.perf_counter()
            result = evaluate_checkpoint(args.checkpoint, overrides, split=args.split)
            seconds = time.perf_counter() - start
            rows.append({"solver": solver, "seconds": seconds, **result})
    if args.json:
        print(json.dumps(rows))
        return 0
    metric = rows[0]["best"]
    print(
        f"{'solver':<14}{'max_iter':>9}{metric:>10}{'fwd steps':>11}{'converged':>11}{'seconds':>9}"
    )
    for row in rows:
        print(
            f"{row['solver']:<14}{row['max_iter']:>9}{row[metric]:>10.4f}"
            f"{row.get('fwd_nstep', float('nan')):>11.2f}"
            f"{row.get('fwd_converged', float('nan')):>11.3f}{row['seconds']:>9.2f}"
        )
    return 0


def _cmd_diagnose(args) -> int:
    from .diagnose import DiagnoseOptions, diagnose_checkpoint, format_table, write_report
    from .train.errors import ConfigError

    try:
        options = DiagnoseOptions(
            solvers=tuple(s.strip() for s in args.solvers.split(",") if s.strip()),
            max_iter=tuple(int(k) for k in args.max_iter.split(",")),
            max_samples=args.max_samples,
        )
    except ValueError as exc:
        raise ConfigError(f"deqkit diagnose: {exc} (--solvers {args.solvers!r}, "
                          f"--max-iter {args.max_iter!r})") from None  # fmt: skip
    report = diagnose_checkpoint(args.checkpoint, args.set, args.split, options)
    path = Path(args.checkpoint)
    written = write_report(report, args.out or (path if path.is_dir() else path.parent))
    print(json.dumps(report["verdict"]) if args.json else format_table(report))
    print("wrote " + ", ".join(str(p) for p in written), file=sys.stderr)
    return 0


def _cmd_generate(args) -> int:
    from .zoo.deq_seq.generate import run_generate

    return run_generate(args)


def _cmd_sample(args) -> int:
    from .zoo.deq_ddim.commands import run_sample

    return run_sample(args)


def _cmd_invert(args) -> int:
    from .zoo.deq_ddim.commands import run_invert

    return run_invert(args)


def _cmd_plot(args) -> int:
    from .plot import plot_run

    for path in plot_run(args.run_dir):
        print(path)
    return 0


def _recipe_row(path: Path) -> tuple[str, str, list[str]]:
    """(model, description, marks) of a recipe file; marks: "GPU", "local data"."""
    from .data import data_source
    from .train.errors import UserError
    from .train.recipe import read_recipe

    try:
        raw = read_recipe(path)
    except UserError as exc:
        return "?", f"(unreadable: {exc})", []
    model = str((raw.get("model") or {}).get("name", "?"))
    marks = []
    if (raw.get("train") or {}).get("device") == "cuda":
        marks.append("GPU")
    data = raw.get("data") or {}
    try:
        if data_source(str(data.get("name", "digits"))).needs_root or data.get("root"):
            marks.append("local data")
    except (ValueError, TypeError):
        marks.append("unknown dataset")
    return model, " ".join(str(raw.get("description", "")).split()), marks


def _cmd_recipes(args) -> int:
    from .zoo import recipe_paths

    rows: dict[str, list] = {}
    for name, path in sorted(recipe_paths().items()):
        model, description, marks = _recipe_row(Path(path))
        rows.setdefault(model, []).append((name, description, marks))
    width = max((len(n) for group in rows.values() for n, _, _ in group), default=0)
    for model in sorted(rows):
        print(f"{model}:")
        for name, description, marks in rows[model]:
            tag = f"[{', '.join(marks)}] " if marks else ""
            print(f"  {name:<{width}}  {tag}{description}")
    print("[GPU]: trains on train.device=cuda; [local data]: needs data.root (nothing downloads)")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="deqkit", description="Deep equilibrium models: train, evaluate and plot zoo recipes."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    override = {
        "action": "append",
        "default": [],
        "metavar": "KEY=VALUE",
        "help": "override a recipe value, e.g. --set optim.lr=3e-4 (repeatable)",
    }

    p = sub.add_parser("train", help="train a recipe (a name from `deqkit recipes` or a YAML path)")
    p.add_argument("recipe")
    p.add_argument("--set", **override)
    p.add_argument("--out", help="run directory (default: runs/<recipe>)")
    p.add_argument("--resume", action="store_true", help="continue from <out>/checkpoint.pt")
    p.add_argument("--force", action="store_true", help="replace a run already in <out>")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("eval", help="score a checkpoint (or run directory) on the test set")
    p.add_argument("checkpoint")
    p.add_argument("--set", **override)
    p.add_argument("--split", default="test", help="test (default), val or train")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--render", metavar="PNG", help="DEQ-INR image runs: where the full-"
                   "resolution picture goes (default: RUN/pictures/full.png)")  # fmt: skip
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser(
        "bench", help="compare solvers and iteration budgets on a trained checkpoint"
    )
    p.add_argument("checkpoint")
    p.add_argument("--solvers", default="fixed_point,anderson,broyden", help="comma-separated")
    p.add_argument("--max-iter", default="", help="comma-separated eval budgets, e.g. 4,8,16")
    p.add_argument("--set", **override)
    p.add_argument("--split", default="test", help="test (default), val or train")
    p.add_argument("--json", action="store_true", help="print one JSON list")
    p.set_defaults(func=_cmd_bench)

    p = sub.add_parser("diagnose", help="is a trained checkpoint a real equilibrium? (health)")
    p.add_argument("checkpoint")
    p.add_argument("--split", default="test", help="test (default), val or train")
    p.add_argument("--solvers", default="anderson,broyden", help="comma-separated")
    p.add_argument("--max-iter", default="4,8,16,32,64", help="comma-separated budgets")
    p.add_argument("--max-samples", type=int, default=None, help="first N samples only")
    p.add_argument("--set", **override)
    p.add_argument("--out", help="folder for diagnose.json and PNGs (default: the run's)")
    p.add_argument("--json", action="store_true", help="print the verdict as one JSON object")
    p.set_defaults(func=_cmd_diagnose)

    p = sub.add_parser("generate", help="sample text from a trained sequence LM checkpoint")
    p.add_argument("checkpoint", help="checkpoint.pt or run directory of a text LM")
    p.add_argument("--prompt", required=True, help="text to continue")
    p.add_argument("--n", "--tokens", dest="n", type=int, default=100, help="tokens to sample")
    p.add_argument("--temperature", type=float, default=1.0, help="0 decodes greedily")
    p.add_argument("--seed", type=int, default=0, help="sampling seed")
    p.set_defaults(func=_cmd_generate)

    p = sub.add_parser("sample", help="sample images from a DEQ-DDIM denoiser (deq or ddim)")
    p.add_argument("checkpoint", help="a deq_ddim checkpoint or its run directory")
    p.add_argument("--sampler", choices=("deq", "ddim"), default="deq")
    p.add_argument("--steps", type=int, default=50, help="T, the DDIM steps")
    p.add_argument("--n", type=int, default=16, help="images, sampled in one batch")
    p.add_argument("--eta", type=float, default=0.0, help="0: DDIM; 1: DDPM variance")
    p.add_argument("--tol", type=float, default=1e-4, help="DEQ: per-state RMS residual")
    p.add_argument("--criterion", choices=("per_state", "final", "global"), default="per_state")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="PNG grid (default: samples-<sampler>-T<steps>.png)")
    p.set_defaults(func=_cmd_sample)

    p = sub.add_parser("invert", help="find the x_T whose DDIM sample reconstructs an image")
    p.add_argument("checkpoint", help="a deq_ddim checkpoint or its run directory")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--image", help="an image file (PNG, ...), resized to the model's size")
    target.add_argument("--index", type=int, help="test image K of the checkpoint's dataset")
    p.add_argument("--method", choices=("deq-implicit", "deq-phantom", "backprop"),
                   default="deq-phantom")  # fmt: skip
    p.add_argument("--steps", type=int, default=20, help="T, the DDIM steps")
    p.add_argument("--iters", type=int, default=200, help="Adam iterations")
    p.add_argument("--seconds", type=float, default=None, help="stop after this wall time")
    p.add_argument("--lr", type=float, default=0.05, help="Adam learning rate")
    p.add_argument("--out", help="PNG target | reconstruction (default: inversion-<method>.png)")
    p.set_defaults(func=_cmd_invert)

    p = sub.add_parser("plot", help="write PNG plots of a run directory")
    p.add_argument("run_dir")
    p.set_defaults(func=_cmd_plot)

    p = sub.add_parser("recipes", help="list the zoo's recipes, grouped by model")
    p.set_defaults(func=_cmd_recipes)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the ``deqkit`` command line; returns the exit status.

    >>> main(["train", "mdeq-digits", "--set", "train.stepz=1"])  # the error goes to stderr
    2
    """
    args = _parser().parse_args(argv)
    from .train.errors import UserError

    try:
        return args.func(args)
    except UserError as exc:
        # Under torchrun every rank meets the same error: one line is enough.
        if os.environ.get("RANK", "0") == "0":
            print(f"deqkit: error: {exc}", file=sys.stderr)
        return 2
