"""The repository keeps its promises: every shipped experiment and preset builds, the README's architecture map
names files that exist, and no source file outgrows ~600 lines.

Everything here is abstract (`jax.eval_shape`) or textual, so it costs seconds; a new experiment file or
preset is picked up without editing this module.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import flax.linen as nn
import jax
import pytest

from jaxformer import experiment, models, presets
from jaxformer.hf import finetune

REPO_ROOT = Path(__file__).resolve().parents[1]
EXPERIMENT_FILES = sorted(p for p in (REPO_ROOT / "experiments").glob("*.py") if not p.name.startswith("_"))
MAX_SOURCE_LINES = 600


def check_builds(config) -> None:
    """The model `config` describes initialises under `jax.eval_shape` (nothing allocated), with sane parameters."""
    leaves = jax.tree.leaves(nn.meta.unbox(models.abstract_params(config)))
    assert leaves and all(isinstance(leaf, jax.ShapeDtypeStruct) for leaf in leaves)
    assert {leaf.dtype.name for leaf in leaves} == {config.param_dtype}
    assert any(leaf.shape == (config.vocab_size, config.d_model) for leaf in leaves), "no token table [V, D]"


def test_experiments_are_found():
    assert {p.name for p in EXPERIMENT_FILES} >= {"default.py", "classify_majority.py", "shakespeare_char.py"}


@pytest.mark.parametrize("path", EXPERIMENT_FILES, ids=lambda p: p.name)
def test_experiment_loads_validates_and_builds(path):
    exp = experiment.validate(experiment.load(path))  # raises ConfigError naming the key if anything is off
    if exp.init_from is not None and exp.init_from.startswith("/") and not os.path.exists(exp.init_from):
        # Starts from an earlier experiment's output (its docstring gives the chain); the chain itself
        # runs in tests/test_finetune_shakespeare_experiments.py.
        pytest.skip(f"model.init_from={exp.init_from} is made by an earlier experiment")
    exp, _, _ = finetune.prepare(exp)  # model.init_from: the checkpoint's architecture (weights not read), as the CLI
    experiment.check_model_fits_data(exp)  # the model family trains data.task; rows fit model.max_len
    assert exp.preset in presets.names()
    check_builds(exp.model)  # vocabulary as configured; the data may change it at run time


@pytest.mark.parametrize("name", presets.names())
def test_preset_initialises_abstractly(name):
    check_builds(presets.get(name))


# README architecture map ------------------------------------------------------------

PATH_PREFIXES = ("jaxformer/", "experiments/", "tests/", "benchmarks/", "notebooks/", ".ci/")
PATH_SUFFIXES = (".py", ".md", ".toml", ".yaml", ".yml", ".cfg", ".ipynb")
TREE_ENTRY = re.compile(r"^(?P<indent> *)(?P<name>[\w.<>*-]+(?:/[\w.<>*-]+)*/?)(?:\s{2,}(?P<note>.*))?$")


def architecture_section() -> str:
    """README.md from its "## Architecture" heading to the next level-2 heading."""
    text = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    match = re.search(r"^##\s+Architecture\b.*?$(.*?)(?=^##\s|\Z)", text, flags=re.MULTILINE | re.DOTALL)
    assert match, "README.md has no '## Architecture' section"
    return match.group(1)


def looks_like_path(token: str) -> bool:
    return " " not in token and (token.startswith(PATH_PREFIXES) or token.endswith(PATH_SUFFIXES))


def backticked_paths(section: str) -> set[str]:
    """`jaxformer/layers/attention.py`-like tokens in inline code (code blocks excluded)."""
    prose = re.sub(r"```.*?```", "", section, flags=re.DOTALL)
    return {token.rstrip(".,:;") for token in re.findall(r"`([^`\n]+)`", prose) if looks_like_path(token)}


def tree_paths(section: str) -> set[str]:
    """Paths of a folder map in a code block: indentation nests entries; `name/` is a folder. A folder's note may
    list its files (`train/   config.py, optim.py, ...`), which are checked too."""
    found: set[str] = set()
    for block in re.findall(r"```[^\n]*\n(.*?)```", section, flags=re.DOTALL):
        parents: list[tuple[int, str]] = []  # (indent, folder) from the outermost
        for line in block.splitlines():
            match = TREE_ENTRY.match(line)
            if not match or not (match["name"].endswith("/") or "." in match["name"]):
                continue
            indent, name = len(match["indent"]), match["name"]
            while parents and parents[-1][0] >= indent:
                parents.pop()
            path = "/".join([folder for _, folder in parents] + [name.rstrip("/")])
            found.add(path)
            if name.endswith("/"):
                parents.append((indent, name.rstrip("/")))
                found.update(f"{path}/{file}" for file in re.findall(r"\b[\w-]+\.py\b", match["note"] or ""))
    return found


def exists(path: str) -> bool:
    """A repository path; `<name>` or `*` placeholders must match at least one file; a bare file name may live
    anywhere in the repository."""
    pattern = re.sub(r"<[^>]+>", "*", path).rstrip("/")
    if "/" not in pattern:
        return any(".venv" not in p.parts for p in REPO_ROOT.rglob(pattern))
    return any(REPO_ROOT.glob(pattern)) if "*" in pattern else (REPO_ROOT / pattern).exists()


def test_readme_architecture_names_existing_paths():
    section = architecture_section()
    paths = backticked_paths(section) | tree_paths(section)
    assert len(paths) >= 10, f"expected the architecture map to name at least 10 paths, found {sorted(paths)}"
    missing = sorted(path for path in paths if not exists(path))
    assert not missing, f"README.md's Architecture section names paths that do not exist: {missing}"


def test_readme_names_existing_paths_everywhere():
    """Beyond the map: the experiments table and the prose name real files too."""
    text = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    missing = sorted(path for path in backticked_paths(text) if not exists(path))
    assert not missing, f"README.md names paths that do not exist: {missing}"


def test_contributing_names_existing_paths_and_commands():
    text = (REPO_ROOT / "CONTRIBUTING.md").read_text(encoding="utf-8")
    modules = re.findall(r"python -m ((?:benchmarks|jaxformer)(?:\.\w+)+)", text)
    scripts = re.findall(r"python ((?:benchmarks|jaxformer)/[\w/]+\.py)", text)
    named = backticked_paths(text) | {m.replace(".", "/") + ".py" for m in modules} | set(scripts)
    assert len(modules) >= 3, modules
    missing = sorted(path for path in named if not exists(path))
    assert not missing, f"CONTRIBUTING.md names paths or modules that do not exist: {missing}"


def test_readme_path_parser_on_a_sample():
    sample = (
        "Add it to `jaxformer/layers/positions.py` and `PositionKind`; see `experiments/<name>.py`.\n"
        "```\njaxformer/\n  layers/    one file each\n    attention.py   MHA\n  train/    config.py, loop.py\n"
        "experiments/   one file per experiment\n```\n"
    )
    assert backticked_paths(sample) == {"jaxformer/layers/positions.py", "experiments/<name>.py"}
    assert tree_paths(sample) == {
        "jaxformer",
        "jaxformer/layers",
        "jaxformer/layers/attention.py",
        "jaxformer/train",
        "jaxformer/train/config.py",
        "jaxformer/train/loop.py",
        "experiments",
    }
    assert exists("experiments/<name>.py") and exists("attention.py") and not exists("jaxformer/nowhere.py")


def test_no_source_file_exceeds_600_lines():
    sizes = {
        str(p.relative_to(REPO_ROOT)): len(p.read_text().splitlines()) for p in REPO_ROOT.glob("jaxformer/**/*.py")
    }
    assert len(sizes) > 20
    too_long = {path: lines for path, lines in sizes.items() if lines > MAX_SOURCE_LINES}
    assert not too_long, f"split these modules (over {MAX_SOURCE_LINES} lines): {too_long}"
