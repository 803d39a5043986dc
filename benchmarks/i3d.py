"""Wall-clock time of one I3D forward pass, clip -> 1024-d motion features, on the CPU.

    python -m benchmarks.i3d [--batch 1] [--frames 16] [--size 224] [--threads 1] [--repeats 1]

Runs ``I3DFeatures`` on the ``imagenet`` preset (full width, random weights: speed does not
depend on the values) under ``torch.inference_mode``, as the frozen backbone runs when
features are cached. The clip is already 16 frames x 224 px, so frame selection and resizing
are no-ops and the time is the network's. One untimed warm-up pass of the same size runs
first (oneDNN builds its kernels on the first call); each timed pass is reported, then the
median. ``--threads`` defaults to 1 because the machine is shared.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from shared.motion.i3d import I3DFeatures, InceptionI3d, i3d_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--time-resolved", action="store_true", help="(B, T'', 1024) tokens")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    features = I3DFeatures(InceptionI3d(i3d_config("imagenet")), time_resolved=args.time_resolved)
    video = torch.rand(args.batch, 3, args.frames, args.size, args.size) * 2 - 1

    with torch.inference_mode():
        features(video)  # warm-up
        seconds = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            out = features(video)
            seconds.append(time.perf_counter() - start)

    clip = f"{args.batch}x3x{args.frames}x{args.size}x{args.size}"
    runs = ", ".join(f"{s:.2f}" for s in seconds)
    print(
        f"I3D features, clip {clip}, {args.threads} thread(s): "
        f"{statistics.median(seconds):.2f} s per forward (runs: {runs}); "
        f"features {tuple(out.shape)}"
    )


if __name__ == "__main__":
    main()
