"""The sign-readout row: when a preset averages drawn codes (readout "samples"), the same
model decoding its most likely code is scored beside it, so the sharpness/PSNR trade-off the
preset settled is on the page; the report shows it as an alternative, never flagged."""

from __future__ import annotations

import json
from dataclasses import replace

from branches.baseline import train as baseline_train
from orchestrator.report import build_report
from orchestrator.study import VIDEO_STUDY, ReferenceSpec
from shared import presets
from shared.latent_experiment import SIGN_READOUT_ROW
from shared.testing import write_micro_tokenizer


def test_a_samples_readout_is_scored_beside_its_sign_readout(tmp_path, monkeypatch):
    micro = presets.STUDY_PRESETS["micro"]
    monkeypatch.setitem(presets.STUDY_PRESETS, "micro", lambda: replace(
        micro(), predictor=replace(micro().predictor, readout="samples", readout_samples=2)))
    tokenizer = write_micro_tokenizer(tmp_path / "tokenizer.ckpt")
    baseline_train.main(["--preset", "micro", "--output", str(tmp_path / "run" / "baseline"),
                         "--tokenizer", str(tokenizer), "--threads", "1"])
    results = json.loads((tmp_path / "run" / "baseline" / "results.json").read_text())
    sign, model = results["metrics"][SIGN_READOUT_ROW], results["metrics"]["model"]
    assert sign["clips"] == model["clips"] and sign["psnr"] != model["psnr"]
    assert SIGN_READOUT_ROW in results["per_example"]

    study = replace(VIDEO_STUDY, references=(
        *VIDEO_STUDY.references, ReferenceSpec(SIGN_READOUT_ROW, "alternative", "sign readout")))
    report = build_report(tmp_path / "run", study)
    row = next(r for r in report.references if r.name == SIGN_READOUT_ROW)
    assert (row.label, row.role) == ("sign readout", "alternative")
    assert not any("sign readout" in flag for s in report.variants for flag in s.flags)
    assert not any("sign readout" in c.b for c in report.comparisons)  # floors only


def test_a_sign_readout_preset_has_no_second_row(tmp_path):
    tokenizer = write_micro_tokenizer(tmp_path / "tokenizer.ckpt")
    baseline_train.main(["--preset", "micro", "--output", str(tmp_path / "run"),
                         "--tokenizer", str(tokenizer), "--threads", "1"])
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert SIGN_READOUT_ROW not in results["metrics"]  # micro decodes the sign already
