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
    assert code is not None, f"README.md has no {HEADING!r} section"  # a missing section fails, never skips
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


def test_readme_opens_with_two_commands_and_ci_runs_the_test_command():
    """The README opens with exactly two shell commands (install + default experiment, install + tests),
    and .ci/run runs that same test command."""
    text = README.read_text()
    first_section = text.split("\n## ", 1)[0]
    commands = re.findall(r"```bash\n(.*?)```", first_section, flags=re.DOTALL)
    assert len(commands) == 2, commands
    assert all(len(c.strip().splitlines()) == 1 for c in commands), commands
    assert "jaxformer train --config experiments/default.py" in commands[0]
    test_command = commands[1].strip().split("&&", 1)[1].strip()
    assert test_command.startswith("python -m pytest")
    ci = (README.parent / ".ci" / "run").read_text()
    assert test_command in ci, f"{test_command!r} is not what .ci/run runs"
