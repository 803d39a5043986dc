"""The published formats: ``results.schema.json``, the JSON Schema of results.json (schema 2),
generated from the typed model that validates it (``orchestrator.formats.results.Results``).

    python -m orchestrator.schemas          # write it again after changing the model
    python -m orchestrator.schemas --check  # exit 1 if the shipped file is out of date
"""

from __future__ import annotations

import json
from pathlib import Path

RESULTS_SCHEMA_FILE = Path(__file__).resolve().parent / "results.schema.json"


def results_schema_text() -> str:
    from orchestrator.formats.results import results_json_schema

    return json.dumps(results_json_schema(), indent=2) + "\n"
