"""orch diff: the code, params and metric differences between two variants (or jobs, or runs),
in the library, the command (terminal and --json) and the report's per-pair sections."""

from __future__ import annotations

import json
import random
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from orchestrator import state as st
from orchestrator.cli.main import app
from orchestrator.diff import diff_variants, parse_name
from orchestrator.errors import UsageError
from orchestrator.report import build_report, write_report
from orchestrator.report.code import code_diff, parse_numstat_patch
from orchestrator.report.paired import comparisons
from orchestrator.report.pairs import mirrored
from orchestrator.study import MetricSpec, ReferenceSpec, StudySpec
from tests.orch_fixtures import *  # noqa: F403
from tests.orch_fixtures import commit_all, git, write_tree

CONFIG = """\
base_ref: main
default_preset: micro
presets:
  micro: {}
study:
  metrics:
    - {name: score, better: higher, rank: true, digits: 2}
    - {name: error, better: lower, digits: 2}
  references:
    - {name: chance, role: floor}
variants:
  - {name: alpha, branch: exp-alpha, folder: variants/alpha, resources: {gpus: 0}}
  - {name: beta, branch: exp-beta, folder: variants/beta, resources: {gpus: 0}}
"""
STUDY = StudySpec(metrics=(MetricSpec("score", "higher", rank=True, digits=2),
                           MetricSpec("error", "lower", digits=2)),
                  references=(ReferenceSpec("chance", "floor"),))
RUN_ID = "20260301-100000-1"
EXAMPLES = 40


def per_example(shift: float, seed: int) -> list[float]:
    rng = random.Random(seed)
    return [10.0 + i % 7 + shift + rng.gauss(0.0, 0.3) for i in range(EXAMPLES)]


def results(variant: str, seed: int, shift: float, config: dict[str, Any]) -> dict[str, Any]:
    scores = per_example(shift, seed)
    errors = [20.0 - s for s in scores]
    return {"schema": 2, "variant": variant, "preset": "micro", "seed": seed,
            "status": "success", "config": config,
            "metrics": {"model": {"score": sum(scores) / EXAMPLES,
                                  "error": sum(errors) / EXAMPLES},
                        "chance": {"score": 5.0, "error": 15.0}},
            "per_example": {"model": {"score": scores, "error": errors},
                            "chance": {"score": [5.0] * EXAMPLES, "error": [15.0] * EXAMPLES}}}


def config_of(lr: float, depth: int, **extra: Any) -> dict[str, Any]:
    return {"study": {"train": {"lr": lr, "epochs": 3, "batch": 8}, "model": {"depth": depth}},
            "rehearsal": False, **extra}


