"""Reading local data files (plain or gzip) strictly: UTF-8 with line numbers in errors, no silent loss.

Records by task: lm -> str; seq2seq -> (source, target); classification -> (text, label).
"""

from __future__ import annotations

import csv
import gzip
import io
import json
from collections.abc import Iterator, Sequence
from pathlib import Path

from jaxformer.data.errors import DataError, DataFileNotFoundError

csv.field_size_limit(1 << 30)


def existing_path(path: str | Path, what: str) -> Path:
    """`path` if it exists, else `path` + ".gz" if that exists, else DataFileNotFoundError."""
    candidate = Path(path).expanduser()
    if candidate.exists():
        return candidate
    gz = candidate.with_name(candidate.name + ".gz")
    if gz.exists():
        return gz
    raise DataFileNotFoundError(
        f"{what} file {str(candidate)!r} does not exist (nor {gz.name!r}); check data.train_path/eval_path/test_path "
        "(and source_suffix/target_suffix for parallel files)."
    )


def read_text(path: str | Path, what: str = "data") -> str:
    """The whole file decoded as UTF-8 (gzip if it ends in .gz). Raises DataError on empty or non-UTF-8 files."""
    file = existing_path(path, what)
    if file.is_dir():
        raise DataError(f"{what} path {str(file)!r} is a directory; point it at a text file.")
    raw = file.read_bytes()
    if file.suffix == ".gz":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as err:
            raise DataError(f"{what} file {str(file)!r} ends in .gz but is not valid gzip ({err}).") from None
    if not raw.strip():
        raise DataError(f"{what} file {str(file)!r} is empty; it must hold at least one non-blank line.")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        column = err.start - (raw.rfind(b"\n", 0, err.start) + 1) + 1
        bad = raw[err.start : err.start + 1].hex()
        raise DataError(
            f"{what} file {str(file)!r} is not valid UTF-8: byte 0x{bad} at line {line}, column {column}; "
            "re-encode it as UTF-8 (e.g. `iconv -f latin1 -t utf-8`)."
        ) from None
    return text.removeprefix("\ufeff")


def read_lines(path: str | Path, what: str = "data") -> list[str]:
    """Lines without their line break ("\\n" or "\\r\\n"); a final line break does not add an empty line."""
    text = read_text(path, what)
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def read_parallel(prefix: str, source_suffix: str, target_suffix: str) -> tuple[list[tuple[str, str]], Path, Path]:
    """Aligned (source, target) lines of prefix+source_suffix and prefix+target_suffix, and the two paths."""
    source_file = existing_path(prefix + source_suffix, "source")
    target_file = existing_path(prefix + target_suffix, "target")
    sources = read_lines(source_file, "source")
    targets = read_lines(target_file, "target")
    if len(sources) != len(targets):
        raise DataError(
            f"parallel files differ in length: {str(source_file)!r} has {len(sources)} lines but {str(target_file)!r} "
            f"has {len(targets)}; they must be line-aligned (one sentence pair per line)."
        )
    return list(zip(sources, targets, strict=True)), source_file, target_file


def read_tsv(path: str | Path, task: str, header: bool, fields: Sequence[str]) -> list[tuple]:
    """Rows of a tab-separated file as records. Without a header, columns 0 and 1 are used."""
    file = existing_path(path, "tsv")
    lines = read_lines(file, "tsv")
    rows = list(csv.reader(io.StringIO("\n".join(lines)), delimiter="\t", quoting=csv.QUOTE_NONE))
    first_line = 1
    columns = [0, 1]
    if header:
        names = rows.pop(0)
        first_line = 2
        missing = [f for f in fields if f not in names]
        if missing:
            raise DataError(
                f"tsv file {str(file)!r} has columns {names}, not {missing}; set data.*_field to one of them."
            )
        columns = [names.index(f) for f in fields]
    records = []
    for number, row in enumerate(rows, start=first_line):
        if len(row) <= max(columns):
            raise DataError(
                f"tsv file {str(file)!r} line {number} has {len(row)} column(s); expected at least {max(columns) + 1}."
            )
        a, b = row[columns[0]], row[columns[1]]
        records.append(
            (a, parse_label(b, f"tsv file {str(file)!r} line {number}")) if task == "classification" else (a, b)
        )
    if not records:
        raise DataError(f"tsv file {str(file)!r} has no data rows.")
    return records


def json_objects(path: str | Path, what: str = "jsonl") -> Iterator[tuple[str, dict]]:
    """(where, object) for each non-blank line of a JSON-lines file: `where` names the file and line for
    errors; a line that is not JSON, or not a JSON object, stops with one line naming it."""
    file = existing_path(path, what)
    for number, line in enumerate(read_lines(file, what), start=1):
        if not line.strip():
            continue
        where = f"{what} file {str(file)!r} line {number}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{where} is not valid JSON ({err.msg} at column {err.colno}).") from None
        if not isinstance(obj, dict):
            raise DataError(f"{where} holds a {type(obj).__name__}; each line must be a JSON object.")
        yield where, obj


def read_jsonl(path: str | Path, task: str, fields: Sequence[str]) -> list:
    """One record per non-blank line of a JSON-lines file; `fields` names the keys to read."""
    records: list = []
    for where, obj in json_objects(path):
        values = []
        for field in fields:
            if field not in obj:
                raise DataError(f"{where} has no key {field!r} (keys: {sorted(obj)}); set data.*_field accordingly.")
            values.append(obj[field])
        records.append(record_from_values(task, values, where))
    return records


def record_from_values(task: str, values: Sequence[object], where: str) -> str | tuple:
    """Build a task record from raw field values (text as str or UTF-8 bytes, labels as ints)."""
    if task == "lm":
        return as_text(values[0], where)
    if task == "seq2seq":
        return (as_text(values[0], where), as_text(values[1], where))
    return (as_text(values[0], where), parse_label(values[1], where))


def as_text(value: object, where: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError as err:
            raise DataError(f"{where}: text is not valid UTF-8 (byte at offset {err.start}).") from None
    if hasattr(value, "item"):  # a NumPy scalar holding bytes or str
        return as_text(value.item(), where)
    raise DataError(f"{where}: expected text, got {type(value).__name__} {value!r}.")


def parse_label(value: object, where: str) -> int:
    """An integer class label >= 0."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, str):
        value = value.strip()
        if value.lstrip("-").isdigit():
            value = int(value)
    if not isinstance(value, int) or isinstance(value, bool):
        raise DataError(f"{where}: label {value!r} is not an integer; labels must be class ids 0..C-1.")
    if value < 0:
        raise DataError(f"{where}: label {value} is negative (an unlabeled split?); use a split with labels.")
    return value
