"""The params table: each variant's recorded config (results.json `config`) flattened to dotted
keys, the keys that differ shown, the equal ones counted, command-line overrides marked."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from orchestrator import state as st
from orchestrator.report import build_report, write_report
from orchestrator.report.params import (
    OVERRIDE_MARK,
    flatten,
    overridden_by,
    params_table,
    summary_sentence,
    table_cells,
)


def config(lr: float = 1e-3, depth: int = 2, **extra: Any) -> dict[str, Any]:
    return {"variant": "x", "study": {"train": {"lr": lr, "epochs": 3},
                                      "model": {"depth": depth, "heads": [4, 8]}},
            "rehearsal": False, **extra}


def test_flatten_makes_dotted_keys_and_leaves_overrides_out() -> None:
    flat = flatten(config(overrides={"study.train.lr": 1e-3}) | {"empty": {}})
    assert flat == {"variant": "x", "study.train.lr": 1e-3, "study.train.epochs": 3,
                    "study.model.depth": 2, "study.model.heads": [4, 8], "rehearsal": False,
                    "empty": {}}


def test_only_the_keys_that_differ_are_shown() -> None:
    table = params_table({"baseline": [config()], "joint": [config(lr=3e-4, depth=4)],
                          "slowfast": [config(depth=4)]})
    assert [row.key for row in table.rows] == ["study.model.depth", "study.train.lr"]
    assert table.equal == 4 and table.differing == 2 and not table.overridden
    assert table_cells(table) == [["study.model.depth", "2", "4", "4"],
                                  ["study.train.lr", "0.001", "0.0003", "0.001"]]
    assert "2 differ; 4 keys the same in every variant, hidden." in summary_sentence(table)
    assert OVERRIDE_MARK not in summary_sentence(table)


def test_a_key_one_variant_lacks_differs_and_1_is_not_true() -> None:
    table = params_table({"a": [{"flag": True, "only_a": 1}], "b": [{"flag": 1}]})
    assert {row.key: [row.cell(c) for c in table.columns] for row in table.rows} == {
        "flag": ["true", "1"], "only_a": ["1", "-"]}


def test_overrides_are_marked_whether_or_not_they_change_a_value() -> None:
    table = params_table({
        "baseline": [config(overrides={"study.train.epochs": 3, "study.model": {"depth": 2}})],
        "joint": [config(lr=3e-4)],
    })
    rows = {row.key: row for row in table.rows}
    # epochs is the same in both, but set by hand in baseline: shown, marked
    assert rows["study.train.epochs"].overridden == ("baseline",)
    assert rows["study.train.epochs"].cell("baseline") == "3" + OVERRIDE_MARK
    assert rows["study.train.epochs"].cell("joint") == "3"
    # an override of a whole mapping marks every key under it
    assert rows["study.model.depth"].overridden == ("baseline",)
    assert rows["study.model.heads"].overridden == ("baseline",)
    assert rows["study.train.lr"].overridden == ()
    assert table.overridden and table.differing == 1
    assert "set on the command line" in summary_sentence(table)


def test_override_names_match_at_dots_only() -> None:
    assert overridden_by("train.lr", "train.lr")
    assert overridden_by("train.lr", "train")
    assert overridden_by("train.lr", "study.train.lr")  # named from a root not recorded
    assert not overridden_by("train.lr_decay", "train.lr")
    assert not overridden_by("model.lr", "train.lr")


def test_an_override_the_config_does_not_hold_is_a_row_of_its_own() -> None:
    table = params_table({"a": [config(overrides={"study.train.warmup": 100})],
                          "b": [config()]})
    (row,) = [row for row in table.rows if row.key == "study.train.warmup"]
    assert row.cell("a") == "100" + OVERRIDE_MARK and row.cell("b") == "-"


def test_seeds_that_disagree_are_shown_by_seed() -> None:
    table = params_table({"a": [config(), config(lr=2e-3)], "b": [config(), config()]})
    (row,) = table.rows
    assert row.key == "study.train.lr" and row.cell("a") == "0.001 / 0.002 (by seed)"
    assert row.cell("b") == "0.001"


# ---------------------------------------------------------------------------- in the report


def _run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
         configs: dict[str, dict[str, Any]]) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv(st.HOME_ENV, str(home))
    run = st.RunState(run_id="r1", preset="micro", started=1.0, status="done")
    for variant, recorded in configs.items():
        out = st.run_dir(home, "r1") / variant
        out.mkdir(parents=True)
        (out / "results.json").write_text(json.dumps({
            "schema": 2, "variant": variant, "preset": "micro", "seed": 0,
            "status": "success", "config": recorded,
            "metrics": {"model": {"accuracy": 0.9 if variant == "a" else 0.8}}}))
        run.jobs.append(st.JobState(variant=variant, name=variant, stage=st.Stage.done,
                                    output_dir=str(out)))
    st.save_run(home, run)
    return st.run_dir(home, "r1")


def test_report_md_and_html_show_the_table_and_its_marker(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run_dir = _run(tmp_path, monkeypatch, {
        "a": config(lr=3e-4, overrides={"study.train.lr": 3e-4}), "b": config()})
    report = write_report(build_report(run_dir), tmp_path / "out")
    assert report.params is not None and report.params.columns == ("a", "b")
    assert report.to_dict()["params"]["rows"][0]["key"] == "study.train.lr"
    md = (tmp_path / "out" / "report.md").read_text()
    assert "## Params" in md and "| key | a | b |" in md
    assert "| study.train.lr | 0.0003* | 0.001 |" in md
    assert "5 keys the same in every variant, hidden" in md
    assert "* set on the command line (`config.overrides`)" in md
    page = (tmp_path / "out" / "report.html").read_text()
    section = page[page.index("<h2>Params</h2>"):page.index("<h2>Charts</h2>")]
    assert "<td>study.train.lr</td><td>0.0003*</td><td>0.001</td>" in section
    assert "set on the command line" in section


def test_report_without_overrides_has_no_marker(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    run_dir = _run(tmp_path, monkeypatch, {"a": config(depth=4), "b": config()})
    report = write_report(build_report(run_dir), tmp_path / "out")
    md = (tmp_path / "out" / "report.md").read_text()
    assert "| study.model.depth | 4 | 2 |" in md and "command line" not in md
    assert report.params is not None and not report.params.overridden


def test_one_variant_has_no_params_table(tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    run_dir = _run(tmp_path, monkeypatch, {"a": config()})
    report = write_report(build_report(run_dir), tmp_path / "out")
    assert report.params is None
    assert "## Params" not in (tmp_path / "out" / "report.md").read_text()
