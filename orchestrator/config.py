"""The study: config.yaml at the repo root (or the file `--config`/`ORCH_CONFIG` names), read
into typed, validated dataclasses.

Every problem (unknown key, wrong type, missing variant folder, duplicate name or branch, a
file that is not text) becomes one `ConfigError` line naming the key and its line in the
file, never a traceback.

Relative paths: folders and gates (`worktree_root`, `folder`, `gate`, `depends_on`) are
relative to the repo root, or to a variant's worktree where its code runs; files the config
names (`inputs[].path`, a preset's `data`) are relative to the config file itself.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import types
import typing
from dataclasses import MISSING, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

import yaml

from orchestrator.errors import ConfigError, UsageError
from orchestrator.study import StudyDeclaration, study_problems

CONFIG_FILE = "config.yaml"
CONFIG_ENV = "ORCH_CONFIG"  # the config file, when it is not config.yaml at the repo root
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]*$")


@dataclass(frozen=True)
class Resources:
    """What one job of a variant asks for."""

    gpus: int = 1  # GPUs per job where GPUs exist; 0 = always CPU
    gpu_memory_gb: float = 4.0  # estimate per GPU, for packing small jobs onto one GPU
    cpu_threads: int | None = None  # None: an equal share of the cores


@dataclass(frozen=True)
class RayBackend:
    """`orch train --backend ray`: where the cluster is and how hard to retry a lost job."""

    address: str = ""  # "" = RAY_ADDRESS, else a new local instance; "ray://host:10001" etc.
    max_retries: int = 1  # resubmissions of a job whose worker died (from its last checkpoint)
    cpu_fallback: bool = False  # a GPU job on a cluster without GPUs: run on CPU, or fail now
    # A folder every node sees at the same path (NFS): outputs go there directly. Empty: each
    # job's files are streamed back to the launching machine.
    shared_path: str = ""
    gpu_memory_gb: float = 0.0  # per cluster GPU, to size packed shares; 0 = a whole GPU a job
    # Prefixes of this shell's environment variables a job gets (e.g. WANDB_, HF_): a worker
    # starts from its node's environment, not the launcher's.
    forward_env: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class VariantPreset:
    """What a variant changes at one preset: its resources there, and train arguments added
    after its own."""

    resources: Resources | None = None
    train_args: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Variant:
    name: str
    branch: str
    folder: str  # e.g. branches/baseline
    gate: str = ""  # pytest path; default <folder>/tests
    train_module: str = ""  # default <folder as module>.train
    resources: Resources = field(default_factory=Resources)
    enabled: bool = True
    train_args: list[str] = field(default_factory=list)
    presets: dict[str, VariantPreset] = field(default_factory=dict)

    @property
    def gate_path(self) -> str:
        return self.gate or f"{self.folder.rstrip('/')}/tests"

    @property
    def module(self) -> str:
        return self.train_module or self.folder.strip("/").replace("/", ".") + ".train"

    def resources_at(self, preset: str) -> Resources:
        own = self.presets.get(preset)
        return own.resources if own is not None and own.resources is not None else self.resources

    def train_args_at(self, preset: str) -> list[str]:
        own = self.presets.get(preset)
        return [*self.train_args, *(own.train_args if own is not None else [])]


@dataclass(frozen=True)
class Input:
    """A file the variants in `variants` (every one when empty) need at the presets listed,
    such as a public checkpoint: passed to their train as `<pass_as> PATH`. In a rehearsal
    the preset's rehearsal assets give a stand-in of the same name instead."""

    name: str
    path: str  # relative to the config file
    pass_as: str
    presets: list[str] = field(default_factory=list)
    variants: list[str] = field(default_factory=list)

    def serves(self, variant: str) -> bool:
        return not self.variants or variant in self.variants


@dataclass(frozen=True)
class SharedJob:
    """A job every variant needs once per preset, e.g. pretraining the tokenizer.

    Runs `python -m <module> --preset P --output DIR <args>` in the main checkout; its
    artifact DIR/<artifact> is cached by a hash of the command, the preset and the git tree
    of `depends_on`, and passed to the train of each variant in `variants` (every variant
    when empty) as `<pass_as> PATH`. A job no selected variant needs does not run.
    """

    name: str
    module: str
    artifact: str
    pass_as: str
    presets: list[str] = field(default_factory=list)
    depends_on: list[str] = field(default_factory=list)
    args: list[str] = field(default_factory=list)
    variants: list[str] = field(default_factory=list)
    rehearse_args: list[str] = field(default_factory=list)  # added in a rehearsal: a step or two

    def serves(self, variant: str) -> bool:
        return not self.variants or variant in self.variants


