"""Shared jobs: work every variant needs once per preset (the tokenizer pretraining).

A shared job's artifact is cached under `<state>/shared/<name>-<key>/`, where the key hashes
what made it: the module and arguments, the preset, and the git tree of the paths it depends
on as they are in the working tree (committed or not). Same inputs, same key: every worktree
and every later run reuses the artifact; change `shared/` and it is rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

from orchestrator.config import Config, SharedJob
from orchestrator.executors import JobSpec
from orchestrator.failures import exit_reason, log_tail
from orchestrator.jobenv import job_env
from orchestrator.worktrees import git


@dataclass(frozen=True)
class SharedPlan:
    job: SharedJob
    preset: str
    key: str
    out_dir: Path  # final, complete artifact folder
    work_dir: Path  # where the job writes; renamed to out_dir on success

    @property
    def name(self) -> str:
        """Its job name in the run (logs, handles)."""
        return f"shared:{self.job.name}"

    @property
    def artifact(self) -> Path:
        return self.out_dir / self.job.artifact

    @property
    def cached(self) -> bool:
        return self.artifact.exists()

    @property
    def threads_file(self) -> Path:
        """Beside the log, not in the work dir, which becomes the published artifact."""
        return self.work_dir.with_name(self.out_dir.name + ".threads")

    @property
    def log_path(self) -> Path:
        return self.work_dir.with_name(self.out_dir.name + ".log")

    @property
    def train_args(self) -> list[str]:
        return [self.job.pass_as, str(self.artifact)] if self.job.pass_as else []


def tree_hash(root: Path, paths: list[str]) -> str:
    """The git tree of `paths` as they are on disk, via a throwaway index (the real index and
    working tree are not touched). Ignored files are left out, untracked ones count."""
    if not paths:
        return ""
    with tempfile.TemporaryDirectory(prefix="orch-index-") as tmp:
        env = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
        git(["read-tree", "--empty"], root, env)
        existing = [p for p in paths if (root / p).exists()]
        if existing:
            git(["add", "-A", "--", *existing], root, env)
        return git(["write-tree"], root, env).strip()


def cache_key(job: SharedJob, preset: str, tree: str) -> str:
    blob = json.dumps(
        {"module": job.module, "args": job.args, "preset": preset, "tree": tree,
         "artifact": job.artifact},
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


REHEARSAL_ASSETS = "rehearsal-assets"


def rehearsal_jobs(cfg: Config, preset: str) -> list[SharedJob]:
    """The shared jobs of a rehearsal: each with its rehearse_args (a step or two; cached
    apart from the real artifact, as its arguments differ), and the preset's stand-in maker."""
    jobs = [replace(job, args=[*job.args, *job.rehearse_args]) for job in cfg.shared_jobs]
    module = cfg.presets[preset].rehearsal_assets
    if module:
        jobs.append(SharedJob(name=REHEARSAL_ASSETS, module=module, artifact="assets.json",
                              pass_as="", presets=[preset],
                              depends_on=[module.split(".")[0] + "/"]))
    return jobs


def plan(cfg: Config, home: Path, preset: str, *, rehearse: bool = False) -> list[SharedPlan]:
    plans = []
    for job in rehearsal_jobs(cfg, preset) if rehearse else cfg.shared_jobs:
        if preset not in job.presets:
            continue
        key = cache_key(job, preset, tree_hash(cfg.root, job.depends_on))
        out = home / "shared" / f"{job.name}-{preset}-{key}"
        work = out.with_name(out.name + f".partial-{os.getpid()}")
        plans.append(SharedPlan(job, preset, key, out, work))
    return plans


def spec(cfg: Config, p: SharedPlan, cuda_visible: str, threads: int) -> JobSpec:
    if p.work_dir.exists():
        shutil.rmtree(p.work_dir)
    p.work_dir.mkdir(parents=True)
    argv = [
        cfg.interpreter(),
        "-m",
        p.job.module,
        "--preset",
        p.preset,
        "--output",
        str(p.work_dir),
        *p.job.args,
    ]
    return JobSpec(
        name=p.name,
        argv=argv,
        cwd=cfg.root,
        log_path=p.log_path,
        env=job_env(cfg.root, cuda_visible, threads, p.preset, threads_file=p.threads_file),
        threads=threads,
        gpus=(0,) if cuda_visible else (),  # a cluster executor reserves the GPU it uses here
        output_dir=p.work_dir,
    )


def finish(p: SharedPlan) -> bool:
    """Publish the work dir as the cached artifact; False if the artifact is missing."""
    if not (p.work_dir / p.job.artifact).exists():
        return False
    if p.out_dir.exists():  # another run published it meanwhile
        shutil.rmtree(p.work_dir, ignore_errors=True)
        return True
    os.replace(p.work_dir, p.out_dir)
    return True


def failure(p: SharedPlan, code: int) -> str:
    """Why the shared job ``p`` that exited with ``code`` failed, or "" when it published its
    artifact."""
    if code == 0 and finish(p):
        return ""
    reason = (f"it wrote no {p.job.artifact}" if code == 0 else
              exit_reason(code, p.work_dir / "events.jsonl", log_tail(p.log_path)))
    return f"shared job {p.job.name} ({p.preset}) failed: {reason}; log: {p.log_path}"
