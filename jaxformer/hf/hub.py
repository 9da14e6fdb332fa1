"""Hub repo ids -> local model directories, through `huggingface_hub` (its cache, HF_HOME, HF_HUB_OFFLINE).

    locate("Qwen/Qwen3-0.6B", revision="main")   -> .../models--Qwen--Qwen3-0.6B/snapshots/<rev>
    locate("path/to/dir")                        -> the directory holding config.json

Only the files a model needs are downloaded (`ALLOW_PATTERNS`: config, safetensors and
their index, tokenizer files). The cache and offline mode are read from the environment
when called, so setting HF_HOME / HF_HUB_CACHE / HF_HUB_OFFLINE after import still counts.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from huggingface_hub import snapshot_download
from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

from jaxformer.errors import HubError
from jaxformer.hf import files

ALLOW_PATTERNS = (
    "config.json",
    "generation_config.json",
    "*.safetensors",
    files.SAFETENSORS_INDEX,
    *files.TOKENIZER_FILES,
)
REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
TRUE = ("1", "on", "yes", "true")


def is_repo_id(name: str | Path) -> bool:
    """True for "org/name" strings that are not an existing local path."""
    text = str(name)
    return bool(REPO_ID.match(text)) and not Path(text).expanduser().exists()


def cache_dir() -> Path:
    """The Hub cache as the environment names it now: HF_HUB_CACHE, else HF_HOME/hub, else ~/.cache/huggingface/hub."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return Path(home).expanduser() / "hub"


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in TRUE


def fetch_hint(repo_id: str, revision: str | None) -> str:
    includes = " ".join(f"--include '{p}'" for p in ALLOW_PATTERNS)
    rev = f" --revision {revision}" if revision else ""
    return (
        f"on a connected machine run `hf download {repo_id}{rev} {includes}`, copy its cache here and "
        "point HF_HOME at it (or pass the snapshot directory)"
    )


def resolve(repo_id: str, revision: str | None = None) -> Path:
    """Local snapshot directory of Hub repo `repo_id` at `revision` (downloaded when online and missing)."""
    is_offline = offline()
    try:
        path = snapshot_download(
            repo_id,
            revision=revision,
            cache_dir=str(cache_dir()),
            allow_patterns=list(ALLOW_PATTERNS),
            local_files_only=is_offline,
        )
    except LocalEntryNotFoundError:
        state = "HF_HUB_OFFLINE is set" if is_offline else "the Hub cannot be reached"
        at = f" at revision {revision!r}" if revision else ""
        raise HubError(
            f"Hub model {repo_id!r}{at} is not in the cache {str(cache_dir())!r} and {state}; "
            f"{fetch_hint(repo_id, revision)}."
        ) from None
    except (HfHubHTTPError, OSError) as err:
        first = " ".join(str(err).split())[:300]
        raise HubError(f"cannot fetch Hub model {repo_id!r}: {first}; check the repo id and revision.") from None
    return files.model_dir(path)


def locate(path: str | Path, revision: str | None = None) -> Path:
    """A local model directory (or Hub cache dir) as files.model_dir does; an "org/name" id through the Hub."""
    if is_repo_id(path):
        return resolve(str(path), revision)
    if revision is not None:
        raise HubError(f"revision={revision!r} applies to Hub repo ids only, and {str(path)!r} is a local path.")
    return files.model_dir(path)
