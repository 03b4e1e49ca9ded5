"""Griffe extension: make the project's docstrings render as Markdown.

The docstrings are written for ``pytest --doctest-modules`` and for reading in a terminal:
bare doctests rather than an ``Examples:`` section (Markdown would read ``>>>`` as nested block
quotes), Sphinx roles such as ``:func:`solve```, and Args entries that document several
parameters at once (``tol, max_iter: as in solve``). Each is rewritten before Griffe parses the
docstring, so every parameter is still checked against the signature.
"""

from __future__ import annotations

import re

import griffe

_RUN = re.compile(r"(?m)^(?P<indent>[ \t]*)>>> .*(?:\n(?P=indent)(?!\s*$).*)*")
_ROLE = re.compile(r":(?:func|class|meth|mod|attr|data|obj|exc):`~?([^`]+)`")
_SHARED = re.compile(r"^(?P<indent>[ \t]+)(?P<names>\*{0,2}\w+(?:,\s*\*{0,2}\w+)+):(?P<rest>.*)$")


def fence(text: str) -> str:
    r"""Wrap each run of doctest lines (until a blank line) in a ``pycon`` fence.

    >>> fence("Intro.\n\n>>> 1 + 1\n2\n\nAfter.")
    'Intro.\n\n```pycon\n>>> 1 + 1\n2\n```\n\nAfter.'
    """

    def wrap(match: re.Match) -> str:
        indent = match.group("indent")
        return f"{indent}```pycon\n{match.group(0)}\n{indent}```"

    return _RUN.sub(wrap, text)


def roles(text: str) -> str:
    """Turn Sphinx cross-reference roles into inline code naming the object.

    >>> roles("see :func:`~deqkit.solve` and :class:`DEQ`")
    'see `solve` and `DEQ`'
    """
    return _ROLE.sub(lambda m: f"`{m.group(1).rsplit('.', 1)[-1]}`", text)


def split_shared(text: str) -> str:
    r"""Give each parameter of a shared Args entry its own entry with the same description.

    >>> print(split_shared("Args:\n    a, b: numbers.\n        More.\n    c: other."))
    Args:
        a: numbers.
            More.
        b: numbers.
            More.
        c: other.
    """
    lines = text.splitlines()
    out: list[str] = []
    i = 0
    while i < len(lines):
        match = _SHARED.match(lines[i])
        if not match:
            out.append(lines[i])
            i += 1
            continue
        indent = match.group("indent")
        body = [match.group("rest")]
        i += 1
        while i < len(lines) and lines[i].startswith(indent + " ") and lines[i].strip():
            body.append("\n" + lines[i])
            i += 1
        for name in re.split(r",\s*", match.group("names")):
            out.append(f"{indent}{name}:{''.join(body)}")
    return "\n".join(out)


class DoctestFences(griffe.Extension):
    """Rewrite every object's docstring once it is loaded (see the module docstring)."""

    def on_object(self, *, obj, **kwargs) -> None:
        doc = obj.docstring
        if doc is not None:
            doc.value = fence(split_shared(roles(doc.value)))
