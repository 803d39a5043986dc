"""python -m orchestrator.schemas [--check]: write (or check) results.schema.json."""

from __future__ import annotations

import sys

from orchestrator.schemas import RESULTS_SCHEMA_FILE, results_schema_text


def main(argv: list[str]) -> None:
    text = results_schema_text()
    if "--check" in argv:
        shipped = (RESULTS_SCHEMA_FILE.read_text(encoding="utf-8")
                   if RESULTS_SCHEMA_FILE.exists() else "")
        if shipped != text:
            sys.exit(f"{RESULTS_SCHEMA_FILE.name} is out of date: run "
                     "python -m orchestrator.schemas")
        return
    RESULTS_SCHEMA_FILE.write_text(text, encoding="utf-8")
    print(f"wrote {RESULTS_SCHEMA_FILE.name}")


if __name__ == "__main__":
    main(sys.argv[1:])
