"""The ``deqkit`` command: ``train``, ``eval``, ``bench``, ``plot`` and ``recipes``.

``python -m deqkit ...`` and ``torchrun --nproc_per_node=N -m deqkit train ...`` run the same
code. User errors (bad recipe key, missing data, corrupt checkpoint) print one clear line and
exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

__all__ = ["main"]

USAGE_ERRORS = (ValueError, TypeError, FileNotFoundError, KeyError)


def _cmd_train(args) -> int:
    from .train.config import load_config
    from .train.distributed import init_distributed
    from .train.loop import train

    cfg = load_config(args.recipe, args.set)
    out = Path(args.out) if args.out else Path("runs") / Path(args.recipe).stem
    if args.resume and not (out / "checkpoint.pt").is_file():
        raise FileNotFoundError(f"--resume: {out / 'checkpoint.pt'} does not exist")
    env = init_distributed(cfg.train.device)
    try:
        summary = train(cfg, out, resume=args.resume, progress=not args.no_progress, env=env)
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
        text = f"{result['split']} accuracy {result['acc']:.4f}  loss {result['loss']:.4f}  "
        if "fwd_nstep" in result:
            text += (
                f"mean forward steps {result['fwd_nstep']:.2f} (max_iter {result['max_iter']})  "
                f"converged {result['fwd_converged']:.3f}  "
            )
        print(text + f"n={result['n']}  step {result['step']}")
    return 0


def _cmd_bench(args) -> int:
    import time

    from .train.evaluate import evaluate_checkpoint

    solvers = [name.strip() for name in args.solvers.split(",") if name.strip()]
    budgets = [int(k) for k in args.max_iter.split(",")] if args.max_iter else [None]
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
    print(
        f"{'solver':<14}{'max_iter':>9}{'accuracy':>10}{'fwd steps':>11}{'converged':>11}{'s':>8}"
    )
    for row in rows:
        print(
            f"{row['solver']:<14}{row['max_iter']:>9}{row['acc']:>10.4f}"
            f"{row.get('fwd_nstep', float('nan')):>11.2f}"
            f"{row.get('fwd_converged', float('nan')):>11.3f}{row['seconds']:>8.2f}"
        )
    return 0


def _cmd_plot(args) -> int:
    from .plot import plot_run

    for path in plot_run(args.run_dir):
        print(path)
    return 0


def _recipe_description(path: Path) -> str:
    import yaml

    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError:
        return "(unreadable YAML)"
    return str(raw.get("description", "")).strip() if isinstance(raw, dict) else ""


def _cmd_recipes(args) -> int:
    from .zoo import recipe_paths

    paths = recipe_paths()
    width = max((len(n) for n in paths), default=0)
    for name, path in sorted(paths.items()):
        print(f"{name:<{width}}  {_recipe_description(Path(path))}")
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
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("eval", help="score a checkpoint (or run directory) on the test set")
    p.add_argument("checkpoint")
    p.add_argument("--set", **override)
    p.add_argument("--split", default="test", help="test (default), val or train")
    p.add_argument("--json", action="store_true", help="print one JSON object")
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

    p = sub.add_parser("plot", help="write PNG plots of a run directory")
    p.add_argument("run_dir")
    p.set_defaults(func=_cmd_plot)

    p = sub.add_parser("recipes", help="list the zoo's recipes")
    p.set_defaults(func=_cmd_recipes)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the ``deqkit`` command line; returns the exit status.

    >>> main(["train", "mdeq-digits", "--set", "train.stepz=1"])  # the error goes to stderr
    2
    """
    args = _parser().parse_args(argv)
    from .train.checkpoint import CheckpointError

    try:
        return args.func(args)
    except (CheckpointError, *USAGE_ERRORS) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"deqkit: error: {message}", file=sys.stderr)
        return 2
