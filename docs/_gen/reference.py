"""Pages generated from the code, so the site follows the package without hand edits.

Each function returns Markdown text (plain strings, no MkDocs import), so the docs test checks
them without building the site: the CLI reference from the ``deqkit`` argument parser, the recipe
keys from the config dataclasses, the API reference from each public module's ``__all__``, one
gallery page per ``src/deqkit/zoo/*/README.md`` and the benchmark results page.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import re
import sys
import typing
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ZOO = ROOT / "src" / "deqkit" / "zoo"
BENCH = ROOT / "benchmarks"
#: Where links to repository files that are not part of the site point.
REPO_URL = "https://github.com/deqkit/deqkit"
BLOB = f"{REPO_URL}/blob/main"

#: Public modules with an API page: (module, title). A module that does not import is an error.
API_MODULES = [
    ("deqkit", "deqkit (PyTorch)"),
    ("deqkit.jax", "deqkit.jax"),
    ("deqkit.jax.haiku", "deqkit.jax.haiku (deq-jax drop-in)"),
    ("deqkit.train", "deqkit.train"),
    ("deqkit.zoo", "deqkit.zoo"),
    ("deqkit.data", "deqkit.data"),
]

#: Groups for the long top-level API page; names not listed land in "More" (never dropped).
API_GROUPS = {
    "Solving": ["DEQ", "solve", "fixed_point", "Solution", "Status", "SolverError", "DEQWarning"],
    "Forward solvers": ["FixedPoint", "Anderson", "Broyden", "NewtonKrylov", "Solver"],
    "Backward strategies": ["Implicit", "Phantom", "OneStep", "Unrolled", "Shine"],
    "Stabilisation toolkit": [
        "apply_norm",
        "remove_norm",
        "cached_weights",
        "VariationalDropout",
        "VariationalDropout2d",
        "VariationalDropoutToken",
        "reset_dropout",
        "jacobian_penalty",
        "spectral_radius",
        "fixed_point_correction",
        "FixedPointCache",
    ],
    "Citing": ["citation"],
}


def _import(module: str):
    """Import from the checkout being built, not whichever deqkit happens to be installed."""
    src = str(ROOT / "src")
    if src not in sys.path:
        sys.path.insert(0, src)  # MkDocs restores sys.path after loading hooks: add it per call
    mod = importlib.import_module(module)
    if not Path(mod.__file__).resolve().is_relative_to(ROOT / "src"):
        raise RuntimeError(f"{module} was imported from {mod.__file__}, not from {src}")
    return mod


# ---------------------------------------------------------------------------------------- CLI


def _find_parser() -> argparse.ArgumentParser:
    cli = _import("deqkit.cli")
    for name in ("build_parser", "make_parser", "parser", "_parser"):
        factory = getattr(cli, name, None)
        if callable(factory):
            parser = factory()
            if isinstance(parser, argparse.ArgumentParser):
                return parser
    raise RuntimeError("deqkit.cli has no parser factory (build_parser/_parser) to document")


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:  # argparse offers no public walk over subcommands
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def cli_reference() -> str:
    """The ``deqkit`` command, one section per subcommand, from the parser's own help."""
    parser = _find_parser()
    parser.formatter_class = lambda prog: argparse.HelpFormatter(prog, width=96)
    out = [
        "# Command line reference",
        "",
        "Generated from the `deqkit` argument parser (`deqkit.cli`) at build time, so it always",
        "matches the installed command. `python -m deqkit ...` and `torchrun ... -m deqkit ...`",
        "accept the same arguments.",
        "",
        "```text",
        parser.format_help().rstrip(),
        "```",
    ]
    for name, sub in _subparsers(parser).items():
        sub.formatter_class = lambda prog: argparse.HelpFormatter(prog, width=96)
        out += ["", f"## `deqkit {name}`", "", "```text", sub.format_help().rstrip(), "```"]
    return "\n".join(out) + "\n"


# ------------------------------------------------------------------------------- recipe keys


