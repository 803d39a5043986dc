"""--rehearse: one step at each of two micro-batch sizes at the preset's true shapes, each
measured into rehearsal.json, for every variant's train entry point (micro preset)."""

from __future__ import annotations

import json
import sys

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from branches.baseline import train as baseline_train
from branches.joint_i3d import train as joint_train
from branches.joint_i3d.model import JointI3DExperiment
from branches.slowfast_frozen import train as slowfast_train
from shared import runtime
from shared.data import TRAJECTORY_CLASSES
from shared.latent_experiment import FrozenTokenizerExperiment
from shared.motion.i3d import InceptionI3d, i3d_config
from shared.motion.pretrain import save_motion_checkpoint
from shared.motion.slowfast import SlowFastR50, slowfast_config
from shared.rehearsal import FlopCount, RehearsalMeter
from shared.testing import write_micro_tokenizer
from shared.training import TrainConfig

FIELDS = {"batch_size", "micro_batch", "accumulation", "device", "precision", "memory_source",
          "points", "phases", "peak_memory_mb", "parameters", "run", "evaluation"}
POINT_FIELDS = {"micro_batch", "peak_memory_mb", "peak_allocated_mb", "step_seconds", "flops"}


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
def test_rehearsal_steps_at_one_and_two_clips_and_writes_what_each_costs(
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

    # One step of one clip, one of two clips, each a single micro-batch; no other pass.
    assert micro_clips == [1, 2]
    rehearsal = json.loads((output / "rehearsal.json").read_text())
    assert set(rehearsal) == FIELDS
    assert (rehearsal["micro_batch"], rehearsal["batch_size"], rehearsal["accumulation"]) == \
        (2, 8, 4)  # the accumulation the real run would do, recorded, not executed
    assert rehearsal["device"] == "cpu" and rehearsal["memory_source"] == "process_peak_rss"
    # The micro preset trains under autocast on CUDA: its CPU rehearsal steps in bf16.
    assert rehearsal["precision"] == runtime.rehearsal_precision("cpu").name
    points = rehearsal["points"]
    assert [p["micro_batch"] for p in points] == [1, 2]
    for point in points:
        assert set(point) == POINT_FIELDS
        assert point["peak_memory_mb"] > 0 and point["peak_allocated_mb"] is None
        assert point["flops"] > 0 and point["step_seconds"] > 0
    assert set(rehearsal["phases"]) == {"setup", "evaluation"}
    peaks = [p["peak_memory_mb"] for p in points]
    peaks += [phase["peak_memory_mb"] for phase in rehearsal["phases"].values()]
    assert rehearsal["peak_memory_mb"] == max(peaks)
    assert rehearsal["parameters"] == results["parameters"]
    # The run it stands for: micro's 2 epochs of 32 clips in batches of 8, each evaluated on
    # 8 held-out clips.
    assert rehearsal["run"] == {"epochs": 2, "steps_per_epoch": 4, "eval_clips": 8,
                                "evaluations": 2}
    # What its evaluations cost here, on the rehearsal's one held-out clip, in micro's fp32.
    evaluation = rehearsal["evaluation"]
    assert (evaluation["precision"], evaluation["every_epochs"], evaluation["clips"]) == \
        ("fp32", 1, 1)
    for name in ("epoch", "final"):
        assert evaluation[name]["flops"] > 0 and evaluation[name]["seconds"] > 0

    # Everything a run writes, cut short: one epoch, 2 training clips, 1 held-out clip.
    on_disk = json.loads((output / "results.json").read_text())
    assert on_disk["status"] == "success" and on_disk["config"]["rehearsal"] is True
    train = on_disk["config"]["train"]
    assert (train["epochs"], train["train_clips"], train["eval_clips"]) == (1, 2, 1)
    assert (train["micro_batch"], train["accumulation"]) == (2, 4)
    assert len(on_disk["history"]) == 1 and (output / "checkpoints" / "last.pt").is_file()
    events = [json.loads(line) for line in (output / "events.jsonl").read_text().splitlines()]
    start = events[0]
    assert (start["rehearsal"], start["total_steps"], start["micro_batch"]) == (True, 2, 2)
    assert [e["step"] for e in events if e["event"] == "progress"][-1] == 2
    assert events[-1]["event"] == "end"
    if variant == "joint-i3d":
        assert on_disk["config"]["probe_clips"] == 1


def test_rehearsal_flops_grow_with_the_clips_of_a_step(tmp_path, checkpoints):
    """Every operation of the baseline's predictor works per clip: two clips, twice the FLOPs."""
    _rehearse("baseline", tmp_path / "run", checkpoints)
    one, two = json.loads((tmp_path / "run" / "rehearsal.json").read_text())["points"]
    assert two["flops"] == 2 * one["flops"]


def test_rehearsal_micro_batches_are_the_two_smallest_divisors():
    def sizes(batch: int) -> list[int]:
        return TrainConfig(epochs=1, batch_size=batch, lr=1e-3, train_clips=batch,
                           eval_clips=1).rehearsal_micro_batches

    assert (sizes(16), sizes(9), sizes(1)) == ([1, 2], [1, 3], [1])


def test_flop_count_counts_what_flop_counter_mode_counts():
    """The rehearsal's own counter (no module tracking, so it holds no tensor) uses torch's
    formulas: same total, forward and backward, convolutions and matmuls."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv3d(3, 8, 3, padding=1), torch.nn.GELU(),
                                torch.nn.Flatten(), torch.nn.Linear(8 * 4 * 8 * 8, 5))
    x = torch.randn(2, 3, 4, 8, 8)
    totals = []
    for counter in (FlopCount(), FlopCounterMode(display=False)):
        with counter:
            model(x).square().sum().backward()
        totals.append(counter.total if isinstance(counter, FlopCount)
                      else counter.get_total_flops())
    assert totals[0] == totals[1] > 0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="peak reset needs Linux")
def test_each_measured_step_has_its_own_peak():
    """A big allocation in the first measured step does not show in the second's peak."""
    meter = RehearsalMeter(torch.device("cpu"))
    with meter.measure(1):
        big = torch.ones(512 * 2**20 // 4)  # 512 MiB, touched
        del big
    with meter.measure(2):
        small = torch.ones(16 * 2**20 // 4)
        del small
    first, second = meter.points
    assert first.peak_memory_mb - second.peak_memory_mb > 400
    assert set(meter.phases) == {"setup"}


def test_a_rehearsal_starts_fresh_even_with_resume(tmp_path, checkpoints, capsys):
    output = tmp_path / "run"
    baseline_train.main(["--preset", "micro", "--output", str(output), "--tokenizer",
                         str(checkpoints["tokenizer"]), "--threads", "1"])
    _rehearse("baseline", output, checkpoints, "--resume")
    assert "--resume ignored" in capsys.readouterr().err
    starts = [json.loads(line) for line in (output / "events.jsonl").read_text().splitlines()
              if '"start"' in line]
    assert starts[-1]["resumed_from_epoch"] == 0
    assert len(json.loads((output / "rehearsal.json").read_text())["points"]) == 2


def test_optimizer_state_allocated_up_front_gives_the_same_steps():
    """A rehearsal allocates AdamW's moments before its first step, so that step's backward
    holds them; the updates are those of the lazily allocated state."""
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
