"""results.json (requirements.md 3.2): what a training job reports at its end.

Schema 2 is any study's: ``metrics`` holds the model's row and whatever reference rows the
study has, each a mapping of metric name to number (the names the study declares, see
``orchestrator.study``); ``series`` holds curves over an index (e.g. PSNR per future frame),
``images`` pictures (e.g. a frame strip), both drawn by the report as they come. Schema 1,
the video study's first format (``final`` with its four fixed rows), is still read: it is
validated as it was and converted to the same record. ``schemas/results.schema.json`` is the
JSON Schema of schema 2, generated from ``Results`` (``python -m orchestrator.schemas``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import Field, PrivateAttr, ValidationError, model_validator

from orchestrator.formats.files import CorruptFile, Num, Record, Scalars, error_text, jsonable

RESULTS_SCHEMA = 2
READABLE_SCHEMAS = (1, 2)
MODEL_ROW = "model"


class EpochStats(Record):
    epoch: int
    train_loss: Num | None = None
    eval: Scalars | None = None  # None: an epoch the run did not evaluate (``eval_every``)
    seconds: Num | None = None


class Parameters(Record):
    trainable: int
    frozen: int = 0


class Timings(Record):
    wall_s: Num | None = None
    train_s: Num | None = None
    samples_per_s: Num | None = None
    peak_memory_mb: float | None = None


class Series(Record):
    """A curve per row over an index: ``rows`` maps "model" and reference rows to one value
    per position."""

    index: str  # what a position counts, e.g. "future frame": the x axis
    metric: str  # what the values are, e.g. "psnr": the y axis (a declared metric's title)
    rows: dict[str, tuple[Num, ...]]


class Image(Record):
    path: str  # relative to the job's output folder
    caption: str = ""


class Results(Record):
    """A validated results.json, schema 2 (a schema-1 file is converted on reading).
    ``path`` is where it was read from."""

    schema_version: int = Field(alias="schema")
    variant: str
    preset: str
    seed: int
    status: str
    config: dict[str, Any] = Field(default_factory=dict)
    environment: dict[str, Any] = Field(default_factory=dict)  # python, platform, device...
    parameters: Parameters | None = None
    history: tuple[EpochStats, ...] = ()
    metrics: dict[str, Scalars]  # "model" and the study's reference rows
    # Row -> metric -> one value per held-out example, in one order for every job of a run:
    # what paired comparisons between variants (and against the floors) resample.
    per_example: dict[str, dict[str, tuple[Num, ...]]] = Field(default_factory=dict)
    series: dict[str, Series] = Field(default_factory=dict)
    images: dict[str, Image] = Field(default_factory=dict)
    timings: Timings = Timings()
    artifacts: dict[str, str | None] = Field(default_factory=dict)
    # Where the result came from: code (commit, dirty), checkpoints (sha256), kernels...
    provenance: dict[str, Any] = Field(default_factory=dict)
    _path: Path = PrivateAttr(default=Path("results.json"))
    _read_from: int = PrivateAttr(default=RESULTS_SCHEMA)

    @model_validator(mode="after")
    def _has_the_model_row(self) -> Results:
        if MODEL_ROW not in self.metrics:
            raise ValueError("missing field 'metrics.model'")
        return self

    @property
    def path(self) -> Path:
        return self._path

    @property
    def read_from_schema(self) -> int:
        """The schema of the file as written (1: converted on reading)."""
        return self._read_from

    @property
    def trainable(self) -> int | None:
        return self.parameters.trainable if self.parameters else None

    @property
    def frozen(self) -> int | None:
        return self.parameters.frozen if self.parameters else None

    def image_path(self, name: str) -> Path:
        return self._path.parent / self.images[name].path


# ---------------------------------------------------------------------------- schema 1


class _RowV1(Record):
    mse: Num
    mae: Num
    psnr: Num
    ssim: Num
    mse_per_pixel: Num
    per_frame: dict[str, tuple[Num, ...]]  # metric name -> one value per future frame


class _EnvironmentV1(Record):
    python: str
    torch: str
    device: str
    cuda: str | None
    platform: str
    threads: int | None


class _EpochV1(Record):
    epoch: int
    train_loss: Num
    eval: Scalars | None = None
    seconds: Num


class _TimingsV1(Record):
    wall_s: Num
    train_s: Num
    samples_per_s: Num
    peak_memory_mb: float | None


class _ResultsV1(Record):
    """The video study's first format, validated as strictly as it always was."""

    schema_version: int = Field(alias="schema")
    variant: str
    preset: str
    seed: int
    status: str
    config: dict[str, Any]
    environment: _EnvironmentV1
    parameters: Parameters
    history: tuple[_EpochV1, ...]
    final: dict[str, _RowV1]
    timings: _TimingsV1
    artifacts: dict[str, str | None]

    @model_validator(mode="after")
    def _every_row(self) -> _ResultsV1:
        for row in (MODEL_ROW, "black", "copy_last", "oracle"):
            if row not in self.final:
                raise ValueError(f"missing field 'final.{row}'")
        return self

    def upgraded(self) -> dict[str, Any]:
        """The same results as a schema-2 document."""
        doc = self.model_dump(by_alias=True, exclude={"final"})
        doc["schema"] = RESULTS_SCHEMA
        doc["metrics"] = {row: values.model_dump(exclude={"per_frame"})
                          for row, values in self.final.items()}
        frame_metrics = dict.fromkeys(m for row in self.final.values() for m in row.per_frame)
        doc["series"] = {f"{metric}_per_frame": {
            "index": "future frame", "metric": metric,
            "rows": {row: values.per_frame[metric] for row, values in self.final.items()
                     if metric in values.per_frame}} for metric in frame_metrics}
        frames = self.artifacts.get("frames")
        doc["images"] = {"frames": {"path": frames, "caption": FRAME_STRIP_CAPTION}} \
            if frames else {}
        return doc


