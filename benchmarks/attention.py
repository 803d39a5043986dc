"""Time and peak memory of one LatentPredictor forward pass: our attention vs the naive one.

    python -m benchmarks.attention [--budget-gb 8] [--depth 1] [--frames 2,4,8,16] [--side 40]

Each row is one forward pass (batch 1, the ``full`` preset's width 256 and 8 heads, no grad)
over a latent grid of ``frames`` x ``side`` x ``side`` tokens, half context and half future
queries, so the default rows hold 3,200 to 25,600 tokens. "sdpa" runs the model as shipped
(``ORCH_ATTENTION=sdpa``); "naive" forces ``ORCH_ATTENTION=naive``, which materialises the
(heads, N, N) score and probability matrices.

What is measured, honestly:

- Every measurement runs in a fresh subprocess, so one run's memory cannot hide another's.
- Memory is the rise of the process's peak resident set size (``ru_maxrss``) during the
  forward: the high-water mark after the pass minus the one before it (model, inputs and a
  small warm-up pass already counted). It is what the operating system had to provide,
  allocator slack included, not a count of tensor bytes.
- Time is the wall clock of that single pass after a small warm-up pass, on ``--threads``
  threads (1 by default: the machine is shared).
- The naive kernel is not run where its two N x N float32 matrices alone would exceed
  ``--budget-gb``: the row says what it would need and is skipped, rather than swapping or
  killing the machine.
- ``--depth`` defaults to 1 layer to keep the run short on a CPU; the ``full`` preset has 12.
  Time grows about linearly with depth; the attention memory does not, because without
  gradients each layer's scores are freed before the next layer runs.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

BYTES_PER_FLOAT = 4


def naive_bytes_needed(tokens: int, heads: int) -> int:
    """Bytes of the score and probability matrices the naive kernel holds at its peak."""
    return 2 * heads * tokens * tokens * BYTES_PER_FLOAT


def peak_rss_bytes() -> int:
    # Linux reports ru_maxrss in KiB (macOS in bytes; this benchmark targets Linux boxes).
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def measure(frames: int, side: int, depth: int, threads: int) -> dict[str, float]:
    """One forward pass in this process; the kernel comes from ORCH_ATTENTION."""
    import torch

    from shared.predictor import LatentPredictor, predictor_config

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    config = predictor_config("full")
    config.depth, config.dropout = depth, 0.0
    model = LatentPredictor(config).eval()
    t_ctx = frames // 2
    context = torch.randint(0, 2, (1, config.code_dim, t_ctx, side, side)).float() * 2 - 1
    future_grid = (frames - t_ctx, side, side)
    with torch.no_grad():
        model(context[:, :, :1, :4, :4], (1, 4, 4))  # warm-up: pays one-time kernel set-up
        before = peak_rss_bytes()
        start = time.perf_counter()
        logits = model(context, future_grid)
        seconds = time.perf_counter() - start
        after = peak_rss_bytes()
    assert logits.shape[2:] == future_grid
    return {"seconds": seconds, "peak_rise_bytes": after - before, "peak_rss_bytes": after}


def run_child(kernel: str, frames: int, side: int, depth: int, threads: int) -> dict[str, float]:
    env = {**os.environ, "ORCH_ATTENTION": kernel}
    argv = [sys.executable, "-m", "benchmarks.attention", "--child", f"--frames={frames}",
            f"--side={side}", f"--depth={depth}", f"--threads={threads}"]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise SystemExit(f"{kernel} at {frames}x{side}x{side} failed: {tail}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def gib(n_bytes: float) -> str:
    return f"{n_bytes / 2**30:.2f} GiB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget-gb", type=float, default=8.0,
                        help="skip the naive kernel where its N x N matrices need more GiB")
    parser.add_argument("--depth", type=int, default=1, help="layers (the full preset has 12)")
    parser.add_argument("--frames", default="2,4,8,16",
                        help="comma-separated latent frames per row (context + future)")
    parser.add_argument("--side", type=int, default=40, help="latent height = width")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", dest="json_path", help="also write the rows to this file")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        print(json.dumps(measure(int(args.frames), args.side, args.depth, args.threads)))
        return

    from shared.predictor import predictor_config

    heads, width = predictor_config("full").heads, predictor_config("full").width
    print(f"one predictor forward, batch 1, width {width}, {heads} heads, depth {args.depth} "
          f"(full preset: 12; time ~ linear in depth), {args.threads} thread(s), no grad")
    print("memory = rise of the peak RSS during the pass (fresh subprocess per row)")
    print(f"{'tokens':>7} {'grid':>11} | {'sdpa time':>9} {'sdpa mem':>10} | "
          f"{'naive time':>10} {'naive mem':>10}")
    rows: list[dict[str, object]] = []
    for frames in (int(f) for f in args.frames.split(",")):
        if frames < 2:
            raise SystemExit("--frames values must be at least 2 (one context, one future)")
        tokens = frames * args.side**2
        grid = f"{frames}x{args.side}x{args.side}"
        sdpa = run_child("sdpa", frames, args.side, args.depth, args.threads)
        needed = naive_bytes_needed(tokens, heads)
        naive: dict[str, float]
        if needed > args.budget_gb * 2**30:
            naive = {"skipped": 1, "needed_bytes": needed}
            naive_text = f"would need {gib(needed)}, skipped"
        else:
            naive = run_child("naive", frames, args.side, args.depth, args.threads)
            naive_text = f"{naive['seconds']:>9.2f}s {gib(naive['peak_rise_bytes']):>10}"
        print(f"{tokens:>7} {grid:>11} | {sdpa['seconds']:>8.2f}s "
              f"{gib(sdpa['peak_rise_bytes']):>10} | {naive_text}", flush=True)
        rows.append({"tokens": tokens, "grid": grid, "depth": args.depth, "sdpa": sdpa,
                     "naive": naive})
    if args.json_path:
        with open(args.json_path, "w") as handle:
            json.dump(rows, handle, indent=2)


if __name__ == "__main__":
    main()
