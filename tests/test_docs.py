"""The documentation site: every guide's code runs, and the generated pages cover the code.

Each ``python`` block of a page under ``docs/`` runs, in order, in one namespace per page (a
page reads top to bottom). Two kinds of block are compiled but not executed in place: a block
titled with a file name (``title="ddp_deq.py"``) is a script that is written to that file in
the working folder, for a later block to launch (``torchrun``); a block titled ``TorchDEQ`` or
``deq-jax`` is the other library's side of a migration example, which the tests have no copy of
that library to run. ``make docs`` builds the site
itself with ``mkdocs build --strict``; here the generators are checked without MkDocs.
"""

from __future__ import annotations

import dataclasses
import re
import sys
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
sys.path.insert(0, str(DOCS / "_gen"))
import reference  # noqa: E402

FENCE = re.compile(r"^```(\w+)([^\n]*)\n(.*?)^```", flags=re.S | re.M)
PAGES = sorted(p for p in DOCS.rglob("*.md") if "_gen" not in p.parts and "zoo-runs" not in p.parts)


def python_blocks(path: Path) -> list[tuple[str, str]]:
    """(fence info string, code) of every ``python`` block of a page; the code is padded with
    blank lines so that tracebacks give the page's own line numbers."""
    text = path.read_text()
    return [
        (m.group(2).strip(), "\n" * text.count("\n", 0, m.start(3)) + m.group(3))
        for m in FENCE.finditer(text)
        if m.group(1) == "python"
    ]


def _other_library(info: str) -> bool:
    return re.search(r'title="(TorchDEQ|deq-jax)', info) is not None


@pytest.mark.parametrize(
    "page", [p for p in PAGES if python_blocks(p)], ids=lambda p: p.relative_to(DOCS).as_posix()
)
def test_page_code_runs(page, capsys, monkeypatch, tmp_path):
    blocks = python_blocks(page)
    monkeypatch.chdir(tmp_path)  # a snippet that writes files writes them here
    # A registered module, so that dataclasses and pickling defined on the page work.
    module = types.ModuleType("deqkit_docs_page")
    monkeypatch.setitem(sys.modules, module.__name__, module)
    namespace = module.__dict__
    for info, code in blocks:
        compiled = compile(code, str(page), "exec")
        script = re.search(r'title="([\w.-]+\.py)"', info)
        if script:
            (tmp_path / script.group(1)).write_text(code)
        elif not _other_library(info):  # compiled above, but there is no such library to run
            exec(compiled, namespace)
    capsys.readouterr()


def test_only_other_libraries_blocks_are_not_run():
    skipped = {p.name: sum(_other_library(i) for i, _ in python_blocks(p)) for p in PAGES}
    assert {k: v for k, v in skipped.items() if v} == {"torchdeq.md": 2, "deq-jax.md": 1}


def test_torchdeq_port_prints_what_the_page_shows(capsys):
    page = DOCS / "migration" / "torchdeq.md"
    namespace: dict = {}
    for info, code in python_blocks(page):
        if not _other_library(info):
            exec(compile(code, str(page), "exec"), namespace)
    out = capsys.readouterr().out
    assert "loss" in out and namespace["sol"].converged.all()


def test_api_pages_list_every_public_name():
    modules = dict(reference.available_api_modules())
    assert "deqkit" in modules and "deqkit.jax" in modules
    for module, title in modules.items():
        page = reference.api_page(module, title)
        for name in reference.public_names(module):
            assert f"::: {module}.{name}\n" in page, (module, name)


def test_cli_reference_has_every_subcommand():
    parser = reference._find_parser()
    text = reference.cli_reference()
    subcommands = reference._subparsers(parser)
    assert {"train", "eval", "plot", "recipes"} <= set(subcommands)
    for name, sub in subcommands.items():
        assert f"## `deqkit {name}`" in text
        for action in sub._actions:
            for flag in action.option_strings:
                assert flag in text, (name, flag)


def test_recipe_reference_has_every_key():
    config = reference._config_class()
    text = reference.recipe_reference()
    for section in dataclasses.fields(config):
        cls = (
            section.default_factory()
            if section.default_factory is not dataclasses.MISSING
            else None
        )
        if dataclasses.is_dataclass(cls):
            for f in dataclasses.fields(cls):
                assert f"`{section.name}.{f.name}`" in text, (section.name, f.name)
    for model in reference._model_option_classes():
        assert f"### `{model}`" in text


def test_zoo_gallery_has_a_page_per_readme():
    models = reference.zoo_models()
    assert "mdeq" in models
    assert set(models) == {p.parent.name for p in reference.ZOO.glob("*/README.md")}
    index = reference.zoo_index()
    for model in models:
        assert f"]({model}.md)" in index
        page, _ = reference.zoo_page(model)
        for recipe in (reference.ZOO / model / "recipes").glob("*.yaml"):
            assert f"deqkit train {recipe.stem}" in page


def test_links_are_rewritten_for_the_site(tmp_path):
    (tmp_path / "plot.png").write_bytes(b"png")
    assets: dict = {}
    text = reference._rewrite_links(
        "![p](plot.png) [web](https://a.b) [top](#t)", tmp_path, assets, "zoo/m-assets"
    )
    assert text == "![p](m-assets/plot.png) [web](https://a.b) [top](#t)"
    assert assets == {"zoo/m-assets/plot.png": tmp_path / "plot.png"}
    text = reference._rewrite_links(
        "[notes](../../../benchmarks/NOTES.md#x)", ROOT / "src" / "deqkit" / "zoo", {}, "a"
    )
    assert text == f"[notes]({reference.BLOB}/benchmarks/NOTES.md#x)"
    text = reference._rewrite_links("[m](../mdeq/README.md)", reference.ZOO / "x", {}, "zoo/x-a")
    assert text == "[m](mdeq.md)"


def test_package_metadata_agrees():
    import yaml

    import deqkit

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["version"] == deqkit.__version__
    assert project["urls"]["Documentation"] and project["classifiers"]
    assert "Typing :: Typed" in project["classifiers"]
    assert (ROOT / "src" / "deqkit" / "py.typed").is_file()
    citation = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert citation["cff-version"].startswith("1.2") and citation["version"] == deqkit.__version__
    assert f"## [{deqkit.__version__}]" in (ROOT / "CHANGELOG.md").read_text()


def test_benchmark_tables_agree_with_the_committed_report():
    report = (reference.BENCH / "results" / "RESULTS.md").read_text()
    table = reference.bench_forward_table()
    for row in table.splitlines()[2:]:
        _, problem, solver, nfev, _, _, _ = (c.strip() for c in row.split("|"))
        ours, theirs = nfev.split(" / ")
        line = f"| {problem[1]} | {solver} | {ours} | {theirs} |"
        assert line in report, line
    for page in PAGES:
        text = reference.expand_markers(page.read_text())
        assert "<!-- generated:" not in text, page
    with pytest.raises(ValueError, match="unknown generated block"):
        reference.expand_markers("<!-- generated: nope -->")


def test_generator_doctests():
    import doctest

    assert doctest.testmod(reference).failed == 0
    pytest.importorskip("griffe", reason="the docs extra (make docs installs it)")
    import griffe_doctest

    result = doctest.testmod(griffe_doctest)
    assert result.attempted >= 3 and result.failed == 0
