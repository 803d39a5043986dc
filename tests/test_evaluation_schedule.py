"""How often a run evaluates, and in what precision: ``TrainConfig.eval_every`` and
``eval_precision``, the frozen encodes that follow the evaluation's precision, and the cache
fill's clips rendered in the loader's workers."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from branches.baseline import train as baseline_train
from orchestrator.formats import load_results
from shared import presets, runtime
from shared.errors import ConfigError
from shared.latent_cache import ClipCache
from shared.testing import write_micro_tokenizer
from shared.training import TrainConfig


@pytest.fixture(scope="module")
def tokenizer_path(tmp_path_factory):
    return write_micro_tokenizer(tmp_path_factory.mktemp("tok") / "tokenizer.ckpt")


def _config(**changes) -> TrainConfig:
    return replace(TrainConfig(epochs=7, batch_size=4, lr=1e-3, train_clips=8, eval_clips=2),
                   **changes)


def test_a_run_evaluates_every_nth_epoch_and_always_after_the_last():
    config = _config(eval_every=3)
    assert [e for e in range(1, 8) if config.evaluates_after(e)] == [3, 6, 7]
    assert config.evaluations == 3 and _config().evaluations == 7
    # A rehearsal (one epoch, one held-out clip) keeps the run's shape for the plan.
    cut = config.rehearsal()
    assert (cut.epochs, cut.evaluations, cut.eval_clips) == (1, 1, 1)
    assert (cut.run_evaluations, cut.run_eval_clips) == (3, 2)


@pytest.mark.parametrize("changes", [{"eval_every": 0}, {"eval_precision": "fp8"}])
def test_a_bad_evaluation_setting_is_a_config_error(changes):
    with pytest.raises(ConfigError, match="eval_"):
        _config(**changes)


def test_the_full_preset_states_its_evaluation():
    train = presets.study_preset("full").train
    assert (train.eval_every, train.eval_precision, train.evaluations) == (5, "amp", 10)


def test_fp32_passes_stay_fp32_inside_a_training_autocast():
    fp32, bf16 = runtime.FP32, runtime.Precision("cpu", torch.bfloat16, False)
    a, b = torch.randn(4, 4), torch.randn(4, 4)
    with bf16.autocast():
        assert (a @ b).dtype == torch.bfloat16
        with fp32.autocast():
            assert (a @ b).dtype == torch.float32


def test_keyed_cache_keeps_entries_of_another_precision_apart(tmp_path):
    plain = ClipCache(tmp_path, kind="latents", key={"tokenizer": "a"})
    bf16 = plain.keyed(precision="bf16")
    assert bf16.key == plain.key | {"precision": "bf16"} and bf16.directory != plain.directory
    assert plain.keyed(precision="bf16").directory == bf16.directory


def _micro_with(monkeypatch, **train_changes):
    micro = presets.STUDY_PRESETS["micro"]
    monkeypatch.setitem(presets.STUDY_PRESETS, "micro",
                        lambda: replace(micro(), train=replace(micro().train, **train_changes)))


def test_a_run_scores_only_the_epochs_it_evaluates(tmp_path, tokenizer_path, monkeypatch):
    """micro for 3 epochs, evaluated every 2nd: after epochs 2 and 3, not 1 (on the
    validation split); history keeps every epoch's training figures, and results.json reads
    back."""
    _micro_with(monkeypatch, epochs=3, eval_every=2)
    output = tmp_path / "run"
    baseline_train.main(["--preset", "micro", "--output", str(output), "--tokenizer",
                         str(tokenizer_path), "--threads", "1"])
    events = [json.loads(line) for line in (output / "events.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in events if e["event"] == "eval"] == [2, 3]
    assert [e["epoch"] for e in events if e["event"] == "checkpoint"] == [1, 2, 3]
    results = load_results(output / "results.json")
    assert [h.epoch for h in results.history] == [1, 2, 3]
    assert results.history[0].eval is None and results.history[1].eval is not None
    # The epochs are scored on the validation clips, the final row on the held-out ones.
    assert results.metrics["model"]["psnr"] != results.history[2].eval["psnr"]
    assert results.config["eval_dtype"] == "fp32"


@pytest.mark.skipif(not runtime.rehearsal_precision("cpu").dtype,
                    reason="this CPU has no native bf16: a CPU rehearsal stays fp32")
def test_an_amp_evaluation_rehearses_in_bf16_and_caches_its_codes_apart(
        tmp_path, tokenizer_path, monkeypatch):
    """eval_precision "amp": a CPU rehearsal (bf16 steps) evaluates and fills the latent
    cache in bf16 too, keyed apart from the fp32 entries; its cache fill renders the clips
    in 2 loader workers."""
    monkeypatch.setenv("ORCH_CACHE_DIR", str(tmp_path / "cache"))
    _micro_with(monkeypatch, eval_precision="amp", loader_workers=2)
    output = tmp_path / "run"
    baseline_train.main(["--preset", "micro", "--output", str(output), "--tokenizer",
                         str(tokenizer_path), "--threads", "1", "--rehearse"])
    rehearsal = json.loads((output / "rehearsal.json").read_text())
    assert rehearsal["evaluation"]["precision"] == "bf16"
    results = json.loads((output / "results.json").read_text())
    assert results["config"]["eval_dtype"] == "bf16"
    events = [json.loads(line) for line in (output / "events.jsonl").read_text().splitlines()]
    cache = next(e for e in events if e["event"] == "cache")
    assert cache["misses"] == 2
    key = json.loads((tmp_path / "cache" / "latents" / cache["path"].rsplit("/", 1)[-1]
                      / "key.json").read_text())
    assert key["precision"] == "bf16"