@dataclass(frozen=True)
class Preset:
    description: str = ""
    data: str | None = None  # passed as --data FILE (relative to the config file)
    tokenizer: str | None = None  # passed as --tokenizer SOURCE when no shared job gives one
    train_args: list[str] = field(default_factory=list)
    # `python -m MODULE --preset P --output DIR` writes stand-ins for a rehearsal: random
    # weights in the official layouts of the preset's downloads, and DIR/assets.json
    # ({"env": {...}, "inputs": {name: path}}) saying where they are.
    rehearsal_assets: str | None = None


@dataclass(frozen=True)
class Config:
    base_ref: str = "HEAD"
    worktree_root: str = ".orch/worktrees"
    default_preset: str = "tiny"
    gate_preset: str = "micro"
    grace_seconds: float = 10.0  # SIGTERM -> SIGKILL delay when stopping a job
    python: str | None = None  # interpreter for jobs (see `interpreter`)
    presets: dict[str, Preset] = field(default_factory=dict)
    shared_jobs: list[SharedJob] = field(default_factory=list)
    inputs: list[Input] = field(default_factory=list)
    variants: list[Variant] = field(default_factory=list)
    ray: RayBackend = field(default_factory=RayBackend)
    study: StudyDeclaration | None = None  # metrics and reference rows (orchestrator.study)
    root: Path = field(default=Path("."), metadata={"yaml": False})  # the repo root
    path: Path = field(default=Path(CONFIG_FILE), metadata={"yaml": False})  # this file

    @property
    def worktree_dir(self) -> Path:
        p = Path(self.worktree_root)
        return p if p.is_absolute() else self.root / p

    def worktree_path(self, variant: Variant) -> Path:
        return self.worktree_dir / variant.name

    def file_path(self, name: str) -> Path:
        """A file the config names (an input, a preset's data): relative to the config file."""
        p = Path(name).expanduser()
        return p if p.is_absolute() else self.path.parent / p

    def interpreter(self) -> str:
        """The Python the jobs run with: ``python`` (a name on PATH, or a path relative to the
        config file), else the repo's .venv when it has one, else the one running orch."""
        if self.python and "/" not in self.python and os.sep not in self.python:
            found = shutil.which(self.python)
            if found is None:
                raise ConfigError(f"{self.path.name}: python: {self.python!r} is not on PATH; "
                                  "name the study's interpreter (or a path to it)")
            return found
        path = self.file_path(self.python) if self.python else self.root / ".venv/bin/python"
        if path.is_file():
            return str(path)
        if self.python:
            raise ConfigError(f"{self.path.name}: python: {path} does not exist")
        return sys.executable

    def enabled_variants(self) -> list[Variant]:
        return [v for v in self.variants if v.enabled]

    def variant_folders(self) -> dict[str, str]:
        """Variant -> its folder (relative to the repo root), as the report's code diff of
        two variants in one commit wants them."""
        return {v.name: v.folder for v in self.variants}

    def select(self, names: list[str] | None) -> list[Variant]:
        """The variants named (in the order given), or every enabled one."""
        if not names:
            chosen = self.enabled_variants()
            if not chosen:
                raise UsageError(f"no variant is enabled in {self.path.name}: set `enabled: true` "
                                 "on one there (`orch train NAME` trains a disabled one)")
            return chosen
        by_name = {v.name: v for v in self.variants}
        unknown = [n for n in names if n not in by_name]
        if unknown:
            raise ConfigError(
                f"unknown variant {unknown[0]!r}; {self.path.name} declares: "
                f"{', '.join(by_name)}"
            )
        return [by_name[n] for n in dict.fromkeys(names)]

    def preset(self, name: str | None) -> str:
        name = name or self.default_preset
        if name not in self.presets:
            known = ", ".join(self.presets)
            raise ConfigError(f"unknown preset {name!r}; {self.path.name} declares: {known}")
        return name


# ---------------------------------------------------------------------------- loading


def find_root(start: Path | None = None) -> Path:
    """The repo root: the nearest folder upwards that holds config.yaml or .git."""
    here = (start or Path.cwd()).resolve()
    for d in (here, *here.parents):
        if (d / CONFIG_FILE).exists():
            return d
    found = git_root(here)
    if found is None:
        raise ConfigError(f"no {CONFIG_FILE} here or above {here}; run orch from the study's "
                          "repo, or name the config with --config PATH")
    return found


def git_root(start: Path) -> Path | None:
    """The nearest folder at or above ``start`` that is a git repository or worktree."""
    for d in (start, *start.parents):
        if (d / ".git").exists():
            return d
    return None