# What the video study's frame strip shows (its training loop writes the same caption).
FRAME_STRIP_CAPTION = ("per clip, the context frames then the true future, and below them "
                       "the same context then the predicted future")


def _validated(document: Any) -> Results:
    """A schema-1 or schema-2 document as ``Results``; ``ValueError`` naming the field."""
    if not isinstance(document, dict):
        raise ValueError("should be a JSON object")
    schema = document.get("schema")
    if schema not in READABLE_SCHEMAS:
        raise ValueError(f"schema {schema!r} is not supported (this orch reads "
                         f"{' and '.join(map(str, READABLE_SCHEMAS))})")
    try:
        if schema == 1:
            document = _ResultsV1.model_validate_json(json.dumps(document)).upgraded()
        results = Results.model_validate_json(json.dumps(jsonable(document), allow_nan=False))
    except ValidationError as error:
        raise ValueError(error_text(error)) from None
    results._read_from = schema
    return results


def results_json_schema() -> dict[str, Any]:
    """The JSON Schema of results.json (schema 2), from the model that validates it."""
    schema = Results.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "orch results.json (schema 2)"
    schema["properties"]["metrics"]["required"] = [MODEL_ROW]  # what the validator checks
    return schema


def check_results(record: dict[str, Any]) -> Results:
    """Validate a results record before it is written; raises ``ValueError`` naming the
    field (what a train script gets from ``orchestrator.client.Run.write_results``)."""
    try:
        return _validated(record)
    except ValueError as error:
        raise ValueError(f"results: {error}") from None


def load_results(path: Path) -> Results:
    """Read and validate one results.json; raises ``CorruptFile`` naming the file and field."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise CorruptFile(path, f"cannot read ({error.strerror or error})") from None
    try:
        document = json.loads(data)
    except (ValueError, UnicodeDecodeError) as error:
        raise CorruptFile(path, f"not valid JSON ({error})") from None
    try:
        results = _validated(document)
    except ValueError as error:
        raise CorruptFile(path, str(error)) from None
    results._path = path
    return results
