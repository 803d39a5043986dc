"""``events.jsonl``: one JSON object a line, appended and flushed as it happens.

The orchestrator's monitor tails this file while the run goes on; the schema is in
requirements.md (section 3.1).
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any


def _jsonable(value: Any) -> Any:
    # NaN/inf are not JSON: write them as null so every reader can parse every line.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(item) for item in value]
    return value


class EventLog:
    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def emit(self, event: str, **fields: Any) -> dict[str, Any]:
        record = {"event": event, "time": time.time(), **_jsonable(fields)}
        line = json.dumps(record, allow_nan=False)
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(line + "\n")
            handle.flush()
        return record


def read_events(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """All well-formed events of a file; a torn last line (a writer mid-append) is skipped."""
    events = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return events


def write_json_atomic(path: str | os.PathLike[str], payload: Any) -> Path:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    text = json.dumps(_jsonable(payload), indent=2, allow_nan=False) + "\n"
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, target)
    return target
