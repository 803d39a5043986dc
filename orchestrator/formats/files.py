"""What every format shares: the one atomic writer, the policy for a bad file, strict
records, and numbers that JSON wrote as null."""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError, WithJsonSchema

log = logging.getLogger("orchestrator")


# ---------------------------------------------------------------------------- writing


def jsonable(value: Any) -> Any:
    """``value`` with every non-finite float replaced by None (JSON has no NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(item) for item in value]
    return value


def write_text_atomic(path: str | os.PathLike[str], text: str | bytes) -> Path:
    """Write through a temp file in the same folder, fsync, then rename over ``path``."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(text.encode("utf-8") if isinstance(text, str) else text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def write_json_atomic(path: str | os.PathLike[str], payload: Any) -> Path:
    return write_text_atomic(path, json.dumps(jsonable(payload), indent=2, allow_nan=False) + "\n")


# ---------------------------------------------------------------------------- bad files


class CorruptFile(ValueError):
    """A file that cannot be used; the message names the file and the field."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


def warn_corrupt(path: Path, reason: str, instead: str) -> str:
    """The one-line warning for a file that cannot be used, logged and returned."""
    line = f"{path}: {reason}; {instead}"
    log.warning(line)
    return line


@contextmanager
def collect_warnings() -> Iterator[list[str]]:
    """The warning lines logged inside the block, in order (they still reach the CLI)."""
    lines: list[str] = []

    class _Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    handler = _Collect(logging.WARNING)
    log.addHandler(handler)
    try:
        yield lines
    finally:
        log.removeHandler(handler)


def error_text(error: ValidationError, *, tagged: bool = False) -> str:
    """pydantic's first error as one line: "missing field 'final.oracle.ssim'". ``tagged``: the
    first part of the location is a union's tag (an event's kind), not a field."""
    first = error.errors(include_url=False)[0]
    where = ""
    for part in first["loc"][1 if tagged else 0:]:
        where += f"[{part}]" if isinstance(part, int) else (f".{part}" if where else str(part))
    if first["type"] == "missing":
        return f"missing field '{where}'"
    if first["type"] == "json_invalid":
        return f"not valid JSON ({first['msg']})"
    return f"'{where}': {first['msg'][0].lower()}{first['msg'][1:]}" if where else first["msg"]


def _null_is_nan(value: Any) -> Any:
    return math.nan if value is None else value


def _scalars_only(value: Any) -> Any:
    # Eval metrics may carry per-frame lists beside the numbers; only the numbers are read.
    if isinstance(value, dict):
        return {k: v for k, v in value.items() if not isinstance(v, (list, dict))}
    return value


# A number; null reads as NaN (JSON has none), so the published JSON Schema allows null.
Num = Annotated[float, BeforeValidator(_null_is_nan),
                WithJsonSchema({"anyOf": [{"type": "number"}, {"type": "null"}]})]
Scalars = Annotated[dict[str, Num], BeforeValidator(_scalars_only)]


class Record(BaseModel):
    """Read-only and strict: a number must be a number, a string a string."""

    model_config = ConfigDict(strict=True, frozen=True, extra="ignore")
