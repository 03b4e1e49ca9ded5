"""MkDocs hooks: add the generated pages (references, zoo gallery, benchmarks) to the build.

Loaded by ``mkdocs.yml`` (``hooks:``). Pages are produced in memory by ``reference.py`` at every
build; nothing generated is written into ``docs/``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from mkdocs.structure.files import File

sys.path.insert(0, str(Path(__file__).resolve().parent))
import reference  # noqa: E402

#: Pages owned by other parts of the project, listed in the nav only once they exist.
OPTIONAL_PAGES = {
    "Concepts": [("Architecture", "architecture.md")],
    "Guides": [("Creating a new sequence DEQ", "sequence_deq.md")],
}
RUN_ASSETS = Path(__file__).resolve().parents[1] / "zoo-runs"


def _replace(nav: list, title: str, value) -> bool:
    for i, item in enumerate(nav):
        if isinstance(item, dict) and title in item:
            nav[i] = {title: value}
            return True
        if isinstance(item, dict):
            for sub in item.values():
                if isinstance(sub, list) and _replace(sub, title, value):
                    return True
    return False


def _section(nav: list, title: str) -> list | None:
    for item in nav:
        if isinstance(item, dict) and isinstance(item.get(title), list):
            return item[title]
    return None


def on_config(config, **kwargs):
    nav = config["nav"]
    zoo = [{"Gallery": "zoo/index.md"}]
    for model in reference.zoo_models():
        readme = (reference.ZOO / model / "README.md").read_text()
        zoo.append({reference._first_heading(readme, model): f"zoo/{model}.md"})
    if not _replace(nav, "Model zoo", zoo):
        raise ValueError("mkdocs.yml nav needs a 'Model zoo' entry for the generated gallery")
    api = [
        {title: f"reference/api/{reference.api_slug(mod)}.md"}
        for mod, title in reference.available_api_modules()
    ]
    if not _replace(nav, "API", api):
        raise ValueError("mkdocs.yml nav needs an 'API' entry for the generated API pages")
    docs = Path(config["docs_dir"])
    for section, pages in OPTIONAL_PAGES.items():
        target = _section(nav, section)
        for title, page in pages:
            if target is not None and (docs / page).is_file():
                target.append({title: page})
    return config


def _add(files, config, path: str, content: str | None = None, src: Path | None = None):
    existing = files.get_file_from_path(path)
    if existing is not None:
        files.remove(existing)
    if src is not None:
        files.append(File.generated(config, path, abs_src_path=str(src)))
    else:
        files.append(File.generated(config, path, content=content))


def on_files(files, config, **kwargs):
    pages = {
        "reference/cli.md": reference.cli_reference(),
        "reference/recipes.md": reference.recipe_reference(),
        "zoo/index.md": reference.zoo_index(),
        "changelog.md": reference.changelog(),
    }
    assets: dict[str, Path] = {}
    for module, title in reference.available_api_modules():
        pages[f"reference/api/{reference.api_slug(module)}.md"] = reference.api_page(module, title)
    for model in reference.zoo_models():
        text, found = reference.zoo_page(model, RUN_ASSETS)
        pages[f"zoo/{model}.md"] = text
        assets.update(found)
    for path, generate in (
        ("benchmarks/index.md", reference.benchmarks_page),
        ("benchmarks/notes.md", reference.benchmark_notes),
    ):
        text, found = generate()
        pages[path] = text
        assets.update(found)
    for path, text in pages.items():
        _add(files, config, path, content=text)
    for path, src in assets.items():
        _add(files, config, path, src=src)
    return files


def on_page_markdown(markdown, **kwargs):
    # Benchmark tables in hand-written pages come from benchmarks/results/results.json.
    return reference.expand_markers(markdown)
