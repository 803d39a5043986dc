"""Jobs on a Ray cluster: the same JobSpecs as the local executor, run on cluster workers.

Each job is one streaming Ray task (orchestrator.executors.ray_worker.run_job) that reserves the
job's threads and GPU share. What it runs is frozen here, before submission: the worktree's
commit as `git archive`, with the recorded dirty diff applied, packed as a tarball (Ray's own
working_dir upload drops .git, so the task could not tell what it runs). The task streams
the job's log and changed output files back; this side appends them to the same log and
output folder a local job writes, so events, state, status, monitor and compare work
unchanged. A worker that dies is resubmitted up to `max_retries` times, with `--resume`
when a checkpoint came back. ray is imported inside functions only: it is an optional extra
and costs most of a second to import.
"""

from __future__ import annotations

import hashlib
import io
import os
import socket
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

from orchestrator import worktrees as wt
from orchestrator.config import RayBackend
from orchestrator.devices import Gpu
from orchestrator.errors import UsageError
from orchestrator.executors.base import Executor, JobHandle, JobSpec, write_log

CONNECT_TIMEOUT_S = 3.0
ASSUMED_GPU_MB = 1 << 20  # a GPU size when none is configured: every job gets a whole GPU


def connect(cfg: RayBackend, address: str | None = None, grace: float = 10.0) -> RayExecutor:
    """Join the cluster at `address` (else the config's, else RAY_ADDRESS, else start a local
    instance). Raises UsageError with one line when ray is missing or the cluster is not
    there."""
    try:
        import ray
    except ImportError:
        raise UsageError(
            "--backend ray needs ray, which is not installed: pip install 'orch[ray]' "
            "(or drop --backend ray to run here)"
        ) from None
    addr = address or cfg.address or os.environ.get("RAY_ADDRESS", "")
    _check_reachable(addr)
    owns = not ray.is_initialized()  # else someone else's session (a test): leave it up
    if owns:
        try:
            ray.init(address=addr or None, log_to_driver=False, include_dashboard=False)
        except Exception as e:  # ray raises ConnectionError, RuntimeError, ValueError ...
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise UsageError(f"cannot connect to the Ray cluster at {addr or 'local'}: "
                             f"{first[:200]}") from None
    return RayExecutor(cfg, addr, grace, owns)


def _check_reachable(addr: str) -> None:
    """Fail in seconds, not after ray's long connect retries, when nothing listens there."""
    if not addr or addr in ("auto", "local"):
        return
    hostport = addr.split("://", 1)[-1].rstrip("/")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise UsageError(f"bad Ray address {addr!r}; use host:port (e.g. 10.0.0.5:6379) "
                         "or ray://host:10001")
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as e:
        raise UsageError(f"cannot reach the Ray cluster at {addr}: {e.strerror or e}; "
                         "is `ray start --head` running there?") from None


def pack(cwd: Path, commit: str, diff: str) -> bytes:
    """The code a job runs, as a .tar.gz: `commit`'s tree with `diff` applied (untracked
    files are listed in the recorded diff but not shipped, locally they are)."""
    with tempfile.TemporaryDirectory(prefix="orch-pack-") as tmp:
        tree = Path(tmp) / "tree"
        tree.mkdir()
        archive = subprocess.run(["git", "archive", "--format=tar", commit], cwd=cwd,
                                 check=True, capture_output=True).stdout
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            if hasattr(tarfile, "data_filter"):
                tar.extractall(tree, filter="data")
            else:
                tar.extractall(tree)
        patch = diff.split(wt.UNTRACKED_MARK, 1)[0]
        if patch.strip():
            subprocess.run(["git", "apply", "--binary", "--whitespace=nowarn", "-"], cwd=tree,
                           input=patch.encode(), check=True, capture_output=True)
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tar:
            tar.add(tree, arcname=".")
        return buf.getvalue()


class RayExecutor(Executor):
    cpu_fallback = False
    thread_grants = False  # each task holds the CPUs Ray reserved for it

    def __init__(self, cfg: RayBackend, address: str, grace: float, owns: bool = False) -> None:
        import ray
        from ray import cloudpickle

        from orchestrator.executors import ray_worker

        self.cfg = cfg
        self.grace = grace
        self.owns = owns
        self.where = f"the Ray cluster at {address}" if address else "the local Ray instance"
        self.cpu_fallback = cfg.cpu_fallback
        # Workers need not have orch installed: ship the job body itself.
        cloudpickle.register_pickle_by_value(ray_worker)
        self._task = ray.remote(num_returns="streaming", max_retries=0)(ray_worker.run_job)
        self._code: dict[str, Any] = {}  # pack key -> object ref, one upload per code state
        self._node_cpus = 1

    def resources(self) -> tuple[list[Gpu], int]:
        """The cluster's GPUs (as logical slots: Ray knows no GPU memory) and CPUs."""
        import ray

        total = ray.cluster_resources()
        nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
        self._node_cpus = int(max((n.get("CPU", 0) for n in nodes), default=1)) or 1
        mb = int(self.cfg.gpu_memory_gb * 1024) or ASSUMED_GPU_MB
        gpus = [Gpu(i, mb, mb) for i in range(int(total.get("GPU", 0)))]
        return gpus, int(total.get("CPU", 1))

    def gpu_share(self, spec: JobSpec) -> float:
        """Ray's num_gpus for a job: whole GPUs, or the memory fraction of a packed one."""
        if not spec.gpus:
            return 0.0
        if len(spec.gpus) > 1 or not self.cfg.gpu_memory_gb or not spec.gpu_memory_mb:
            return float(len(spec.gpus))
        share = spec.gpu_memory_mb / (self.cfg.gpu_memory_gb * 1024)
        return min(1.0, max(0.01, round(share, 2)))

    def code_ref(self, spec: JobSpec) -> tuple[Any, str]:
        import ray

        commit, diff = spec.commit, spec.diff
        if not commit:  # gates and shared jobs: freeze what is there now
            snap = wt.snapshot(spec.cwd)
            commit, diff = snap.commit, snap.diff
        key = hashlib.sha256(f"{spec.cwd}\0{commit}\0{diff}".encode()).hexdigest()
        if key not in self._code:
            self._code[key] = ray.put(pack(spec.cwd, commit, diff))
        return self._code[key], commit + (" +diff" if diff.strip() else "")

    def submit(self, spec: JobSpec) -> JobHandle:
        return RayHandle(self, spec)

    def launch(self, spec: JobSpec, argv: list[str]) -> Any:
        code, _ = self.code_ref(spec)
        shared = self.cfg.shared_path
        direct = bool(shared) and spec.out_dir.resolve().is_relative_to(Path(shared).resolve())
        gpus = self.gpu_share(spec)
        threads = min(spec.threads, self._node_cpus)
        # What the job's output folder holds already (a checkpoint to resume from) goes along.
        seed = {} if direct else _files(spec.out_dir, skip=spec.log_path)
        # A worker's environment is its node's, not this shell's: pass on what was asked for.
        env = {k: v for k, v in os.environ.items()
               if any(k.startswith(p) for p in self.cfg.forward_env)}
        return self._task.options(num_cpus=threads, num_gpus=gpus, name=spec.name).remote(
            code, argv, {**env, **spec.env}, str(spec.cwd), str(spec.out_dir), direct, gpus,
            self.grace, seed,
        )

    def close(self) -> None:
        import ray

        self._code.clear()
        if self.owns and ray.is_initialized():
            ray.shutdown()