def locate(config: str | os.PathLike[str] | None = None,
           start: Path | None = None) -> tuple[Path, Path]:
    """(repo root, config file). The file is ``config`` (`--config`), else $ORCH_CONFIG, both
    relative to the current folder; its repo root is the git repository holding the file,
    else the one holding the current folder. Without either: config.yaml at `find_root`."""
    here = (start or Path.cwd()).resolve()
    given, source = (os.fspath(config), "--config") if config is not None else (
        os.environ.get(CONFIG_ENV, ""), CONFIG_ENV)
    if not given:
        root = find_root(here)
        return root, root / CONFIG_FILE
    path = (here / Path(given).expanduser()).resolve()
    if not path.is_file():
        what = "is a folder" if path.is_dir() else "does not exist"
        raise ConfigError(f"{source} {given}: {path} {what}; name orch's config file")
    repo = git_root(path.parent) or git_root(here)
    if repo is None:
        raise ConfigError(f"{source} {given}: neither {path.parent} nor {here} is in a git "
                          "repository; run orch from the study's repo")
    return repo, path


def load_config(root: Path | None = None, path: Path | None = None) -> Config:
    """The config at ``path`` for the repo at ``root``. Without ``root``, `locate` finds both
    (from ``path``, $ORCH_CONFIG or config.yaml); with ``root`` alone, its config.yaml."""
    if root is None:
        root, path = locate(path)
    root = root.resolve()
    path = (path or root / CONFIG_FILE).resolve()
    if not path.is_file():
        raise ConfigError(f"{path.name} not found in {path.parent}; create it (see README), or "
                          "name orch's config with --config PATH")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not a text file (byte {e.start} is not UTF-8); orch's config "
                          "is YAML text") from None
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror or e}") from None
    if "\x00" in text:
        raise ConfigError(f"{path}: not a text file (it holds NUL bytes); orch's config is YAML "
                          "text")
    return parse_config(text, root=root, filename=path.name, path=path)


def parse_config(text: str, root: Path, filename: str = CONFIG_FILE,
                 path: Path | None = None) -> Config:
    """``text`` as the config of the repo at ``root``, read from ``path`` (default:
    ``root/filename``), which relative file names start from."""
    try:
        node = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{filename}{where}: invalid YAML: {problem}") from None
    lines: dict[tuple[str | int, ...], int] = {}
    if node is not None:
        _index_lines(node, (), lines, filename)
    if data is None:
        data = {}
    v = _Validator(lines, filename)
    cfg = v.build(Config, data, ())
    cfg = _place(cfg, root, path or root / filename)
    _check(cfg, v)
    return cfg


def _place(cfg: Config, root: Path, path: Path) -> Config:
    object.__setattr__(cfg, "root", root)
    object.__setattr__(cfg, "path", path)
    return cfg


def _index_lines(
    node: yaml.Node, path: tuple[str | int, ...], lines: dict[tuple[str | int, ...], int], fn: str
) -> None:
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for k, val in node.value:
            key = str(k.value)
            if key in seen:
                dotted = ".".join(str(p) for p in (*path, key))
                raise ConfigError(f"{fn}:{k.start_mark.line + 1}: {dotted}: duplicate key")
            seen.add(key)
            lines[(*path, key)] = k.start_mark.line + 1
            _index_lines(val, (*path, key), lines, fn)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            lines[(*path, i)] = item.start_mark.line + 1
            _index_lines(item, (*path, i), lines, fn)


class _Validator:
    def __init__(self, lines: dict[tuple[str | int, ...], int], filename: str) -> None:
        self.lines = lines
        self.filename = filename

    def fail(self, path: tuple[str | int, ...], message: str) -> ConfigError:
        p = path
        while p and p not in self.lines:
            p = p[:-1]
        line = self.lines.get(p)
        where = f"{self.filename}:{line}" if line else self.filename
        dotted = _dotted(path)
        return ConfigError(f"{where}: {dotted + ': ' if dotted else ''}{message}")

    def build(self, cls: type[Any], data: Any, path: tuple[str | int, ...]) -> Any:
        if not isinstance(data, dict):
            raise self.fail(path, f"expected a mapping, got {_kind(data)}")
        hints = typing.get_type_hints(cls)
        known = {f.name: f for f in fields(cls) if f.metadata.get("yaml", True)}
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            if key not in known:
                raise self.fail(
                    (*path, str(key)), f"unknown key (expected one of: {', '.join(known)})"
                )
            kwargs[key] = self.convert(hints[key], value, (*path, key))
        for name, f in known.items():
            if name not in kwargs and f.default is MISSING and f.default_factory is MISSING:
                raise self.fail(path, f"missing required key {name!r}")
        return cls(**kwargs)

    def convert(self, tp: Any, value: Any, path: tuple[str | int, ...]) -> Any:
        origin = typing.get_origin(tp)
        args = typing.get_args(tp)
        if origin in (typing.Union, types.UnionType):
            if value is None and type(None) in args:
                return None
            inner = [a for a in args if a is not type(None)]
            return self.convert(inner[0], value, path)
        if is_dataclass(tp) and isinstance(tp, type):
            return self.build(tp, value, path)
        if origin is list:
            if not isinstance(value, list):
                raise self.fail(path, f"expected a list, got {_kind(value)}")
            return [self.convert(args[0], x, (*path, i)) for i, x in enumerate(value)]
        if origin is dict:
            if not isinstance(value, dict):
                raise self.fail(path, f"expected a mapping, got {_kind(value)}")
            return {
                str(k): self.convert(args[1], {} if x is None else x, (*path, str(k)))
                for k, x in value.items()
            }
        if tp is bool:
            if not isinstance(value, bool):
                raise self.fail(path, f"expected true or false, got {_kind(value)}")
            return value
        if tp is int:
            if isinstance(value, bool) or not isinstance(value, int):
                raise self.fail(path, f"expected an integer, got {_kind(value)}")
            return value
        if tp is float:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise self.fail(path, f"expected a number, got {_kind(value)}")
            return float(value)
        if tp is str:
            if isinstance(value, bool) or not isinstance(value, str | int | float):
                raise self.fail(path, f"expected a string, got {_kind(value)}")
            return str(value)
        raise AssertionError(f"unsupported config type {tp!r}")


