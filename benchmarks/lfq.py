"""LFQ vs a distance-matrix VQ over the same 2^18-code codebook: time per vector and peak memory.

    python benchmarks/lfq.py [--vectors 1000000] [--sample 4096] [--dim 18] [--threads 1]

LFQ quantizes all the vectors at once (sign + index, then the training-mode entropy and
commitment terms). The VQ baseline materialises the (512, 2^18) distance matrix per batch of
512 vectors, as a codebook lookup must, so it is timed on a sample only and reported per
vector. Each measurement runs in its own process, so its peak memory (max RSS above the
process's baseline with the inputs in place) is its own.
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from shared.magvit.lfq import LFQ, codes_to_indices, indices_to_codes  # noqa: E402

BATCH = 512


def _max_rss_mb() -> float:
    scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


def _inputs(vectors: int, dim: int) -> torch.Tensor:
    return torch.randn(vectors, dim, generator=torch.Generator().manual_seed(0))


def _lfq_quantize(z: torch.Tensor) -> torch.Tensor:
    return LFQ(dim=z.shape[1]).eval().quantize(z)[1]


def _lfq_train(z: torch.Tensor) -> torch.Tensor:
    out = LFQ(dim=z.shape[1]).train()(z)
    return out.indices + 0 * out.entropy_loss.long()


def _vq(z: torch.Tensor) -> torch.Tensor:
    dim = z.shape[1]
    codebook = indices_to_codes(torch.arange(2**dim), dim, dim=-1)  # (2^d, d), row j = code j
    codebook_sq = (codebook * codebook).sum(-1)
    out = []
    for chunk in z.split(BATCH):
        # ||z||^2 - 2 z.c + ||c||^2 as one (512, 2^d) matrix, built in place
        distances = torch.addmm(codebook_sq, chunk, codebook.T, alpha=-2)
        distances.add_((chunk * chunk).sum(-1, keepdim=True))
        out.append(distances.argmin(-1))
    return torch.cat(out)


METHODS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "lfq": _lfq_quantize, "lfq_train": _lfq_train, "vq": _vq,
}


def _measure(
    method: str, vectors: int, dim: int, threads: int, repeats: int, keep: int, queue
) -> None:
    torch.set_num_threads(threads)
    z = _inputs(vectors, dim)
    base = _max_rss_mb()
    run = METHODS[method]
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        indices = run(z)
        best = min(best, time.perf_counter() - start)
    # a numpy copy travels by value (a torch tensor would be shared through a file descriptor)
    queue.put((best, _max_rss_mb() - base, indices[:keep].numpy().copy()))


def measure(method: str, vectors: int, dim: int, threads: int, repeats: int, keep: int):
    """(best seconds, peak MB above baseline, first ``keep`` indices) from a fresh process."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(
        target=_measure, args=(method, vectors, dim, threads, repeats, keep, queue)
    )
    process.start()
    best, peak_mb, indices = queue.get()
    process.join()
    return best, peak_mb, torch.from_numpy(indices)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vectors", type=int, default=1_000_000)
    parser.add_argument("--sample", type=int, default=4096)
    parser.add_argument("--dim", type=int, default=18)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    n, d = args.vectors, args.dim
    print(f"torch {torch.__version__}, {args.threads} thread(s), codebook 2^{d} = {2**d:,} codes")

    k = args.sample
    lfq_s, lfq_mb, lfq_idx = measure("lfq", n, d, args.threads, 5, k)
    train_s, train_mb, _ = measure("lfq_train", n, d, args.threads, 3, k)
    vq_s, vq_mb, vq_idx = measure("vq", k, d, args.threads, 1, k)
    row = "{:<44} {:>10.1f} ms {:>10.1f} ns/vector {:>9.0f} MB peak"
    print(row.format(f"LFQ sign + index, {n:,} x {d}", lfq_s * 1e3, lfq_s / n * 1e9, lfq_mb))
    print(row.format(f"LFQ + entropy/commitment terms, {n:,} x {d}", train_s * 1e3,
                     train_s / n * 1e9, train_mb))
    print(row.format(f"distance VQ, batches of {BATCH}, {args.sample:,} x {d}", vq_s * 1e3,
                     vq_s / args.sample * 1e9, vq_mb))
    ratio = (vq_s / args.sample) / (lfq_s / n)
    vq_all_s = vq_s / args.sample * n
    print(f"VQ / LFQ time per vector: {ratio:,.0f}x; VQ would need ~{vq_all_s:,.0f} s "
          f"for all {n:,} vectors")
    same = torch.equal(lfq_idx, vq_idx)
    expected = codes_to_indices(_inputs(args.sample, d), dim=-1)
    assert torch.equal(lfq_idx, expected)
    print(f"same indices on the {args.sample:,}-vector sample: {'yes' if same else 'NO'}")
    if not same:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
