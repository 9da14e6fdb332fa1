"""The notebooks in notebooks/ are committed stripped (no outputs, no execution counts) and each draws a plot.

Executing them is CI's job (`pytest --nbmake notebooks/`); this only reads the JSON, so it is instant.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from support.paths import REPO_ROOT

NOTEBOOK_DIR = REPO_ROOT / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
EXPECTED = ["01_quickstart", "02_attention", "03_translation", "04_hub", "05_sharding"]
PLOT_CALL = re.compile(r"\bplt\.(show|plot|bar|barh|imshow|hist|scatter|subplots|figure)\(")


def code_cells(path: Path) -> list[dict]:
    notebook = json.loads(path.read_text(encoding="utf-8"))
    assert notebook.get("nbformat") == 4, f"{path.name}: not an nbformat 4 notebook"
    return [cell for cell in notebook["cells"] if cell["cell_type"] == "code"]


def source(cell: dict) -> str:
    text = cell["source"]
    return text if isinstance(text, str) else "".join(text)


def test_the_five_notebooks_are_present():
    assert [p.stem for p in NOTEBOOKS] == EXPECTED


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_stripped(path: Path):
    cells = code_cells(path)
    assert cells, f"{path.name} has no code cells"
    for index, cell in enumerate(cells):
        where = f"{path.name}, code cell {index}: {source(cell)[:60]!r}"
        assert cell.get("outputs") == [], f"{where} has outputs; run `nbstripout notebooks/*.ipynb`"
        assert cell.get("execution_count") is None, f"{where} has an execution count; run nbstripout"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_draws_a_plot(path: Path):
    code = "\n".join(source(cell) for cell in code_cells(path))
    assert PLOT_CALL.search(code), f"{path.name} makes no matplotlib plotting call"


def test_sharding_notebook_sets_xla_flags_before_jax_starts():
    # XLA reads XLA_FLAGS once, when JAX initialises its backend: a later setting has no effect.
    cells = [source(cell) for cell in code_cells(NOTEBOOK_DIR / "05_sharding.ipynb")]
    assert "--xla_force_host_platform_device_count=8" in cells[0]
    assert not re.search(r"^\s*(import|from)\s+jax", cells[0], re.M), "the first cell must not import JAX"
