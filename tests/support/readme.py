"""README.md sections for tests: the ```python block under a heading, failing (not skipping) when it is missing."""

from __future__ import annotations

import re

from support.paths import REPO_ROOT

README = REPO_ROOT / "README.md"


def python_block_after(heading: str) -> str:
    """The first ```python block after the line `heading` ("## Flax NNX") in README.md."""
    text = README.read_text()
    start = text.find(f"\n{heading}\n")
    assert start >= 0, f"README.md has no {heading!r} section"
    match = re.search(r"```python\n(.*?)```", text[start:], flags=re.DOTALL)
    assert match is not None, f"README section {heading!r} has no ```python block"
    return match.group(1)


def printed_claims(code: str) -> list[str]:
    """The outputs a snippet claims, written as `print(x)  # expected output`."""
    return re.findall(r"^\s*print\(.*\)\s*#\s*(.+)$", code, flags=re.MULTILINE)