def _check(cfg: Config, v: _Validator) -> None:
    if cfg.default_preset not in cfg.presets:
        raise v.fail(("default_preset",), f"{cfg.default_preset!r} is not in presets")
    if cfg.gate_preset not in cfg.presets:
        raise v.fail(("gate_preset",), f"{cfg.gate_preset!r} is not in presets")
    if cfg.grace_seconds < 0:
        raise v.fail(("grace_seconds",), "must be >= 0")
    for problem in study_problems(cfg.study.spec()) if cfg.study else ():
        raise v.fail(("study",), problem)
    if cfg.ray.max_retries < 0 or cfg.ray.gpu_memory_gb < 0:
        raise v.fail(("ray",), "max_retries and gpu_memory_gb must be >= 0")
    names: dict[str, int] = {}
    branches: dict[str, int] = {}
    for i, var in enumerate(cfg.variants):
        p: tuple[str | int, ...] = ("variants", i)
        if not NAME_RE.match(var.name):
            raise v.fail((*p, "name"), f"{var.name!r}: use lowercase letters, digits, - and _")
        if var.name in names:
            raise v.fail((*p, "name"), f"duplicate variant name {var.name!r}")
        if var.branch in branches:
            other = cfg.variants[branches[var.branch]].name
            raise v.fail((*p, "branch"), f"duplicate branch {var.branch!r} (also {other!r})")
        names[var.name] = i
        branches[var.branch] = i
        r = var.resources
        if r.gpus < 0 or r.gpu_memory_gb < 0 or (r.cpu_threads is not None and r.cpu_threads < 1):
            raise v.fail((*p, "resources"), "gpus and gpu_memory_gb must be >= 0, cpu_threads >= 1")
        if var.enabled and not (cfg.root / var.folder).is_dir():
            raise v.fail(
                (*p, "folder"),
                f"{var.folder} does not exist; create it or set enabled: false",
            )
    for i, var in enumerate(cfg.variants):
        for preset, own in var.presets.items():
            if preset not in cfg.presets:
                raise v.fail(("variants", i, "presets", preset), f"unknown preset {preset!r}")
            own_r = own.resources
            if own_r is not None and (own_r.gpus < 0 or own_r.gpu_memory_gb < 0):
                raise v.fail(("variants", i, "presets", preset, "resources"),
                             "gpus and gpu_memory_gb must be >= 0")
    for i, shared in enumerate(cfg.shared_jobs):
        if not NAME_RE.match(shared.name):
            raise v.fail(("shared_jobs", i, "name"),
                         f"{shared.name!r}: use lowercase letters, digits, - and _")
        artifact = Path(shared.artifact)
        if artifact.is_absolute() or ".." in artifact.parts or not artifact.parts:
            raise v.fail(("shared_jobs", i, "artifact"),
                         f"{shared.artifact!r} is not inside the job's output folder: name the "
                         "file it writes there, as a relative path without ..")
    sections: list[tuple[str, int, SharedJob | Input]] = [
        *(("shared_jobs", i, job) for i, job in enumerate(cfg.shared_jobs)),
        *(("inputs", i, job) for i, job in enumerate(cfg.inputs))]
    for section, i, job in sections:
        for k, preset in enumerate(job.presets):
            if preset not in cfg.presets:
                raise v.fail((section, i, "presets", k), f"unknown preset {preset!r}")
        for k, name in enumerate(job.variants):
            if name not in names:
                raise v.fail((section, i, "variants", k), f"unknown variant {name!r}")


def _dotted(path: tuple[str | int, ...]) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), type(value).__name__
    )