@pytest.fixture
def study_repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A study whose branches differ by a known change: exp-beta edits two lines of one file
    into three and adds a file of one line."""
    root = tmp_path / "repo"
    write_tree(root, {"config.yaml": CONFIG, ".gitignore": ".orch/\n",
                      "variants/alpha/model.py": "DEPTH = 2\nWIDTH = 8\n",
                      "variants/beta/model.py": "DEPTH = 2\nWIDTH = 8\n"})
    git(root, "init", "-q", "-b", "main")
    git(root, "config", "user.email", "test@example.com")
    git(root, "config", "user.name", "orch test")
    git(root, "config", "commit.gpgsign", "false")
    commit_all(root, "study")
    git(root, "branch", "exp-alpha")
    git(root, "checkout", "-q", "-b", "exp-beta")
    write_tree(root, {"variants/beta/model.py": "DEPTH = 4\nWIDTH = 8\nFUSION = 'late'\n",
                      "variants/beta/fusion.py": "def fuse(a, b): return a + b\n"})
    commit_all(root, "beta: deeper, fused")
    git(root, "checkout", "-q", "main")
    monkeypatch.chdir(root)
    return root


def commit(root: Path, branch: str) -> str:
    return git(root, "rev-parse", branch).strip()


@pytest.fixture
def finished(study_repo: Path, orch_env: Path) -> Path:
    """A finished run: alpha at two seeds (the second with a command-line override), beta at
    one, run on a dirty tree; beta scores 1 higher on every example."""
    run = st.RunState(run_id=RUN_ID, preset="micro", started=1.0, finished=2.0, status="done")
    base = st.run_dir(orch_env, RUN_ID)
    jobs = [("alpha", 0, 0.0, config_of(1e-3, 2)),
            ("alpha", 1, 0.0, config_of(1e-3, 2, overrides={"study.train.epochs": 3})),
            ("beta", 0, 1.0, config_of(3e-4, 4))]
    for variant, seed, shift, config in jobs:
        name = st.job_name(variant, seed, 2 if variant == "alpha" else 1)
        out = base / name
        out.mkdir(parents=True)
        (out / "results.json").write_text(json.dumps(results(variant, seed, shift, config)))
        dirty = variant == "beta"
        if dirty:
            (out / "diff.patch").write_text("--- a/variants/beta/model.py\n"
                                            "+++ b/variants/beta/model.py\n+DROPOUT = 0.1\n")
        run.jobs.append(st.JobState(
            variant=variant, seed=seed, preset="micro", name=name, branch=f"exp-{variant}",
            commit=commit(study_repo, f"exp-{variant}"), dirty=dirty,
            diff_path=str(out / "diff.patch") if dirty else "", stage=st.Stage.done,
            output_dir=str(out)))
    st.save_run(orch_env, run, latest=True)
    return base


# ---------------------------------------------------------------------------- the library


def test_file_counts_and_patch_of_a_known_change(finished: Path, study_repo: Path) -> None:
    pair = diff_variants(st.state_home(), "alpha", "beta", study=STUDY, repo=study_repo)
    counts = {f.path: (f.added, f.removed) for f in pair.code.files}
    assert counts == {"variants/beta/fusion.py": (1, 0), "variants/beta/model.py": (2, 1)}
    assert (pair.code.added, pair.code.removed) == (3, 1)
    assert pair.code.old_commit == commit(study_repo, "exp-alpha")
    assert pair.code.new_commit == commit(study_repo, "exp-beta")
    assert "+FUSION = 'late'" in pair.code.patch and "-DEPTH = 2" in pair.code.patch
    # beta ran with uncommitted changes: said, and the patch it recorded comes along
    assert any("beta ran with uncommitted changes" in note for note in pair.notes)
    assert list(pair.uncommitted) == ["beta"] and "+DROPOUT" in pair.uncommitted["beta"]


def test_folders_are_diffed_when_the_variants_live_apart(finished: Path,
                                                         study_repo: Path) -> None:
    pair = diff_variants(st.state_home(), "alpha", "beta", study=STUDY, repo=study_repo,
                         folders={"alpha": "variants/alpha", "beta": "variants/beta"})
    assert pair.folders is not None
    assert {f.path: (f.added, f.removed) for f in pair.folders.files} == {
        "fusion.py": (1, 0), "model.py": (2, 1)}


def test_params_diff_lists_exactly_the_changed_keys(finished: Path, study_repo: Path) -> None:
    pair = diff_variants(st.state_home(), "alpha", "beta", study=STUDY, repo=study_repo)
    rows = {row.key: row for row in pair.params.rows}
    # alpha-s1's override of epochs set it to the value it had: shown, marked, not a change
    assert set(rows) == {"study.train.lr", "study.model.depth", "study.train.epochs"}
    assert rows["study.train.lr"].values == {"alpha": 1e-3, "beta": 3e-4}
    assert rows["study.train.epochs"].overridden == ("alpha",)
    assert pair.params.differing == 2
    assert pair.params.equal == 2  # study.train.batch, rehearsal


def test_metric_comparisons_are_the_reports(finished: Path, study_repo: Path) -> None:
    found = build_report(finished, STUDY).comparisons
    pair = diff_variants(st.state_home(), "beta", "alpha", study=STUDY, repo=study_repo)
    by_metric = {m.metric: m.paired for m in pair.metrics}
    for c in found:
        if {c.a, c.b} == {"alpha", "beta"}:
            expected = c if c.a == "beta" else mirrored(c, "beta", "alpha")
            assert by_metric[c.metric] == expected
    assert by_metric["score"] is not None and by_metric["score"].verdict == "better"
    assert by_metric["error"] is not None and by_metric["error"].verdict == "better"
    assert pair.metrics[0].a - pair.metrics[0].b == pytest.approx(1.0, abs=0.2)


def test_a_job_against_a_variant_is_paired_the_same_way(finished: Path,
                                                        study_repo: Path) -> None:
    pair = diff_variants(st.state_home(), "alpha-s1", "beta", study=STUDY, repo=study_repo)
    assert pair.a.jobs == ("alpha-s1",) and pair.b.jobs == ("beta",)
    report = build_report(finished, STUDY)
    rows = {r.name: r for r in report.rows}
    samples = {label: {"model": {m: [list(rows[job].per_example["model"][m])]
                                 for m in ("score", "error")}}
               for label, job in (("alpha-s1", "alpha-s1"), ("beta", "beta"))}
    expected = comparisons(samples, replace(STUDY, references=()))
    assert [m.paired for m in pair.metrics] == expected


def test_runs_apart_and_a_missing_commit(finished: Path, study_repo: Path,
                                         orch_env: Path) -> None:
    # A second run of alpha whose job recorded no commit: its branch's tip stands in.
    later = "20260302-100000-1"
    out = st.run_dir(orch_env, later) / "alpha"
    out.mkdir(parents=True)
    (out / "results.json").write_text(json.dumps(results("alpha", 0, 0.5, config_of(2e-3, 2))))
    st.save_run(orch_env, st.RunState(run_id=later, preset="micro", started=3.0, status="done",
                                      jobs=[st.JobState(variant="alpha", name="alpha",
                                                        stage=st.Stage.done,
                                                        output_dir=str(out))]))
    pair = diff_variants(orch_env, f"{RUN_ID}:beta", f"{later}:alpha", study=STUDY,
                         repo=study_repo, branches={"alpha": "exp-alpha"})
    assert pair.a.run_id == RUN_ID and pair.b.run_id == later
    assert pair.b.ref == "exp-alpha" and any("tip of branch exp-alpha" in n for n in pair.notes)
    assert {f.path for f in pair.code.files} == {"variants/beta/fusion.py",
                                                 "variants/beta/model.py"}
    assert [row.key for row in pair.params.rows if "lr" in row.key] == ["study.train.lr"]
    assert pair.metrics[0].paired is not None


def test_names_that_say_nothing_are_usage_errors(finished: Path, orch_env: Path,
                                                 tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"no variant or job 'gamma'.*alpha, beta"):
        diff_variants(orch_env, "alpha", "gamma")
    with pytest.raises(UsageError, match="the same jobs"):
        diff_variants(orch_env, "beta", f"{RUN_ID}:beta")
    with pytest.raises(UsageError, match="no run 'nope'"):
        diff_variants(orch_env, "alpha", "nope:beta")
    with pytest.raises(UsageError, match="no run found"):
        diff_variants(tmp_path / "empty", "alpha", "beta")
    assert parse_name("r1:alpha") == ("r1", "alpha") and parse_name("alpha") == (None, "alpha")


def test_git_trouble_is_an_error_in_the_record_not_a_crash(tmp_path: Path) -> None:
    nowhere = code_diff([tmp_path], "abc1234", "def5678")
    assert nowhere.error and not nowhere.files and "no code diff" in nowhere.stat()


def test_numstat_of_a_rename_and_a_binary_file() -> None:
    text = "1\t0\t\0old.py\0new.py\0-\t-\tlogo.png\0\0diff --git a/x b/x\n"
    files, patch = parse_numstat_patch(text)
    assert [(f.path, f.added, f.removed) for f in files] == [
        ("old.py -> new.py", 1, 0), ("logo.png", None, None)]
    assert patch == "diff --git a/x b/x\n"


# ---------------------------------------------------------------------------- the command


def test_json_holds_everything_and_the_patch(finished: Path) -> None:
    result = CliRunner().invoke(app, ["diff", "alpha", "beta", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert "+FUSION = 'late'" in data["code"]["patch"]
    assert (data["code"]["added"], data["code"]["removed"]) == (3, 1)
    assert {f["path"] for f in data["folders"]["files"]} == {"fusion.py", "model.py"}
    assert {row["key"] for row in data["params"]["rows"]} >= {"study.train.lr"}
    assert [m["metric"] for m in data["metrics"]] == ["score", "error"]
    assert data["metrics"][0]["paired"]["verdict"] == "worse"  # alpha against beta
    assert "+DROPOUT" in data["uncommitted"]["beta"]


def test_terminal_shows_tables_then_the_patch(finished: Path) -> None:
    result = CliRunner().invoke(app, ["diff", "alpha", "beta"])
    assert result.exit_code == 0, result.output
    text = result.stdout
    for expected in ("alpha vs beta", "variants/beta/model.py", "+2", "-1",
                     "study.train.lr", "0.001", "0.0003", "study.train.epochs", "3*",
                     "score", "alpha worse", "diff of the commits", "+FUSION = 'late'",
                     "uncommitted changes beta ran with", "+DROPOUT = 0.1"):
        assert expected in text, expected
    # the tables come before the patch
    assert text.index("alpha worse") < text.index("+FUSION")
    stat = CliRunner().invoke(app, ["diff", "alpha", "beta", "--stat", "--no-pager"])
    assert stat.exit_code == 0 and "variants/beta/model.py" in stat.stdout
    assert "+FUSION" not in stat.stdout


def test_the_patch_is_paged_only_in_a_terminal(finished: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    import io
    import pydoc

    from rich.console import Console

    from orchestrator import ui

    paged: list[str] = []
    monkeypatch.setattr(pydoc, "pager", paged.append)
    monkeypatch.setenv("LESS", "FRX")  # what orch sets for less when unset: keep it here
    monkeypatch.setattr(ui, "out", Console(file=io.StringIO(), force_terminal=True, width=100))
    assert CliRunner().invoke(app, ["diff", "alpha", "beta"]).exit_code == 0
    (text,) = paged
    assert "+FUSION = 'late'" in text and "\x1b[" in text  # coloured for the pager
    assert CliRunner().invoke(app, ["diff", "alpha", "beta", "--no-pager"]).exit_code == 0
    assert len(paged) == 1 and "+FUSION" in ui.out.file.getvalue()  # type: ignore[attr-defined]


def test_unknown_variant_exits_with_the_usage_code_and_one_line(finished: Path) -> None:
    result = CliRunner().invoke(app, ["diff", "alpha", "gamma"])
    assert result.exit_code == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "gamma" in lines[0] and "alpha, beta" in lines[0]
    same = CliRunner().invoke(app, ["diff", "alpha", "alpha"])
    assert same.exit_code == 2 and "the same jobs" in same.stderr


# ---------------------------------------------------------------------------- the report


def test_report_html_has_each_pair_with_its_diff_folded(finished: Path, tmp_path: Path) -> None:
    report = write_report(build_report(finished, STUDY), tmp_path / "out")
    (pair,) = report.pairs
    assert pair.title == "beta vs alpha"  # ranked order: beta scores higher
    page = (tmp_path / "out" / "report.html").read_text()
    section = page[page.index("<h2>Variant pairs</h2>"):page.index("<h2>Gates</h2>")]
    assert "<h3>beta vs alpha</h3>" in section
    assert "variants/beta/fusion.py" in section
    assert "Params: the Params table above." in section  # two variants: the same table
    assert "<details><summary>code diff, commits (2 files, +1 -3)" in section
    assert "FUSION = &#x27;late&#x27;" in section  # escaped
    assert "beta better" in section
    md = (tmp_path / "out" / "report.md").read_text()
    assert "### beta vs alpha" in md and "| variants/beta/model.py | +1 | -2 |" in md
    assert "`orch diff beta alpha --run " in md
    assert report.to_dict()["pairs"][0]["code"]["added"] == 1


def test_report_diffs_the_folders_it_is_told_of(finished: Path, study_repo: Path,
                                                 orch_env: Path, tmp_path: Path) -> None:
    # Both variants on one commit, as in a study whose variants are folders of one branch.
    run = st.load_run(orch_env, RUN_ID)
    assert run is not None
    same = commit(study_repo, "exp-beta")
    st.save_run(orch_env, replace(run, jobs=[replace(j, commit=same) for j in run.jobs]))
    (plain,) = build_report(finished, STUDY).pairs
    assert plain.code.same and any("ran the same code" in n for n in plain.notes)
    report = write_report(build_report(finished, STUDY, folders={
        "alpha": "variants/alpha", "beta": "variants/beta"}), tmp_path / "out")
    (pair,) = report.pairs
    assert pair.code.same and pair.folders is not None and len(pair.folders.files) == 2
    assert not any("ran the same code" in n for n in pair.notes)
    page = (tmp_path / "out" / "report.html").read_text()
    assert "hold the same code" in page
    assert "<details><summary>code diff, variant folders (2 files, +1 -3)" in page


def test_report_builds_without_git(finished: Path, tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "no-bin"))
    report = write_report(build_report(finished, STUDY), tmp_path / "out")
    (pair,) = report.pairs
    assert "git is not installed" in pair.code.error
    page = (tmp_path / "out" / "report.html").read_text()
    assert "Code (commits): unavailable: git is not installed" in page