def _config_class():
    for module in ("deqkit.train.config", "deqkit.train"):
        try:
            mod = _import(module)
        except ImportError:
            continue
        cls = getattr(mod, "Config", None)
        if dataclasses.is_dataclass(cls):
            return cls
    raise RuntimeError("no dataclass deqkit.train.config.Config to document the recipe keys")


def _type_name(tp) -> str:
    if isinstance(tp, str):
        return tp
    text = getattr(tp, "__name__", None) if not typing.get_args(tp) else None
    return text or str(tp).replace("typing.", "")


def _default(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        return f"`{f.default!r}`"
    if f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
        return "(section)" if dataclasses.is_dataclass(value) else f"`{value!r}`"
    return "required"


def _summary(obj) -> str:
    doc = (obj.__doc__ or "").strip()
    # dataclasses synthesise "Name(field: type = ...)" when no docstring is written.
    if not doc or doc.startswith(f"{getattr(obj, '__name__', '')}("):
        return ""
    paragraph = doc.split("\n\n")[0]
    text = " ".join(line.strip() for line in paragraph.splitlines())
    return re.sub(r":\w+:`~?([^`]+)`", lambda m: f"`{m.group(1).rsplit('.', 1)[-1]}`", text)


def _escape(text: str) -> str:
    return text.replace("|", "\\|")  # a pipe inside a table cell ends the cell


def _field_table(cls, prefix: str) -> list[str]:
    hints = typing.get_type_hints(cls)
    rows = ["| key | type | default |", "|---|---|---|"]
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        kind = _escape(_type_name(hints.get(f.name, f.type)))
        rows.append(f"| `{prefix}{f.name}` | `{kind}` | {_escape(_default(f))} |")
    return rows


def _model_option_classes() -> dict[str, list[type]]:
    zoo = _import("deqkit.zoo")
    found: dict[str, list[type]] = {}
    for name, module in sorted(getattr(zoo, "MODELS", {}).items()):
        mod = _import(module)
        classes = [
            obj
            for obj in vars(mod).values()
            if isinstance(obj, type)
            and dataclasses.is_dataclass(obj)
            and obj.__name__.endswith("Config")
            and obj.__module__.startswith(module)
        ]
        found[name] = sorted(classes, key=lambda c: c.__name__)
    return found


def _dataset_sections() -> list[str]:
    """``data`` keys of each registered dataset (its options dataclass), if the registry exists."""
    data = _import("deqkit.data")
    table, source = getattr(data, "DATASETS", None), getattr(data, "data_source", None)
    if not isinstance(table, dict) or source is None:
        return []
    out = [
        "## `data` options per dataset",
        "",
        "`data.name` picks the dataset; its own keys sit in the same `data` section.",
        "",
    ]
    for name in sorted(table):
        src = source(name)
        out += [f"### `{name}`", ""]
        if getattr(src, "description", ""):
            out += [src.description, ""]
        options = getattr(src, "options", None)
        if dataclasses.is_dataclass(options) and dataclasses.fields(options):
            out += [*_field_table(options, "data."), ""]
        else:
            out += ["No keys of its own.", ""]
    return out


def recipe_reference() -> str:
    """Every recipe key with its type and default, from the config dataclasses."""
    config = _config_class()
    hints = typing.get_type_hints(config)
    out = [
        "# Recipe keys reference",
        "",
        f"Generated at build time from the configuration schema (`{config.__module__}."
        f"{config.__name__}`) and the zoo models' option classes. A recipe is a YAML file",
        "(or a name from `deqkit recipes`); `--set section.key=value` overrides any key below,",
        "and an unknown key is rejected with the list of valid ones.",
        "",
    ]
    if _summary(config):
        out += [_summary(config), ""]
    top = ["| key | type | default |", "|---|---|---|"]
    sections = []
    for f in dataclasses.fields(config):
        tp = hints.get(f.name, f.type)
        if dataclasses.is_dataclass(tp):
            sections.append((f.name, tp))
        else:
            top.append(f"| `{f.name}` | `{_escape(_type_name(tp))}` | {_escape(_default(f))} |")
    out += ["## Top level", "", *top, ""]
    for name, cls in sections:
        out += [f"## `{name}`", ""]
        if _summary(cls):
            out += [_summary(cls), ""]
        out += [*_field_table(cls, f"{name}."), ""]
    out += _dataset_sections()
    out += [
        "## `model` options per zoo model",
        "",
        "`model.name` picks the zoo model; the other `model` keys go to its builder.",
        "",
    ]
    for model, classes in _model_option_classes().items():
        out += [f"### `{model}`", ""]
        if not classes:
            out += [f"See the [{model} gallery page](../zoo/{model}.md).", ""]
        for cls in classes:
            if _summary(cls):
                out += [f"`{cls.__name__}`: {_summary(cls)}", ""]
            out += [*_field_table(cls, "model."), ""]
    return "\n".join(out) + "\n"


# ------------------------------------------------------------------------------------- API


def api_slug(module: str) -> str:
    return module.replace(".", "-")


def available_api_modules() -> list[tuple[str, str]]:
    """The API modules that exist in this checkout (a planned module may not have landed)."""
    present = []
    for module, title in API_MODULES:
        path = ROOT / "src" / Path(*module.split("."))
        if path.is_dir() or path.with_suffix(".py").is_file():
            present.append((module, title))
    return present


def public_names(module: str) -> list[str]:
    mod = _import(module)
    names = getattr(mod, "__all__", None)
    if names is None:
        raise RuntimeError(f"{module} has no __all__: its public names are undefined")
    return list(names)


def api_page(module: str, title: str) -> str:
    """One page per public module: every name of its ``__all__``, rendered by mkdocstrings."""
    names = public_names(module)
    out = [
        f"# {title}",
        "",
        f"Every public name of `{module}` (its `__all__`), rendered from the docstrings.",
        "",
    ]
    groups = API_GROUPS if module == "deqkit" else {}
    seen: set[str] = set()
    for group, members in groups.items():
        members = [m for m in members if m in names]
        if not members:
            continue
        out += [f"## {group}", ""]
        for name in members:
            out += [f"::: {module}.{name}", ""]
        seen.update(members)
    rest = [n for n in names if n not in seen]
    if rest and groups:
        out += ["## More", ""]
    for name in rest:
        out += [f"::: {module}.{name}", ""]
    return "\n".join(out) + "\n"


# ------------------------------------------------------------------------------------- zoo


def zoo_models() -> list[str]:
    """Every zoo package that has a README, in name order."""
    return sorted(p.parent.name for p in ZOO.glob("*/README.md"))


_LINK = re.compile(r"(!?)\[([^\]]*)\]\(([^)\s]+)(\s+\"[^\"]*\")?\)")


def _rewrite_links(text: str, src_dir: Path, assets: dict[str, Path], asset_dir: str) -> str:
    """Images next to the README are copied into the site; other repository links go to GitHub."""

    def fix(match: re.Match) -> str:
        bang, label, target, title = match.groups()
        if re.match(r"^[a-z]+:|^#|^/", target):
            return match.group(0)
        path, _, anchor = target.partition("#")
        full = (src_dir / path).resolve()
        if bang and full.is_file():
            assets[f"{asset_dir}/{full.name}"] = full
            return f"{bang}[{label}]({Path(asset_dir).name}/{full.name}{title or ''})"
        try:
            rel = full.relative_to(ROOT).as_posix()
        except ValueError:
            return match.group(0)
        if full.name == "README.md" and full.parent.parent == ZOO and asset_dir.startswith("zoo/"):
            return f"[{label}]({full.parent.name}.md{title or ''})"  # another gallery page
        url = f"{BLOB}/{rel}" + (f"#{anchor}" if anchor else "")
        return f"{bang}[{label}]({url}{title or ''})"

    return _LINK.sub(fix, text)


def zoo_page(model: str, run_assets: Path | None = None) -> tuple[str, dict[str, Path]]:
    """A model's gallery page: its README, plots from a recorded run, and its recipes.

    Returns the Markdown and the files to copy into the site (site path -> source path).
    """
    folder = ZOO / model
    assets: dict[str, Path] = {}
    text = (folder / "README.md").read_text()
    text = _rewrite_links(text, folder, assets, f"zoo/{model}-assets")
    out = [text.rstrip(), ""]
    plots = sorted((run_assets / model).glob("*.png")) if run_assets else []
    if plots:
        note = run_assets / model / "RUN.md"
        out += ["## Plots from a run", ""]
        if note.is_file():
            out += [note.read_text().strip(), ""]
        for plot in plots:
            assets[f"zoo/{model}-assets/{plot.name}"] = plot
            out += [f"![{plot.stem}]({model}-assets/{plot.name})", ""]
    recipes = sorted((folder / "recipes").glob("*.yaml"))
    if recipes:
        out += ["## Recipe files", ""]
        for recipe in recipes:
            out += [
                f"### `{recipe.stem}`",
                "",
                f"`deqkit train {recipe.stem}`",
                "",
                f'```yaml title="{recipe.relative_to(ROOT).as_posix()}"',
                recipe.read_text().rstrip(),
                "```",
                "",
            ]
    return "\n".join(out) + "\n", assets


def _first_heading(text: str, default: str) -> str:
    for line in text.splitlines():
        if line.startswith("# "):
            return line[2:].strip()
    return default


def zoo_index() -> str:
    """The gallery's front page: one line per model with its title and recipes."""
    out = [
        "# Model zoo",
        "",
        "One page per model, generated from `src/deqkit/zoo/<name>/README.md` and its recipes:",
        "the paper's claim, our CPU-scale result, the command that reproduces it. A new zoo",
        "package with a README appears here by itself.",
        "",
        "| model | recipes |",
        "|---|---|",
    ]
    for model in zoo_models():
        title = _first_heading((ZOO / model / "README.md").read_text(), model)
        recipes = ", ".join(f"`{p.stem}`" for p in sorted((ZOO / model).glob("recipes/*.yaml")))
        out.append(f"| [{title}]({model}.md) | {recipes or '—'} |")
    return "\n".join(out) + "\n"


# ------------------------------------------------------------------------------ benchmarks


def benchmarks_page() -> tuple[str, dict[str, Path]]:
    """The latest ``make bench`` results with their plots, and how to rerun them."""
    results = BENCH / "results"
    assets: dict[str, Path] = {}
    out = [
        "# Benchmarks",
        "",
        "`make bench` compares deqkit with TorchDEQ 0.1.0 (installed by that target only, with",
        "`--no-deps`) on four fixed-point problems, times the backward strategies and measures",
        "training memory. The tables below are the committed output of the latest run",
        "(`benchmarks/results/RESULTS.md`), included here at build time; the analysis of every",
        "target, met or not, is in [the benchmark notes](notes.md).",
        "",
        "Rerun:",
        "",
        "```bash",
        "make bench            # writes benchmarks/results/{RESULTS.md,results.json,*.png}",
        "```",
        "",
    ]
    report = results / "RESULTS.md"
    if report.is_file():
        body = report.read_text()
        body = re.sub(r"^# ", "## ", body, count=1, flags=re.M)
        out += [_rewrite_links(body, results, assets, "benchmarks/assets").rstrip(), ""]
    for plot in sorted(results.glob("*.png")):
        assets[f"benchmarks/assets/{plot.name}"] = plot
        out += [f"![{plot.stem}](assets/{plot.name})", ""]
    return "\n".join(out) + "\n", assets


def benchmark_notes() -> tuple[str, dict[str, Path]]:
    assets: dict[str, Path] = {}
    path = BENCH / "NOTES.md"
    text = path.read_text() if path.is_file() else "# Benchmark notes\n\nNo notes yet.\n"
    return _rewrite_links(text, BENCH, assets, "benchmarks/assets"), assets


def changelog() -> str:
    """The repository's CHANGELOG.md, with its links made to work from the site."""
    return _rewrite_links((ROOT / "CHANGELOG.md").read_text(), ROOT, {}, "assets")


# ------------------------------------------------------------- benchmark tables in the pages

PROBLEMS = {
    "a": "(a) contractive tanh",
    "b": "(b) transformer block",
    "c": "(c) MDEQ-like conv",
    "d": "(d) hard tanh, ρ 0.99",
}


def _results() -> dict:
    import json

    return json.loads((BENCH / "results" / "results.json").read_text())


def _median(values: list[float]) -> float:
    values = sorted(values)
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else 0.5 * (values[mid - 1] + values[mid])


def bench_forward_table() -> str:
    """deqkit vs TorchDEQ per problem and solver: f-evaluations, residual, time ratio.

    The time ratio is the median over repetitions of the two runs made back to back, as in
    ``benchmarks/results/RESULTS.md``.
    """
    rows = {(r["problem"], r["solver"], r["library"]): r for r in _results()["forward"]}
    out = [
        "| problem | solver | f-evaluations deqkit / TorchDEQ | residual deqkit / TorchDEQ "
        "| time deqkit / TorchDEQ |",
        "|---|---|---|---|---|",
    ]
    for (problem, solver, library), ours in rows.items():
        theirs = rows.get((problem, solver.removesuffix("_good"), "torchdeq"))
        if library != "deqkit" or theirs is None:
            continue
        ratio = _median([a / b for a, b in zip(ours["times_s"], theirs["times_s"], strict=True)])
        out.append(
            f"| {PROBLEMS.get(problem, problem)} | {solver} | {ours['nfev']} / {theirs['nfev']} "
            f"| {ours['residual']:.1e} / {theirs['residual']:.1e} | {ratio:.2f} |"
        )
    return "\n".join(out)


def bench_backward_table() -> str:
    """Backward time relative to the forward solve, per problem and strategy."""
    out = [
        "| problem | backward | forward solver | backward / forward time | adjoint steps |",
        "|---|---|---|---|---|",
    ]
    for r in _results()["backward"]:
        steps = r["adjoint_steps"] or "—"
        out.append(
            f"| {PROBLEMS.get(r['problem'], r['problem'])} | {r['backward']} | {r['solver']} "
            f"| {r['ratio']:.2f} | {steps} |"
        )
    return "\n".join(out)


def bench_memory_table() -> str:
    """Peak live tensor bytes of one training step, implicit vs unrolled, per max_iter."""
    cells: dict[int, dict[str, float]] = {}
    for r in _results()["memory"]:
        cells.setdefault(r["max_iter"], {})[r["backward"]] = r["peak_alloc_bytes"] / 2**20
    out = ["| max_iter | implicit | unrolled |", "|---|---|---|"]
    for max_iter, by in sorted(cells.items()):
        out.append(
            f"| {max_iter} | {by.get('implicit', float('nan')):.1f} MiB "
            f"| {by.get('unrolled', float('nan')):.1f} MiB |"
        )
    return "\n".join(out)


def bench_environment() -> str:
    env = _results()["environment"]
    return (
        f"`make bench` of {env['date']}, torch {env['torch']}, {env['threads']} threads, "
        f"tolerance {env['tol']:g}"
    )


_MARKERS = {
    "bench-forward": bench_forward_table,
    "bench-backward": bench_backward_table,
    "bench-memory": bench_memory_table,
    "bench-environment": bench_environment,
}
_MARKER = re.compile(r"<!-- generated: ([\w-]+) -->")


def expand_markers(markdown: str) -> str:
    """Replace ``<!-- generated: NAME -->`` in a hand-written page by the generated text.

    >>> expand_markers("no markers")
    'no markers'
    """

    def replace(match: re.Match) -> str:
        name = match.group(1)
        if name not in _MARKERS:
            raise ValueError(f"unknown generated block {name!r}; known: {sorted(_MARKERS)}")
        return _MARKERS[name]()

    return _MARKER.sub(replace, markdown)
