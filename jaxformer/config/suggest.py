"""One "Did you mean ...?" for every misspelt key, choice or name in the package."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def suggest(name: object, candidates: Iterable[str], prefix: str = "", cutoff: float = 0.6) -> str:
    """` Did you mean 'PREFIX+CLOSEST'?` for the candidate nearest `name`, or "" when none is close enough.

    The result starts with a space, so it is appended to a sentence: f"unknown key {k!r}.{suggest(k, keys)}".
    `cutoff` is difflib's similarity ratio in [0, 1] a match needs.
    """
    close = difflib.get_close_matches(str(name), list(candidates), n=1, cutoff=cutoff)
    return f" Did you mean {prefix + close[0]!r}?" if close else ""
