"""Command-line overrides (`-s KEY=VALUE`), seed lists, and `--dry-run`.

Overrides reach a variant's typed config through the train contract (`--set`): typed like
the field they replace, recorded in state.json and results.json; an unknown key fails the
job at once with exit 2 and the nearest names. `--dry-run` prints the launcher's own plan and
starts nothing.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from orchestrator.overrides import OverrideError, apply_overrides, config_keys, parse_override
from tests.orch_fixtures import *  # noqa: F403
from tests.orch_fixtures import orch_cmd, orch_env_vars, read_state

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Optim:
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.99)
    warmup: int | None = None
    schedule: Literal["cosine", "constant"] = "cosine"


@dataclass(frozen=True)
class Model:
    depth: int = 4
    heads: tuple[int, ...] = (4, 4)
    readout: str = "sign"
    flash: bool = False


@dataclass(frozen=True)
class Experiment:
    optim: Optim = field(default_factory=Optim)
    model: Model = field(default_factory=Model)


def test_values_are_typed_like_the_fields_they_replace() -> None:
    config, typed = apply_overrides(Experiment(), {
        "optim.lr": "3e-4", "model.depth": "6", "model.flash": "true", "optim.warmup": "100",
        "optim.betas": "[0.8,0.95]", "model.heads": "8,8,8", "optim.schedule": "constant",
        "model.readout": "samples"})
    assert config.optim.lr == 3e-4 and isinstance(config.optim.lr, float)
    assert config.model.depth == 6 and isinstance(config.model.depth, int)
    assert config.model.flash is True
    assert config.optim.warmup == 100
    assert config.optim.betas == (0.8, 0.95)
    assert config.model.heads == (8, 8, 8)
    assert config.optim.schedule == "constant"
    assert typed == {"optim.lr": 3e-4, "model.depth": 6, "model.flash": True,
                     "optim.warmup": 100, "optim.betas": (0.8, 0.95), "model.heads": (8, 8, 8),
                     "optim.schedule": "constant", "model.readout": "samples"}
    assert apply_overrides(config, {"optim.warmup": "none"})[0].optim.warmup is None
    assert Experiment().optim.lr == 1e-3  # frozen configs: a new one, the old untouched


@pytest.mark.parametrize(("overrides", "says"), [
    ({"optim.lrr": "1"}, "nearest: optim.lr"),
    ({"model.dept": "1"}, "nearest: model.depth"),
    ({"model.depth": "six"}, "'six' is not an integer"),
    ({"optim.lr": "fast"}, "'fast' is not a number"),
    ({"model.flash": "maybe"}, "not true or false"),
    ({"optim.schedule": "linear"}, "not one of cosine, constant"),
    ({"optim.betas": "0.9"}, "2 values wanted"),
    ({"optim": "1"}, "no such key"),
])
def test_a_bad_override_names_what_to_type(overrides: dict[str, str], says: str) -> None:
    with pytest.raises(OverrideError, match=says):
        apply_overrides(Experiment(), overrides)


def test_override_form() -> None:
    assert parse_override("study.train.lr=3e-4") == ("study.train.lr", "3e-4")
    assert parse_override("a.b=x=y") == ("a.b", "x=y")  # the value may hold "="
    for bad in ("study.train.lr", "=3", "study..lr=1", "study.train-lr=1"):
        with pytest.raises(OverrideError):
            parse_override(bad)
    assert config_keys(Experiment())[:2] == ["optim.lr", "optim.betas"]


def test_the_real_study_config_takes_overrides_through_the_train_contract(
        tmp_path: Path) -> None:
    from branches.baseline.config import baseline_config
    from shared.entry import parse_train_args
    from shared.errors import ConfigError

    args = parse_train_args(["--preset", "micro", "--output", str(tmp_path),
                             "--set", "study.train.lr=3e-4", "--set", "study.predictor.depth=1"],
                            variant="baseline", description="")
    config = args.configure(baseline_config("micro"))
    assert config.study.train.lr == 3e-4 and config.study.predictor.depth == 1
    with pytest.raises(ConfigError, match=r"nearest: study\.train\.lr"):
        parse_train_args(["--preset", "micro", "--output", str(tmp_path), "--set",
                          "study.train.lrr=1"], variant="baseline", description=""
                         ).configure(baseline_config("micro"))


def test_an_unknown_key_fails_the_train_entry_at_once_with_exit_2(tmp_path: Path) -> None:
    """Before any tokenizer loads: no checkpoint is given, and the error is the override's."""
    done = subprocess.run(
        [sys.executable, "-m", "branches.baseline.train", "--preset", "micro", "--output",
         str(tmp_path / "out"), "--set", "study.predictor.dept=2"],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "study.predictor.depth" in lines[0], done.stderr
    assert not (tmp_path / "out" / "results.json").exists()


def run_orch(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(orch_cmd(*args), cwd=cwd, env=orch_env_vars(), capture_output=True,
                          text=True, timeout=120)


def test_orch_train_passes_overrides_and_a_seed_list(spawned: Path, orch_env: Path) -> None:
    done = run_orch("train", "alpha", "--preset", "micro", "-s", "train.lr=0.1", "-s",
                    "model.depth=6", "--seeds", "0,3", "--json", cwd=spawned)
    assert done.returncode == 0, done.stdout + done.stderr
    state = json.loads(done.stdout)
    assert [j["name"] for j in state["jobs"]] == ["alpha-s0", "alpha-s3"]
    assert [j["seed"] for j in state["jobs"]] == [0, 3]
    for job in state["jobs"]:
        assert job["overrides"] == {"train.lr": "0.1", "model.depth": "6"}
        results = json.loads((Path(job["output_dir"]) / "results.json").read_text())
        assert results["seed"] == job["seed"]
        assert results["config"]["overrides"] == {"train.lr": "0.1", "model.depth": "6"}
        argv = results["argv"]
        assert argv[-4:] == ["--set", "train.lr=0.1", "--set", "model.depth=6"]
    saved = read_state(orch_env)
    assert saved is not None
    assert all(j["overrides"] for j in saved["jobs"])  # type: ignore[union-attr]


@pytest.mark.parametrize(("args", "says"), [
    (("-s", "train.lr"), "not KEY=VALUE"),
    (("--seeds", "0,0"), "distinct"),
    (("--seeds", "0"), "a count"),
    (("--resume", "-s", "train.lr=1"), "--resume continues the last run as it was"),
])
def test_bad_overrides_and_seeds_are_usage_errors(spawned: Path, args: tuple[str, ...],
                                                  says: str) -> None:
    done = run_orch("train", "--preset", "micro", *args, cwd=spawned)
    assert done.returncode == 2, done.stdout + done.stderr
    assert says in done.stderr and "Traceback" not in done.stderr


def test_dry_run_prints_the_plan_and_starts_nothing(spawned: Path, orch_env: Path) -> None:
    done = run_orch("train", "--preset", "tiny", "--dry-run", "--json", "-s", "train.lr=0.1",
                    cwd=spawned)
    assert done.returncode == 0, done.stdout + done.stderr
    plan = json.loads(done.stdout)
    assert plan["command"] == "train" and plan["preset"] == "tiny" and plan["run_id"] == ""
    assert [(s["name"], s["cached"]) for s in plan["shared"]] == [("tokenizer", False)]
    assert plan["gates"] == ["alpha", "beta"]
    for job in plan["jobs"]:
        assert job["worktree_ready"] and job["resume"] == ""
        command = job["command"]
        assert command[1:3] == ["-m", f"branches.{job['variant']}.train"]
        assert "--tokenizer" in command and command[-2:] == ["--set", "train.lr=0.1"]
    assert read_state(orch_env) is None  # no run was recorded
    assert not (orch_env / "shared").exists() or not any((orch_env / "shared").iterdir())
    text = run_orch("train", "--preset", "tiny", "--dry-run", cwd=spawned)
    assert text.returncode == 0 and "would run" in text.stdout and "nothing was started" in (
        text.stdout)


def test_dry_run_of_a_resume_says_what_continues(spawned: Path, orch_env: Path) -> None:
    first = subprocess.run(orch_cmd("train", "--preset", "micro"), cwd=spawned,
                           env=orch_env_vars(FAKE_FAIL_BETA="exit"), capture_output=True,
                           text=True, timeout=120)
    assert first.returncode == 5, first.stdout + first.stderr
    done = run_orch("train", "--resume", "--dry-run", "--json", cwd=spawned)
    assert done.returncode == 0, done.stdout + done.stderr
    plan = json.loads(done.stdout)
    assert plan["run_id"] and [j["name"] for j in plan["jobs"]] == ["beta"]
    (beta,) = plan["jobs"]
    assert beta["resume"] == "from the start (no checkpoint)"
    assert plan["gates"] == []  # its gate passed in the run being continued


def test_orch_run_dry_run_would_create_the_worktrees(git_repo: Path) -> None:
    done = run_orch("run", "--preset", "micro", "--dry-run", cwd=git_repo)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "created by run" in done.stdout and "a new `orch run`" in done.stdout
