"""The body of one orch job on a Ray worker. Standard library only, no orch imports.

Ray ships this module by value (see executors.ray), so a worker needs Python and the study's
own dependencies, not orch. The job is a streaming task: it unpacks the frozen code, runs
the same command the local executor would as a subprocess, and yields what the launching
machine needs while it runs (log bytes, changed output files), then its exit code.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

POLL_S = 0.2


def run_job(
    code: bytes,
    argv: list[str],
    env: dict[str, str],
    cwd: str,
    out: str,
    direct: bool,
    gpus: float,
    grace: float,
    seed: dict[str, bytes],
) -> Iterator[dict[str, Any]]:
    """Yield {"pid", "node"} first, then {"log": bytes, "files": {rel: bytes}} chunks, and
    last {"exit": code}. `direct`: `out` is on a path every node shares, write there."""
    tmp = Path(tempfile.mkdtemp(prefix="orch-job-"))
    proc: subprocess.Popen[bytes] | None = None
    try:
        src = tmp / "src"
        with tarfile.open(fileobj=io.BytesIO(code), mode="r:gz") as tar:
            if hasattr(tarfile, "data_filter"):
                tar.extractall(src, filter="data")
            else:  # Python < 3.10.12: the archive is our own `git archive` output
                tar.extractall(src)
        work_out = Path(out) if direct else tmp / "out"
        work_out.mkdir(parents=True, exist_ok=True)
        for rel, data in seed.items():  # the output folder so far: a checkpoint to resume
            (work_out / rel).parent.mkdir(parents=True, exist_ok=True)
            (work_out / rel).write_bytes(data)

        # The command names the launching machine's worktree and output folder; the longer
        # path first, as the output folder may lie inside the worktree.
        moves = sorted([(cwd, str(src))] + ([] if direct else [(out, str(work_out))]),
                       key=lambda m: -len(m[0]))

        def local(s: str) -> str:
            for old, new in moves:
                if old in s:
                    return s.replace(old, new)
            return s

        full_env = {**os.environ, **{k: local(v) for k, v in env.items()}}
        if gpus == 0:
            # Ray no longer blanks this for zero-GPU tasks; a CPU job must see no GPU.
            full_env["CUDA_VISIBLE_DEVICES"] = ""
        else:
            # Ray has set the devices of this task's share; the launcher's indices are its
            # plan on another machine.
            full_env["CUDA_VISIBLE_DEVICES"] = os.environ.get("CUDA_VISIBLE_DEVICES", "")
        sent: dict[str, tuple[int, int]] = {}
        _changed(work_out, sent)  # the seeded files are there already
        cmd = [local(a) for a in argv]
        if not os.path.exists(cmd[0]):  # the launcher's interpreter is not on this node
            cmd[0] = sys.executable
        log_path = tmp / "job.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                cmd, cwd=src, env=full_env, stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        yield {"pid": os.getpid(), "node": os.uname().nodename}
        offset = 0
        while True:
            code_ = proc.poll()
            chunk, offset = _read_from(log_path, offset)
            files = {} if direct else _changed(work_out, sent)
            if chunk or files:
                yield {"log": chunk, "files": files}
            if code_ is not None:
                yield {"exit": 128 - code_ if code_ < 0 else code_}
                return
            time.sleep(POLL_S)
    finally:
        # Cancelled (KeyboardInterrupt from ray.cancel) or done: leave no process behind.
        if proc is not None and proc.poll() is None:
            _stop(proc, grace)
        _rmtree(tmp)


def _die_with_parent() -> None:
    """If the Ray worker dies, its job dies too (Linux), so a retry never races an orphan."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _read_from(path: Path, offset: int) -> tuple[bytes, int]:
    with open(path, "rb") as f:
        f.seek(offset)
        data = f.read()
    return data, offset + len(data)


def _changed(root: Path, sent: dict[str, tuple[int, int]]) -> dict[str, bytes]:
    """Files under root new or changed since last sent (whole files: events, checkpoints)."""
    out: dict[str, bytes] = {}
    for p in root.rglob("*"):
        if not p.is_file():
            continue
        try:
            st = p.stat()
            key = (st.st_size, st.st_mtime_ns)
            rel = str(p.relative_to(root))
            if sent.get(rel) != key:
                out[rel] = p.read_bytes()
                sent[rel] = key
        except OSError:
            continue  # written or removed while we looked; next tick
    return out


def _stop(proc: subprocess.Popen[bytes], grace: float) -> None:
    """SIGTERM the job's process group, SIGKILL it after the grace period."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            return
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _rmtree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)
