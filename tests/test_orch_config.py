"""config.yaml: typed, validated; every mistake is one line naming the key and its line."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

import orchestrator
from orchestrator.cli.main import app
from orchestrator.config import load_config, parse_config
from orchestrator.errors import ConfigError
from tests.orch_fixtures import *  # noqa: F403
from tests.orch_fixtures import CONFIG

runner = CliRunner()
PROJECT_CONFIG = Path(orchestrator.__file__).resolve().parents[1] / "config.yaml"


def test_project_config_declares_the_study(tmp_path: Path) -> None:
    for folder in ("branches/baseline", "branches/joint_i3d", "branches/slowfast_frozen"):
        (tmp_path / folder).mkdir(parents=True)
    cfg = parse_config(PROJECT_CONFIG.read_text(), root=tmp_path)
    assert cfg.default_preset == "tiny" and set(cfg.presets) == {"micro", "tiny", "full"}
    by_name = {v.name: v for v in cfg.variants}
    assert by_name["baseline"].branch == "future-pred-baseline"
    assert by_name["baseline"].module == "branches.baseline.train"
    assert by_name["baseline"].gate_path == "branches/baseline/tests"
    assert by_name["joint-i3d"].branch == "future-pred-joint-i3d"
    assert by_name["slowfast-frozen"].folder == "branches/slowfast_frozen"
    tok = cfg.shared_jobs[0]
    assert tok.module == "shared.magvit.pretrain" and set(tok.presets) == {"micro", "tiny"}
    assert tok.pass_as == "--tokenizer" and tok.artifact == "tokenizer.ckpt"


def test_disabled_variant_may_lack_its_folder(tmp_path: Path) -> None:
    for folder in ("branches/baseline", "branches/slowfast_frozen"):
        (tmp_path / folder).mkdir(parents=True)
    text = PROJECT_CONFIG.read_text().replace(
        "    train_module: branches.joint_i3d.train\n",
        "    train_module: branches.joint_i3d.train\n    enabled: false\n",
    )
    cfg = parse_config(text, root=tmp_path)
    assert [v.name for v in cfg.enabled_variants()] == ["baseline", "slowfast-frozen"]
    assert "joint_i3d does not exist" in bad(text.replace("    enabled: false\n", ""), tmp_path)


def bad(text: str, root: Path) -> str:
    with pytest.raises(ConfigError) as e:
        parse_config(text, root=root)
    message = str(e.value)
    assert "\n" not in message
    return message


@pytest.fixture
def study(tmp_path: Path) -> Path:
    for pkg in ("alpha", "beta"):
        (tmp_path / "branches" / pkg).mkdir(parents=True)
    return tmp_path


def line_of(text: str, needle: str) -> int:
    return next(i for i, ln in enumerate(text.splitlines(), 1) if needle in ln)


def test_unknown_key_names_key_and_line(study: Path) -> None:
    text = CONFIG.replace("    branch: exp-beta", "    branch: exp-beta\n    brnach: typo")
    msg = bad(text, study)
    assert msg.startswith(f"config.yaml:{line_of(text, 'brnach')}: variants[1].brnach: unknown key")


def test_wrong_type_names_key_and_line(study: Path) -> None:
    text = CONFIG.replace("cpu_threads: 1}", "cpu_threads: lots}", 1)
    msg = bad(text, study)
    assert msg == (f"config.yaml:{line_of(text, 'lots')}: variants[0].resources.cpu_threads: "
                   "expected an integer, got a string")


def test_missing_folder_duplicate_branch_duplicate_name(study: Path) -> None:
    text = CONFIG.replace("folder: branches/beta", "folder: branches/gamma")
    assert "variants[1].folder: branches/gamma does not exist" in bad(text, study)
    text = CONFIG.replace("branch: exp-beta", "branch: exp-alpha")
    second = [i for i, ln in enumerate(text.splitlines(), 1) if "exp-alpha" in ln][1]
    assert bad(text, study) == (f"config.yaml:{second}: variants[1].branch: duplicate branch "
                                "'exp-alpha' (also 'alpha')")
    text = CONFIG.replace("name: beta", "name: alpha")
    assert "duplicate variant name 'alpha'" in bad(text, study)


def test_other_mistakes(study: Path) -> None:
    assert "default_preset: 'huge' is not in presets" in bad(
        CONFIG.replace("default_preset: tiny", "default_preset: huge"), study)
    assert "duplicate key" in bad(CONFIG + "base_ref: dev\n", study)
    assert "invalid YAML" in bad("variants: [\n", study)
    assert "expected a list" in bad(CONFIG.replace("presets: [tiny]", "presets: tiny"), study)


def test_cli_reports_config_error_in_one_line_with_exit_2(git_repo: Path) -> None:
    (git_repo / "config.yaml").write_text(CONFIG.replace("grace_seconds: 3", "grace_secs: 3"))
    result = runner.invoke(app, ["status"])
    assert result.exit_code == 2
    assert result.stderr.strip().count("\n") == 0
    assert "config.yaml:4: grace_secs: unknown key" in result.stderr
    assert "Traceback" not in result.output
    with pytest.raises(ConfigError):
        load_config(git_repo)


def test_shared_job_serves_only_the_variants_it_names(tmp_path: Path) -> None:
    for folder in ("branches/baseline", "branches/joint_i3d", "branches/slowfast_frozen"):
        (tmp_path / folder).mkdir(parents=True)
    motion = {job.name: job for job in parse_config(PROJECT_CONFIG.read_text(),
                                                    root=tmp_path).shared_jobs}
    assert motion["i3d"].serves("joint-i3d") and not motion["i3d"].serves("baseline")
    assert motion["slowfast"].variants == ["slowfast-frozen"] and motion["tokenizer"].serves("x")
    text = PROJECT_CONFIG.read_text().replace(
        "    pass_as: --tokenizer\n", "    pass_as: --tokenizer\n    variants: [baseline]\n", 1
    )
    job = parse_config(text, root=tmp_path).shared_jobs[0]
    assert job.serves("baseline") and not job.serves("joint-i3d")
    message = bad(text.replace("variants: [baseline]", "variants: [nope]"), tmp_path)
    assert "shared_jobs[0].variants[0]" in message and "unknown variant 'nope'" in message
