"""Every file format orch reads or writes, as typed records, with one reader and one writer each.

- ``results.json`` (requirements.md 3.2): ``Results``, read by ``load_results`` (schema 2,
  or schema 1 converted), checked before writing by ``check_results``.
- ``events.jsonl`` (requirements.md 3.1): the ``Event`` kinds, one per line, followed by
  ``EventTail`` (incremental, tolerant) or read whole by ``read_events``.
- ``state.json`` (the run state orch writes): ``RunState`` with its ``JobState`` records,
  read by ``parse_run`` and written by ``dump_run``.

pydantic validates all three (strict types: a string is never read as a number), so an
error names the file and the field. JSON has no NaN or infinity: writers store them as null,
and a required number that is null reads back as NaN.

The policy for a torn or corrupt file is the same everywhere: one line through the
``orchestrator`` logger (``warn_corrupt``) that names the file, why it cannot be used and
what is shown instead (the last good state, the lines that could be read, or the job without
results); never a traceback. The CLI prints such lines once each, as warnings.

``write_text_atomic`` is the one writer of whole files: a temp file in the same folder,
fsync, then rename, so a reader sees the old file or the new one, never half of one.
"""

from __future__ import annotations

from orchestrator.formats.events import (
    CheckpointEvent,
    EndEvent,
    ErrorEvent,
    EvalEvent,
    Event,
    EventTail,
    ProgressEvent,
    StartEvent,
    parse_event,
    read_events,
)
from orchestrator.formats.files import (
    CorruptFile,
    collect_warnings,
    jsonable,
    log,
    warn_corrupt,
    write_json_atomic,
    write_text_atomic,
)
from orchestrator.formats.results import (
    MODEL_ROW,
    RESULTS_SCHEMA,
    EpochStats,
    Image,
    Parameters,
    Results,
    Series,
    Timings,
    check_results,
    load_results,
)
from orchestrator.formats.run_state import (
    FINISHED_STAGES,
    GateResult,
    JobState,
    Outcome,
    PhaseJob,
    RunState,
    RunStatus,
    Stage,
    TestOutcome,
    dump_run,
    parse_run,
    run_to_dict,
)

__all__ = [
    "FINISHED_STAGES", "MODEL_ROW", "RESULTS_SCHEMA", "CheckpointEvent",
    "CorruptFile", "EndEvent", "EpochStats", "ErrorEvent", "EvalEvent", "Event",
    "EventTail", "GateResult", "Image", "JobState", "Outcome", "Parameters", "PhaseJob",
    "ProgressEvent", "Results", "RunState", "RunStatus", "Series", "Stage", "StartEvent",
    "TestOutcome", "Timings", "check_results", "collect_warnings", "dump_run", "jsonable",
    "load_results", "log",
    "parse_event", "parse_run", "read_events", "run_to_dict", "warn_corrupt",
    "write_json_atomic", "write_text_atomic",
]