class RayHandle(JobHandle):
    """One job on the cluster. pid stays None: a remote pid means nothing here, and the
    launcher must never signal a local process by that number."""

    def __init__(self, ex: RayExecutor, spec: JobSpec) -> None:
        self.ex, self.spec = ex, spec
        self.attempt = 0
        self.worker_pid: int | None = None
        self.node = ""
        self._code: int | None = None
        _, what = ex.code_ref(spec)
        write_log(spec.log_path, f"$ {' '.join(spec.argv)}\norch: on {ex.where}, code {what}\n")
        self._gen = ex.launch(spec, spec.argv)

    def poll(self) -> int | None:
        import ray
        from ray.exceptions import RayError, RayTaskError, TaskCancelledError

        while self._code is None:
            ready, _ = ray.wait([self._gen], timeout=0)
            if not ready:
                break
            try:
                msg = ray.get(next(self._gen))
            except StopIteration:
                self._finish(1, "orch: the Ray task ended without an exit code")
                break
            except TaskCancelledError:
                self._finish(130, "orch: the Ray task was cancelled")
                break
            except RayTaskError as e:  # the job's wrapper raised: a bug, not a lost worker
                self._finish(1, f"orch: the Ray task failed: {_one_line(e)}")
                break
            except RayError as e:
                self._lost(_one_line(e))
                continue
            self._take(msg)
        return self._code

    def _take(self, msg: dict[str, Any]) -> None:
        if "pid" in msg:
            self.worker_pid, self.node = msg["pid"], msg["node"]
            write_log(self.spec.log_path, f"orch: running on {self.node} (worker pid "
                                          f"{self.worker_pid}), attempt {self.attempt + 1}\n")
        if msg.get("log"):
            with open(self.spec.log_path, "ab") as f:
                f.write(msg["log"])
        for rel, data in msg.get("files", {}).items():
            _write_atomic_bytes(self.spec.out_dir / rel, data)
        if "exit" in msg:
            self._code = int(msg["exit"])

    def _lost(self, why: str) -> None:
        """The worker died under the job: say why, then resubmit or give up."""
        if self.attempt >= self.ex.cfg.max_retries:
            self._finish(1, f"orch: Ray worker lost: {why} (no retries left of "
                            f"{self.ex.cfg.max_retries})")
            return
        self.attempt += 1
        argv = list(self.spec.argv)
        resume = (self.spec.out_dir / "checkpoints" / "last.pt").exists()
        if resume and "--output" in argv and "--resume" not in argv:
            argv.append("--resume")
        write_log(self.spec.log_path, f"orch: Ray worker lost: {why}; retry "
                  f"{self.attempt}/{self.ex.cfg.max_retries}"
                  f"{' from the last checkpoint' if '--resume' in argv else ''}\n")
        self._gen = self.ex.launch(self.spec, argv)

    def _finish(self, code: int, line: str) -> None:
        write_log(self.spec.log_path, line + "\n")
        self._code = code

    def terminate(self) -> None:
        # The task gets KeyboardInterrupt and stops its job's process group (SIGTERM, then
        # SIGKILL after the grace period).
        self._cancel(force=False)

    def kill(self) -> None:
        self._cancel(force=True)

    def _cancel(self, force: bool) -> None:
        import ray

        if self._code is None:
            try:
                ray.cancel(self._gen, force=force)
            except Exception:  # already finished or gone: nothing left to cancel
                pass

    def alive(self) -> bool:
        self.poll()
        return self._code is None


def _one_line(e: BaseException) -> str:
    text = str(e).strip()
    return (text.splitlines()[0] if text else type(e).__name__)[:200]


def _files(root: Path, skip: Path) -> dict[str, bytes]:
    if not root.is_dir():
        return {}
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*")
            if p.is_file() and p != skip and not p.name.endswith(".tmp")}


def _write_atomic_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{time.monotonic_ns()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
