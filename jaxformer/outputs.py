"""Writing what a command computed to a user-named file without ever losing it.

`check_writable` runs before the work (a directory, a missing parent or a read-only place is
one clear error before minutes of decoding); `write_text` writes a temporary file beside the
target and renames it over the target (a reader never sees half a file, an old file survives a
failed write), and if the write still fails (disk full, ...) prints the text to stdout first,
so the computed result is on the screen, then raises one error naming the path.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from jaxformer.errors import InputError, os_error_fix


class OutputPathError(InputError):
    """A user-named output path cannot be written."""


def check_writable(path: str | Path, flag: str) -> Path:
    """The output path `path` given by `flag` (e.g. "--output"), or OutputPathError saying what to change."""
    target = Path(path)
    if not str(path).strip():
        raise OutputPathError(f"{flag} is empty; give a file path.")
    if target.is_dir():
        raise OutputPathError(f"{flag} {str(target)!r} is a directory; give a file path, e.g. {target / 'out.txt'}.")
    parent = target.parent
    if not parent.is_dir():
        raise OutputPathError(f"{flag} {str(target)!r}: the directory {str(parent)!r} does not exist; create it first.")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputPathError(
            f"{flag} {str(target)!r}: no permission to write in {str(parent)!r}; choose another path."
        )
    if target.exists() and not os.access(target, os.W_OK):
        raise OutputPathError(f"{flag} {str(target)!r} is read-only; choose another path or make it writable.")
    return target


def write_text(path: str | Path, text: str, flag: str) -> None:
    """Write `text` to `path` atomically; on failure print `text` to stdout, then raise OutputPathError."""
    target = Path(path)
    tmp_name = None
    try:
        with tempfile.NamedTemporaryFile(
            "w", encoding="utf-8", dir=target.parent, prefix=f".{target.name}.", suffix=".partial", delete=False
        ) as tmp:
            tmp_name = tmp.name
            tmp.write(text)
            tmp.flush()
            os.fsync(tmp.fileno())
        os.replace(tmp_name, target)
    except OSError as err:
        if tmp_name is not None:
            Path(tmp_name).unlink(missing_ok=True)
        sys.stdout.write(text)
        sys.stdout.flush()
        what, fix = os_error_fix(err, flag, str(target))
        raise OutputPathError(
            f"could not write {flag} {str(target)!r} ({what}); the output was printed "
            f"above instead. To keep it in a file, {fix}."
        ) from None
