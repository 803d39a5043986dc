"""A study's own metrics and reference rows (config.yaml `study:`): the report ranks, flags,
tabulates and draws from the declaration, for any study, nothing video-specific in it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestrator.config import parse_config
from orchestrator.errors import ConfigError
from orchestrator.report import build_report, write_report
from orchestrator.report.markdown import flag_lines, table_columns
from orchestrator.study import MetricSpec, ReferenceSpec, StudySpec

TEXT = StudySpec(
    metrics=(MetricSpec("perplexity", "lower", rank=True, digits=1),
             MetricSpec("accuracy", "higher", digits=3),
             MetricSpec("calibration", "target", target=1.0, digits=2)),
    references=(ReferenceSpec("unigram", "floor", "unigram model"),
                ReferenceSpec("teacher", "ceiling", "teacher")),
)


def write_run(folder: Path, scores: dict[str, tuple[float, float, float]]) -> Path:
    """A run folder without state: one job per variant, a schema-2 results.json each."""
    for variant, (perplexity, accuracy, calibration) in scores.items():
        out = folder / variant
        out.mkdir(parents=True)
        doc = {"schema": 2, "variant": variant, "preset": "small", "seed": 0,
               "status": "success",
               "metrics": {"model": {"perplexity": perplexity, "accuracy": accuracy,
                                     "calibration": calibration},
                           "unigram": {"perplexity": 40.0, "accuracy": 0.2,
                                       "calibration": 1.3},
                           "teacher": {"perplexity": 8.0, "accuracy": 0.7,
                                       "calibration": 1.0}},
               "series": {"loss_per_position": {
                   "index": "token position", "metric": "perplexity",
                   "rows": {"model": [perplexity + 2, perplexity], "unigram": [40.0, 40.0]}}}}
        (out / "results.json").write_text(json.dumps(doc))
    return folder


def test_lower_is_better_ranks_and_every_metric_is_checked_against_floors(tmp_path: Path
                                                                         ) -> None:
    run = write_run(tmp_path / "run", {"small": (20.0, 0.5, 1.1), "tiny": (45.0, 0.1, 0.9),
                                       "huge": (7.5, 0.8, 1.0)})
    report = build_report(run, TEXT)
    assert [(s.variant, s.rank) for s in report.variants] == [("huge", 1), ("small", 2),
                                                                ("tiny", 3)]
    # A floor is checked on every metric, in its direction; a ceiling is shown, not flagged
    # (huge passes the teacher).
    flags = {s.variant: s.flags for s in report.variants}
    assert flags == {"huge": (), "small": (),
                     "tiny": ("below unigram model (perplexity, accuracy)",)}
    # (its calibration, 0.9 against the floor's 1.3, is nearer the target of 1.0)
    assert flag_lines(report) == [
        "tiny trails unigram model (a floor) on perplexity 45.0 vs 40.0, accuracy 0.100 vs "
        "0.200"]
    assert table_columns(report)[3:6] == ("perplexity", "accuracy", "calibration")
    assert [(r.label, r.role) for r in report.references] == [("unigram model", "floor"),
                                                              ("teacher", "ceiling")]

    written = write_report(report, tmp_path / "out")
    md = (tmp_path / "out" / "report.md").read_text()
    assert "ranked by mean perplexity (lower is better)" in md
    assert "| 1 | **huge** | 0 | 7.5 | 0.800 | 1.00 |" in md
    page = (tmp_path / "out" / "report.html").read_text()
    assert "perplexity per token position" in page and "calibration per variant" in page
    for video_word in ("PSNR", "frame", "oracle", "copy-last", "black"):
        assert video_word not in md and video_word not in page
    assert written.html_path is not None


def test_closest_to_a_target_ranks_first(tmp_path: Path) -> None:
    run = write_run(tmp_path / "run", {"a": (20.0, 0.5, 1.4), "b": (20.0, 0.5, 0.95),
                                       "c": (20.0, 0.5, 1.1)})
    spec = StudySpec(metrics=(MetricSpec("calibration", "target", target=1.0, rank=True),))
    assert [s.variant for s in build_report(run, spec).variants] == ["b", "c", "a"]


def test_without_a_declaration_nothing_ranks_and_nothing_is_flagged(tmp_path: Path) -> None:
    run = write_run(tmp_path / "run", {"small": (20.0, 0.5, 1.1), "tiny": (45.0, 0.1, 0.9)})
    report = build_report(run)  # schema 2, no study given: what the results hold
    assert not report.study.declared and report.study.ranking is None
    assert [s.rank for s in report.variants] == [None, None]
    assert all(not s.flags for s in report.variants)
    assert [m.name for m in report.study.metrics] == ["perplexity", "accuracy", "calibration"]
    assert [r.name for r in report.references] == ["unigram", "teacher"]


STUDY_YAML = """
presets: {small: {}}
default_preset: small
gate_preset: small
study:
  metrics:
    - {name: perplexity, better: lower, rank: true, digits: 1}
    - {name: accuracy}
  references:
    - {name: unigram, role: floor, label: unigram model}
"""


def test_the_config_declares_the_study(tmp_path: Path) -> None:
    cfg = parse_config(STUDY_YAML, root=tmp_path)
    assert cfg.study is not None
    spec = cfg.study.spec()
    assert spec.ranking == MetricSpec("perplexity", "lower", rank=True, digits=1)
    assert spec.metric("accuracy").better == "higher"
    assert spec.reference("unigram").title == "unigram model"


@pytest.mark.parametrize(("change", "message"), [
    ("better: lower, rank: true", "only one may rank"),
    ("better: sideways", "better must be one of higher, lower, target"),
    ("better: target", "needs a target value"),
])
def test_a_bad_declaration_is_one_line_naming_the_study(tmp_path: Path, change: str,
                                                        message: str) -> None:
    text = STUDY_YAML.replace("{name: accuracy}", "{name: accuracy, " + change + "}")
    with pytest.raises(ConfigError, match=message) as error:
        parse_config(text, root=tmp_path)
    assert "study" in str(error.value) and "\n" not in str(error.value)
