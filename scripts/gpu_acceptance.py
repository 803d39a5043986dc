"""GPU acceptance check: the rehearsal of a preset on this machine's device, measured.

    python -m scripts.gpu_acceptance [--preset full|micro] [--output DIR] [--peak-tflops X]

On a CUDA GPU it rehearses ``full`` (default): each variant's train entry point with
``--rehearse --device cuda``, one after another, so each job's memory is its own: one
optimizer step at micro-batch 1 and one at 2, in bf16 where the GPU has it (the preset trains
under autocast). The baseline, whose step is the predictor's attention, is rehearsed once
more with ``ORCH_ATTENTION=flash_attn`` when flash-attn is installed. The table gives per
job the memory the CUDA allocator reserved and the tensors held (``max_memory_reserved`` /
``max_memory_allocated`` of each step alone), the step time and the FLOP/s of the 2-clip
step (torch's FLOP formulas: matmuls, convolutions, attention) against the GPU's bf16 dense
peak.

Inputs: the official checkpoints where the README's download steps put them (the tokenizer
in the hub cache, ``checkpoints/rgb_imagenet.pt`` and ``checkpoints/SLOWFAST_8x8_R50.pyth``),
else random weights in their official layouts (``shared.rehearsal_assets``); nothing is
downloaded. Without a GPU it runs the ``micro`` rehearsal on the CPU (``--preset full`` runs
the full shapes there too: about 20 minutes on 2 cores) and lists what it skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
VARIANTS = {  # variant -> (train module, input it takes as --motion)
    "baseline": ("branches.baseline.train", None),
    "joint-i3d": ("branches.joint_i3d.train", "i3d"),
    "slowfast-frozen": ("branches.slowfast_frozen.train", "slowfast"),
}
OFFICIAL_MOTION = {"i3d": REPO / "checkpoints" / "rgb_imagenet.pt",
                   "slowfast": REPO / "checkpoints" / "SLOWFAST_8x8_R50.pyth"}
# Dense bf16 tensor-core peaks (TFLOP/s, no sparsity) of common training GPUs, by the name
# torch reports; longest match first. Anything else: --peak-tflops.
BF16_PEAK_TFLOPS = {
    "H100 PCIe": 756.0, "H100": 989.0, "H200": 989.0, "GH200": 989.0, "A100": 312.0,
    "L40S": 362.0, "L4": 121.0, "A10G": 70.0, "RTX 4090": 165.0, "RTX 3090": 71.0,
}


@dataclass
class Row:
    variant: str
    attention: str
    precision: str
    reserved_mb: list[float]  # per measured micro-batch (1, 2); on the CPU the peak RSS
    allocated_mb: list[float | None]
    step_seconds: list[float]
    tflops: float | None  # of the 2-clip step: its FLOPs over its time
    peak_share: float | None  # tflops over the GPU's peak


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.gpu_acceptance",
                                     description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--preset", choices=("micro", "tiny", "full"),
                        help="default: full on a CUDA GPU, micro on the CPU")
    parser.add_argument("--output", type=Path, help="keep the jobs' folders here "
                        "(default: a temporary folder, removed at the end)")
    parser.add_argument("--peak-tflops", type=float,
                        help="the GPU's bf16 dense peak, where its name is not in the table")
    args = parser.parse_args(argv)

    import torch

    from shared.attention import flash_attn_available

    cuda = torch.cuda.is_available()
    preset = args.preset or ("full" if cuda else "micro")
    skipped: list[str] = []
    gpu_name = torch.cuda.get_device_name(0) if cuda else None
    peak = args.peak_tflops or (_known_peak(gpu_name) if gpu_name else None)
    print(f"torch {torch.__version__}, device: {gpu_name or 'CPU (no CUDA GPU visible)'}"
          + (f", bf16 {'yes' if torch.cuda.is_bf16_supported() else 'no'}" if cuda else "")
          + (f", bf16 peak {peak:.0f} TFLOP/s" if peak else ""), flush=True)
    if not cuda:
        skipped.append("CUDA: no GPU visible; measured on the CPU (peak RSS, no allocator "
                       "figures, no FLOP/s share)")
        if preset != "full":
            skipped.append(f"the full shapes: rehearsed {preset} (--preset full: ~20 min on "
                           "2 cores)")
    elif peak is None:
        skipped.append(f"FLOP/s share: {gpu_name!r} is not in the peak table (--peak-tflops)")
    attention = ["sdpa"]
    if not cuda:
        skipped.append("flash-attn against SDPA: flash-attn runs on CUDA only")
    elif not flash_attn_available():
        skipped.append("flash-attn against SDPA: flash-attn is not installed "
                       "(pip install flash-attn --no-build-isolation)")
    else:
        attention.append("flash_attn")

    with tempfile.TemporaryDirectory(prefix="gpu-acceptance-") as scratch:
        folder = args.output or Path(scratch)
        folder.mkdir(parents=True, exist_ok=True)
        tokenizer, motion, env = _inputs(preset, folder, skipped)
        rows = []
        for variant, (module, motion_name) in VARIANTS.items():
            for kernel in attention if variant == "baseline" else ["sdpa"]:
                rows.append(_rehearse(variant, module, kernel, preset=preset,
                                      device="cuda" if cuda else "cpu",
                                      output=folder / f"{variant}-{kernel}",
                                      tokenizer=tokenizer,
                                      motion=motion.get(motion_name) if motion_name else None,
                                      env=env, peak_tflops=peak))
        _print_table(rows, preset, "CUDA allocator" if cuda else "process peak RSS")
        if skipped:
            print("skipped:")
            for reason in skipped:
                print(f"  - {reason}")
        (folder / "acceptance.json").write_text(json.dumps(
            {"preset": preset, "device": gpu_name or "cpu", "peak_tflops": peak,
             "rows": [asdict(r) for r in rows], "skipped": skipped}, indent=2))
        if args.output:
            print(f"figures: {folder / 'acceptance.json'}")
    return 0


def _known_peak(name: str) -> float | None:
    for key in sorted(BF16_PEAK_TFLOPS, key=len, reverse=True):
        if key in name:
            return BF16_PEAK_TFLOPS[key]
    return None


def _inputs(preset: str, folder: Path, skipped: list[str]
            ) -> tuple[str, dict[str, str], dict[str, str]]:
    """(tokenizer source, motion files by name, environment): the official files where the
    README's download steps put them, stand-ins of random weights in their layouts else."""
    from shared.presets import OFFICIAL_TOKENIZER
    from shared.rehearsal_assets import write_assets
    from shared.testing import write_micro_tokenizer

    started = time.perf_counter()
    assets = write_assets(preset, folder / "stand-ins")
    print(f"stand-ins written in {time.perf_counter() - started:.0f}s", flush=True)
    motion = {name: str(path) for name, path in assets["inputs"].items()}
    env = dict(assets["env"])
    if preset == "full":
        if _official_tokenizer_cached(OFFICIAL_TOKENIZER):
            env = {}  # the user's own hub cache holds the official file
            print("tokenizer: the official checkpoint from your hub cache", flush=True)
        else:
            skipped.append("the official tokenizer (not in your hub cache): random weights "
                           "in its layout")
        for name, path in OFFICIAL_MOTION.items():
            if path.is_file():
                motion[name] = str(path)
                print(f"{name}: {path}", flush=True)
            else:
                skipped.append(f"the official {name} file ({path.relative_to(REPO)} is "
                               "missing): random weights in its layout")
        return OFFICIAL_TOKENIZER, motion, env
    # micro and tiny train their own tokenizer in a run; a random one in the official layout
    # has the same shapes.
    return str(write_micro_tokenizer(folder / "stand-ins" / "tokenizer.ckpt")), motion, env


