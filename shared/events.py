"""``events.jsonl``: one JSON object a line, appended and flushed as it happens.

The orchestrator's monitor tails this file while the run goes on; the schema is in
requirements.md (section 3.1), and orch's typed reader of it is ``orchestrator.formats``.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from orchestrator.formats import jsonable


class EventLog:
    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def emit(self, event: str, **fields: Any) -> dict[str, Any]:
        # NaN/inf are not JSON: written as null, so every reader can parse every line.
        record = {"event": event, "time": time.time(), **jsonable(fields)}
        line = json.dumps(record, allow_nan=False)
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(line + "\n")
            handle.flush()
        return record
