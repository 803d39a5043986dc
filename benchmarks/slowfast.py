"""Time one SlowFast R50 (kinetics400, random weights) feature pass on the CPU.

Run from the repository root: ``python -m benchmarks.slowfast [--frames 32] [--size 224]``.
The clip goes through ``SlowFastFeatures`` (frame selection + normalisation included), so the
figure is what a frozen-feature variant pays per clip.
"""

from __future__ import annotations

import argparse
import time

import torch

from shared.motion.slowfast import SlowFastFeatures, SlowFastR50, slowfast_config


def main() -> None:
    parser = argparse.ArgumentParser(description="Time SlowFast R50 features on the CPU.")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--repeats", type=int, default=2, help="timed passes after a warm-up")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    features = SlowFastFeatures(SlowFastR50(slowfast_config("kinetics400")))
    clip = torch.rand(args.batch, 3, args.frames, args.size, args.size) * 2 - 1

    with torch.inference_mode():
        start = time.perf_counter()
        output = features(clip)  # the first pass also pays for kernel selection
        first = time.perf_counter() - start
        timings = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            features(clip)
            timings.append(time.perf_counter() - start)

    warm = min(timings) if timings else first
    print(
        f"SlowFast R50 features, input {tuple(clip.shape)}, {args.threads} thread(s): "
        f"first {first:.2f} s, warm {warm:.2f} s, output {tuple(output.shape)}"
    )


if __name__ == "__main__":
    main()
