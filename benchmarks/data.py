"""Frames per second of the trajectory-video renderer on one core.

    python -m benchmarks.data [--clips 50]

Prints, per preset, render_clip's rate (uint8 frames) and the dataset's rate (model-ready
float tensors), as wall-clock and CPU time: on a shared machine the CPU-time rate is the
steadier number.
"""

from __future__ import annotations

import os

# one core: pin the math libraries before numpy and torch start their thread pools
for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")

import argparse  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402

import torch  # noqa: E402

from shared.data import TrajectoryVideos, render_clip, trajectory_config  # noqa: E402


def _rate(work: Callable[[int], object], clips: int, frames: int) -> tuple[float, float]:
    work(0)  # warm-up: first-call costs are not the steady state
    wall, cpu = time.perf_counter(), time.process_time()
    for index in range(clips):
        work(index)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return clips * frames / wall, clips * frames / cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=50, help="clips per measurement")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"{'preset':<8}{'size':>10}{'what':>14}{'wall fps':>11}{'cpu fps':>10}")
    for preset in ("tiny", "full"):
        config = trajectory_config(preset)
        size = f"{config.resolution}x{config.resolution}x{config.frames}"
        dataset = TrajectoryVideos(config, split="train", size=args.clips)
        rows = {
            "render_clip": lambda i, c=config: render_clip(c, split="train", index=i),
            "dataset item": lambda i, d=dataset: d[i],
        }
        for what, work in rows.items():
            wall, cpu = _rate(work, args.clips, config.frames)
            print(f"{preset:<8}{size:>10}{what:>14}{wall:>11.0f}{cpu:>10.0f}")


if __name__ == "__main__":
    main()
