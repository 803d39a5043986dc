"""results.json (requirements.md 3.2): what a training job reports at its end."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import Field, PrivateAttr, ValidationError, model_validator

from orchestrator.formats.files import CorruptFile, Num, Record, Scalars, error_text

RESULTS_SCHEMA = 1
REFERENCE_ROWS = ("black", "copy_last", "oracle")
METRIC_NAMES = ("mse", "mae", "psnr", "ssim")


class Metrics(Record):
    """One row of ``final``: the model's or a reference's scores on the held-out clips."""

    mse: Num
    mae: Num
    psnr: Num
    ssim: Num
    mse_per_pixel: Num
    per_frame: dict[str, tuple[Num, ...]]  # metric name -> one value per future frame

    def scores(self) -> dict[str, float]:
        return {name: getattr(self, name) for name in METRIC_NAMES}


class EpochStats(Record):
    epoch: int
    train_loss: Num
    eval: Scalars | None = None  # None: an epoch the run did not evaluate (``eval_every``)
    seconds: Num


class Environment(Record):
    python: str
    torch: str
    device: str
    cuda: str | None
    platform: str
    threads: int | None


class Parameters(Record):
    trainable: int
    frozen: int


class Timings(Record):
    wall_s: Num
    train_s: Num
    samples_per_s: Num
    peak_memory_mb: float | None


class Results(Record):
    """A validated results.json. ``path`` is where it was read from."""

    schema_version: int = Field(alias="schema")
    variant: str
    preset: str
    seed: int
    status: str
    config: dict[str, Any]
    environment: Environment
    parameters: Parameters
    history: tuple[EpochStats, ...]
    final: dict[str, Metrics]  # "model", "black", "copy_last", "oracle"
    timings: Timings
    artifacts: dict[str, str | None]
    _path: Path = PrivateAttr(default=Path("results.json"))

    @model_validator(mode="after")
    def _every_row(self) -> Results:
        for row in ("model", *REFERENCE_ROWS):
            if row not in self.final:
                raise ValueError(f"missing field 'final.{row}'")
        return self

    @property
    def path(self) -> Path:
        return self._path

    @property
    def trainable(self) -> int:
        return self.parameters.trainable

    @property
    def frozen(self) -> int:
        return self.parameters.frozen

    def artifact(self, name: str) -> Path | None:
        """Absolute path of an artifact (relative paths are relative to the job's output dir)."""
        relative = self.artifacts.get(name)
        return None if not relative else self._path.parent / relative


def check_results(record: dict[str, Any]) -> Results:
    """Validate a results record before it is written; raises ``ValueError`` naming the
    field (what a train script gets from ``orchestrator.client.Run.write_results``)."""
    schema = record.get("schema")
    if schema != RESULTS_SCHEMA:
        raise ValueError(f"results: schema {schema!r} is not supported (this orch reads "
                         f"{RESULTS_SCHEMA})")
    try:
        return Results.model_validate_json(json.dumps(record, allow_nan=False))
    except ValidationError as error:
        raise ValueError(f"results: {error_text(error)}") from None


def load_results(path: Path) -> Results:
    """Read and validate one results.json; raises ``CorruptFile`` naming the file and field."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise CorruptFile(path, f"cannot read ({error.strerror or error})") from None
    try:
        schema = json.loads(data).get("schema")
    except (ValueError, UnicodeDecodeError) as error:
        raise CorruptFile(path, f"not valid JSON ({error})") from None
    except AttributeError:
        raise CorruptFile(path, "should be a JSON object") from None
    if schema != RESULTS_SCHEMA:
        raise CorruptFile(path, f"schema {schema!r} is not supported "
                                f"(this orch reads {RESULTS_SCHEMA})")
    try:
        results = Results.model_validate_json(data)
    except ValidationError as error:
        raise CorruptFile(path, error_text(error)) from None
    results._path = path
    return results
