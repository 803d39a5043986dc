"""The published JSON Schema of results.json: generated from the model that validates it,
shipped up to date, and met by the study's real results and by another study's."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from branches.baseline import train as baseline_train
from orchestrator.formats import load_results
from orchestrator.schemas import RESULTS_SCHEMA_FILE, results_schema_text
from shared.testing import write_micro_tokenizer

ROOT = Path(__file__).resolve().parents[1]


def validator() -> jsonschema.Draft202012Validator:
    schema = json.loads(RESULTS_SCHEMA_FILE.read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_the_shipped_schema_is_the_generated_one():
    assert RESULTS_SCHEMA_FILE.read_text(encoding="utf-8") == results_schema_text()
    check = subprocess.run([sys.executable, "-m", "orchestrator.schemas", "--check"],
                           cwd=ROOT, capture_output=True, text=True)
    assert check.returncode == 0, check.stderr


def test_the_studys_real_results_meet_the_schema(tmp_path):
    tokenizer = write_micro_tokenizer(tmp_path / "tokenizer.ckpt")
    baseline_train.main(["--preset", "micro", "--output", str(tmp_path / "run"),
                         "--tokenizer", str(tokenizer), "--threads", "1"])
    document = json.loads((tmp_path / "run" / "results.json").read_text())
    validator().validate(document)
    assert load_results(tmp_path / "run" / "results.json").metrics["model"]


def test_another_studys_results_meet_it_and_a_broken_one_does_not():
    document = {"schema": 2, "variant": "wide", "preset": "small", "seed": 1,
                "status": "success",
                "metrics": {"model": {"accuracy": 0.91, "loss": None},
                            "majority_class": {"accuracy": 0.5}}}
    validator().validate(document)
    for broken in ({**document, "metrics": {"majority_class": {"accuracy": 0.5}}},
                   {**document, "metrics": {"model": {"accuracy": "high"}}},
                   {k: v for k, v in document.items() if k != "variant"}):
        with pytest.raises(jsonschema.ValidationError):
            validator().validate(broken)