def _official_tokenizer_cached(source: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    repo_owner, repo_name, filename = source.removeprefix("hf://").split("/", 2)
    found = try_to_load_from_cache(f"{repo_owner}/{repo_name}", filename)
    return isinstance(found, str)


def _rehearse(variant: str, module: str, attention: str, *, preset: str, device: str,
              output: Path, tokenizer: str, motion: str | None, env: dict[str, str],
              peak_tflops: float | None) -> Row:
    argv = [sys.executable, "-m", module, "--preset", preset, "--output", str(output),
            "--rehearse", "--device", device, "--tokenizer", tokenizer]
    if motion:
        argv += ["--motion", motion]
    print(f"{variant} ({attention}): rehearsing ...", flush=True)
    started = time.perf_counter()
    done = subprocess.run(argv, cwd=REPO, env={**os.environ, **env, "HF_HUB_OFFLINE": "1",
                                               "ORCH_ATTENTION": attention},
                          capture_output=True, text=True)
    (output / "acceptance.log").write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise SystemExit(f"{variant} ({attention}) failed with exit code {done.returncode}: "
                         f"{tail[0]} (log: {output / 'acceptance.log'})")
    print(f"{variant} ({attention}): {time.perf_counter() - started:.0f}s", flush=True)
    return _row(variant, attention, json.loads((output / "rehearsal.json").read_text()),
                peak_tflops)


def _row(variant: str, attention: str, rehearsal: dict[str, Any],
         peak_tflops: float | None) -> Row:
    points = rehearsal["points"]
    last = points[-1]  # the 2-clip step: the first one carries the warm-up
    tflops = (last["flops"] / last["step_seconds"] / 1e12
              if last.get("flops") and last["step_seconds"] > 0 else None)
    return Row(variant=variant, attention=attention, precision=rehearsal["precision"],
               reserved_mb=[p["peak_memory_mb"] for p in points],
               allocated_mb=[p["peak_allocated_mb"] for p in points],
               step_seconds=[p["step_seconds"] for p in points], tflops=tflops,
               peak_share=tflops / peak_tflops if tflops and peak_tflops else None)


def _print_table(rows: list[Row], preset: str, memory: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{preset} rehearsal, micro-batch 1 / 2 ({memory})", show_edge=False)
    for column in ("job", "attention", "precision", "reserved GB", "allocated GB",
                   "step s", "TFLOP/s", "of peak"):
        table.add_column(column)
    for r in rows:
        table.add_row(
            r.variant, r.attention, r.precision, _pair(r.reserved_mb, 1 / 1024),
            _pair(r.allocated_mb, 1 / 1024), _pair(r.step_seconds, 1.0),
            f"{r.tflops:.3g}" if r.tflops is not None else "-",
            f"{r.peak_share:.0%}" if r.peak_share is not None else "-")
    Console(width=max(Console().width, 110)).print(table)  # a log is 80 columns: too few


def _pair(values: list[float] | list[float | None], scale: float) -> str:
    return " / ".join("-" if v is None else f"{v * scale:.2f}" for v in values)


if __name__ == "__main__":
    sys.exit(main())
