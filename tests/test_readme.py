"""Import ergonomics: the README's "Using the modules in your own code" snippet runs as written, and every public
layer/model function or class documents the shapes it works with."""

from __future__ import annotations

import contextlib
import inspect
import io
import re
from pathlib import Path

import pytest

import jaxformer.layers
import jaxformer.models

README = Path(__file__).resolve().parents[1] / "README.md"
HEADING = "## Using the modules in your own code"


def snippet_after(heading: str) -> str | None:
    """The first ```python block after `heading` in README.md, or None if the heading is absent."""
    if not README.is_file():
        return None
    text = README.read_text()
    start = text.find(f"\n{heading}\n")
    if start < 0:
        return None
    match = re.search(r"```python\n(.*?)```", text[start:], flags=re.DOTALL)
    if match is None:
        raise AssertionError(f"README section {heading!r} has no ```python block")
    return match.group(1)


def test_readme_snippet_runs_and_prints_what_it_claims():
    code = snippet_after(HEADING)
    if code is None:
        pytest.skip(f"README.md has no {HEADING!r} section yet")
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        exec(compile(code, f"README.md [{HEADING}]", "exec"), {"__name__": "readme_snippet"})
    printed = stdout.getvalue().splitlines()
    claims = re.findall(r"^\s*print\(.*\)\s*#\s*(.+)$", code, flags=re.MULTILINE)  # print(x)  # expected output
    assert len(printed) >= len(claims)
    for claim, line in zip(claims, printed, strict=False):
        assert line.strip() == claim.strip(), f"README claims {claim!r}, the snippet printed {line!r}"


def public_objects():
    for module in (jaxformer.layers, jaxformer.models):
        for name in module.__all__:
            obj = getattr(module, name)
            if inspect.isfunction(obj) or inspect.isclass(obj):
                yield f"{module.__name__}.{name}", obj


@pytest.mark.parametrize(("name", "obj"), list(public_objects()), ids=lambda v: v if isinstance(v, str) else "")
def test_public_api_docstring_states_shapes(name, obj):
    doc = inspect.getdoc(obj) or ""
    assert doc, f"{name} has no docstring"
    assert "[" in doc, f"{name}'s docstring names no shape like [B, T, D]: {doc[:80]!r}"
