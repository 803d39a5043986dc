"""--rehearse: one micro-step at the preset's true shapes, measured into rehearsal.json, for
every variant's train entry point (micro preset)."""

from __future__ import annotations

import json

import pytest
import torch

from branches.baseline import train as baseline_train
from branches.joint_i3d import train as joint_train
from branches.joint_i3d.model import JointI3DExperiment
from branches.slowfast_frozen import train as slowfast_train
from shared.data import TRAJECTORY_CLASSES
from shared.latent_experiment import FrozenTokenizerExperiment
from shared.motion.i3d import InceptionI3d, i3d_config
from shared.motion.pretrain import save_motion_checkpoint
from shared.motion.slowfast import SlowFastR50, slowfast_config
from shared.testing import write_micro_tokenizer

FIELDS = {"micro_batch", "batch_size", "accumulation", "device", "precision", "memory_source",
          "peak_memory_mb", "peak_allocated_mb", "flops_per_micro_batch", "step_seconds",
          "parameters"}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """A micro tokenizer and the micro motion backbones, in the layouts the entry points take."""
    folder = tmp_path_factory.mktemp("checkpoints")
    with torch.random.fork_rng():
        torch.manual_seed(0)
        i3d = save_motion_checkpoint(InceptionI3d(i3d_config("micro")).eval(),
                                     folder / "i3d", preset="micro")
        slowfast = save_motion_checkpoint(
            SlowFastR50(slowfast_config("micro", num_classes=len(TRAJECTORY_CLASSES))).eval(),
            folder / "slowfast", preset="micro")
    return {"tokenizer": write_micro_tokenizer(folder / "tokenizer.ckpt"),
            "i3d": i3d, "slowfast": slowfast}


VARIANTS = {
    "baseline": (baseline_train, FrozenTokenizerExperiment, None),
    "joint-i3d": (joint_train, JointI3DExperiment, "i3d"),
    "slowfast-frozen": (slowfast_train, FrozenTokenizerExperiment, "slowfast"),
}


def _rehearse(variant, output, checkpoints, *extra):
    module, _, motion = VARIANTS[variant]
    argv = ["--preset", "micro", "--output", str(output), "--tokenizer",
            str(checkpoints["tokenizer"]), "--threads", "1", "--rehearse", *extra]
    if motion:
        argv += ["--motion", str(checkpoints[motion])]
    return module.main(argv)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_rehearsal_runs_one_micro_step_and_writes_what_it_costs(
        tmp_path, checkpoints, monkeypatch, variant):
    _, experiment_class, _ = VARIANTS[variant]
    micro_clips: list[int] = []
    original_loss = experiment_class.loss

    def counting_loss(self, batch):
        micro_clips.append(next(v for v in batch.values() if torch.is_tensor(v)).shape[0])
        return original_loss(self, batch)

    monkeypatch.setattr(experiment_class, "loss", counting_loss)
    output = tmp_path / "run"
    results = _rehearse(variant, output, checkpoints, "--micro-batch", "2")

    # One micro-step of the micro-batch asked for, then the FLOP count's pass, clip by clip.
    assert micro_clips == [2, 1, 1]
    rehearsal = json.loads((output / "rehearsal.json").read_text())
    assert set(rehearsal) == FIELDS
    assert (rehearsal["micro_batch"], rehearsal["batch_size"], rehearsal["accumulation"]) == \
        (2, 8, 4)  # the accumulation the real run would do, recorded, not executed
    assert (rehearsal["device"], rehearsal["precision"]) == ("cpu", "fp32")
    assert rehearsal["memory_source"] == "process_peak_rss"
    assert rehearsal["peak_memory_mb"] > 0 and rehearsal["peak_allocated_mb"] is None
    assert rehearsal["flops_per_micro_batch"] > 0 and rehearsal["step_seconds"] > 0
    assert rehearsal["parameters"] == results["parameters"]

    # Everything a run writes, cut short: one epoch, 2 training clips, 1 held-out clip.
    on_disk = json.loads((output / "results.json").read_text())
    assert on_disk["status"] == "success" and on_disk["config"]["rehearsal"] is True
    train = on_disk["config"]["train"]
    assert (train["epochs"], train["train_clips"], train["eval_clips"]) == (1, 2, 1)
    assert (train["micro_batch"], train["accumulation"]) == (2, 4)
    assert len(on_disk["history"]) == 1 and (output / "checkpoints" / "last.pt").is_file()
    events = [json.loads(line) for line in (output / "events.jsonl").read_text().splitlines()]
    start = events[0]
    assert (start["rehearsal"], start["total_steps"], start["micro_batch"]) == (True, 1, 2)
    assert events[-1]["event"] == "end"
    if variant == "joint-i3d":
        assert on_disk["config"]["probe_clips"] == 1


def test_rehearsal_flops_are_per_micro_batch(tmp_path, checkpoints):
    """Without --micro-batch the micro-batch is the whole batch, and a step's FLOPs grow with
    its clips: every operation of the baseline's predictor works per clip."""
    _rehearse("baseline", tmp_path / "whole", checkpoints)
    _rehearse("baseline", tmp_path / "two", checkpoints, "--micro-batch", "2")
    whole, two = (json.loads((tmp_path / name / "rehearsal.json").read_text())
                  for name in ("whole", "two"))
    assert (whole["micro_batch"], whole["accumulation"]) == (8, 1)
    assert whole["flops_per_micro_batch"] == 4 * two["flops_per_micro_batch"]


def test_a_rehearsal_starts_fresh_even_with_resume(tmp_path, checkpoints, capsys):
    output = tmp_path / "run"
    baseline_train.main(["--preset", "micro", "--output", str(output), "--tokenizer",
                         str(checkpoints["tokenizer"]), "--threads", "1"])
    _rehearse("baseline", output, checkpoints, "--resume")
    assert "--resume ignored" in capsys.readouterr().err
    starts = [json.loads(line) for line in (output / "events.jsonl").read_text().splitlines()
              if '"start"' in line]
    assert starts[-1]["resumed_from_epoch"] == 0
    assert json.loads((output / "rehearsal.json").read_text())["step_seconds"] > 0


def test_optimizer_state_allocated_up_front_gives_the_same_steps():
    """A rehearsal allocates AdamW's moments before its one step, so that step's backward holds
    them; the updates are those of the lazily allocated state."""
    from shared.training import _Optimizer

    torch.manual_seed(0)
    models = [torch.nn.Linear(4, 3) for _ in range(2)]
    models[1].load_state_dict(models[0].state_dict())
    optimizers = [torch.optim.AdamW(m.parameters(), lr=0.1, betas=(0.9, 0.95)) for m in models]
    _Optimizer.allocate_moments(optimizers[1])
    assert all(optimizers[1].state[p]["exp_avg"].shape == p.shape for p in models[1].parameters())
    x = torch.randn(5, 4)
    for _ in range(3):
        for model, optimizer in zip(models, optimizers, strict=True):
            model(x).square().mean().backward()
            optimizer.step()
            optimizer.zero_grad()
    for a, b in zip(models[0].parameters(), models[1].parameters(), strict=True):
        assert torch.equal(a, b)
