"""What `orch init` does, as data: where the config goes, each variant's plan (branch,
folder, gate, train module, checked against the repository), the commented config.yaml text,
and the write that never loses a file. The command (``orchestrator.cli.init``) prints.

GitPython reads the repository here (the branch checked out, what a ref has committed): a
look at git objects, not a command whose output must be parsed.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
import shutil
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from orchestrator.errors import GitError, UsageError

if TYPE_CHECKING:
    from orchestrator.study import MetricSpec, ReferenceSpec

DEFAULT_PRESETS = ["micro", "small"]


@dataclass(frozen=True)
class VariantPlan:
    """One variant as config.yaml will declare it (paths relative to the repo root)."""

    name: str
    branch: str
    folder: str
    gate: str
    train_module: str
    train_file: str  # the file `python -m train_module` runs


def config_target(given: Path | None) -> tuple[Path, Path]:
    """(repo root, config file to write): `--config`, else $ORCH_CONFIG (relative to the
    current folder), else config.yaml at the root of the git repository holding it."""
    from orchestrator.config import CONFIG_ENV, CONFIG_FILE, git_root

    here = Path.cwd().resolve()
    name = os.fspath(given) if given is not None else os.environ.get(CONFIG_ENV, "")
    path = (here / Path(name).expanduser()).resolve() if name else None
    root = (git_root(path.parent) if path else None) or git_root(here)
    if root is None:
        raise UsageError(f"{here} is not in a git repository: run orch init in your project's "
                         "repository (`git init` first for a new one)")
    path = path or root / CONFIG_FILE
    if path.is_dir():
        raise UsageError(f"{name}: {path} is a folder; name the config file to write")
    return root, path


def plan_variants(root: Path, specs: list[str], *, branch_prefix: str, folder: str,
                  gate: str, train: str | None) -> list[VariantPlan]:
    """Each ``NAME[=FOLDER]`` with its branch, folder, gate and train module, checked against
    the repo: a bad name is a UsageError, and so is anything missing (all of it, one line)."""
    from orchestrator.config import NAME_RE

    plans: list[VariantPlan] = []
    missing: list[str] = []
    for spec in specs:
        name, own_folder = spec.split("=", 1) if "=" in spec else (spec, None)
        if not NAME_RE.match(name):
            raise UsageError(f"variant {name!r}: use lowercase letters, digits, - and _ "
                             "(starting with a letter or digit)")
        if any(p.name == name for p in plans):
            raise UsageError(f"variant {name!r} is named twice")
        fields = {"name": name, "pkg": name.replace("-", "_")}
        where = _relative(own_folder or _fill(folder, fields, "--folder"), "--folder")
        fields["folder"] = where
        module = _module(_fill(train, fields, "--train") if train else None, where)
        plan = VariantPlan(
            name=name, branch=_branch(root, branch_prefix + name), folder=where,
            gate=_relative(_fill(gate, fields, "--gate"), "--gate"),
            train_module=module, train_file=_train_file(root, module))
        plans.append(plan)
        if not (root / where).is_dir():
            missing.append(f"{where}/ ({name}'s folder)")
            continue
        if not (root / plan.gate.split("::")[0]).exists():
            missing.append(f"{plan.gate} ({name}'s gate)")
        if not (root / plan.train_file).is_file():
            missing.append(f"{plan.train_file} ({name}'s train module {module})")
    if missing:
        raise UsageError(f"not in the repo: {', '.join(missing)}; write them first, or point "
                         "--folder, --gate or --train at what exists (nothing was written)")
    return plans


def _fill(template: str, fields: dict[str, str], option: str) -> str:
    try:
        return template.format_map(fields)
    except (KeyError, ValueError, IndexError, AttributeError):
        raise UsageError(f"{option} {template!r}: the placeholders are "
                         f"{', '.join('{' + k + '}' for k in fields)}") from None


def _relative(path: str, option: str) -> str:
    """``path`` normalised, inside the repo (relative, no ..)."""
    clean = posixpath.normpath(path.replace("\\", "/")) if path else ""
    if not clean or clean.startswith("/") or clean.split("/")[0] == "..":
        raise UsageError(f"{option} {path!r}: name a path inside the repo, relative to its root")
    return clean


def _branch(root: Path, name: str) -> str:
    from orchestrator.worktrees import git

    try:
        git(["check-ref-format", "--branch", name], root)
    except GitError:
        raise UsageError(f"{name!r} is not a valid git branch name; change --branch-prefix"
                         ) from None
    return name


def _module(train: str | None, folder: str) -> str:
    """The dotted module `python -m` runs: ``train`` as given (module or .py file), else
    ``folder`` as a module + .train."""
    if train is None:
        parts = [*(p for p in PurePosixPath(folder).parts if p != "."), "train"]
    elif " " in train.strip() or not train.strip():
        raise UsageError(f"--train {train!r}: orch runs `python -m MODULE --preset P --output "
                         "DIR ...` itself; give the module (pkg.train) or its file (pkg/train.py)")
    elif train.endswith(".py") or "/" in train:
        file = PurePosixPath(_relative(train, "--train"))
        parts = [*file.parent.parts, file.stem] if file.suffix == ".py" else list(file.parts)
        parts = parts[:-1] if parts[-1] == "__main__" and len(parts) > 1 else parts
    else:
        parts = train.split(".")
    module = ".".join(parts)
    if not all(p.isidentifier() for p in parts):
        source = f"--train {train!r}" if train else f"folder {folder!r}"
        raise UsageError(f"{source}: {module!r} is not a module `python -m` can run (dotted "
                         "identifiers); name the train module with --train")
    return module


def _train_file(root: Path, module: str) -> str:
    """The file in the repo `python -m module` runs: a package's __main__.py, else
    module.py (what is missing, when neither exists)."""
    base = PurePosixPath(*module.split("."))
    file = root / f"{base}.py"
    package = (root / base / "__init__.py").is_file() or (
        (root / base).is_dir() and not file.is_file())  # a namespace package loses to a file
    return str(base / "__main__.py") if package else f"{base}.py"


def check_names(names: list[str], option: str) -> list[str]:
    from orchestrator.config import NAME_RE

    for name in names:
        if not NAME_RE.match(name):
            raise UsageError(f"{option} {name!r}: use lowercase letters, digits, - and _")
    return list(dict.fromkeys(names))


def parse_study(metrics: list[str], references: list[str]
                ) -> tuple[list[MetricSpec], list[ReferenceSpec]]:
    """``--metric NAME:higher|lower`` (the first ranks), ``--reference NAME:floor|ceiling``."""
    from orchestrator.study import MetricSpec, ReferenceSpec

    if references and not metrics:
        raise UsageError("--reference needs --metric: declare the metrics the rows carry")
    m = [MetricSpec(name, how, rank=i == 0)
         for i, (name, how) in enumerate(_pairs(metrics, "--metric", ("higher", "lower"),
                                                "accuracy:higher"))]
    r = [ReferenceSpec(name, how)
         for name, how in _pairs(references, "--reference", ("floor", "ceiling"),
                                 "majority_class:floor")]
    if "model" in (x.name for x in r):
        raise UsageError("--reference model: the model's own row is not a reference")
    return m, r


def _pairs(texts: list[str], option: str, choices: tuple[str, str], example: str
           ) -> list[tuple[str, str]]:
    pairs = [(name.strip(), how) for name, _, how in (t.rpartition(":") for t in texts)]
    for text, (name, how) in zip(texts, pairs, strict=True):
        if not name or how not in choices:
            raise UsageError(f"{option} {text!r}: write NAME:{choices[0]} or NAME:{choices[1]}, "
                             f"e.g. {example}")
    if len({name for name, _ in pairs}) != len(pairs):
        raise UsageError(f"{option}: a name appears twice")
    return pairs


def current_branch(root: Path) -> str:
    """The branch checked out at ``root`` (even before its first commit), else HEAD."""
    import git

    try:
        return git.Repo(root).active_branch.name
    except TypeError:  # detached HEAD
        return "HEAD"
    except git.GitError as error:
        raise GitError(f"cannot read the repository at {root}: {error}") from None


def commit_warnings(root: Path, base_ref: str, plans: list[VariantPlan]) -> list[str]:
    """What `orch spawn` would miss: a worktree holds only what base_ref has committed."""
    import git

    try:
        tree = git.Repo(root).commit(base_ref).tree
    except (git.BadName, ValueError):  # no such ref, or a branch without a commit yet
        return [f"base_ref {base_ref!r} is not a commit yet: commit the variants' code there "
                "before `orch spawn`, whose branches start from it"]
    absent = []
    for path in dict.fromkeys(p for plan in plans for p in (plan.train_file, plan.gate)):
        try:
            tree / path.rstrip("/")  # a file or a folder that base_ref has
        except KeyError:
            absent.append(path)
    if not absent:
        return []
    return [f"not committed on {base_ref}: {', '.join(absent)}; commit before `orch spawn`, "
            "a variant's worktree holds only what its branch has"]


def write_config(path: Path, text: str, *, force: bool) -> Path | None:
    """Write ``text`` to ``path``, never over an existing file unless ``force``; then the old
    one is kept first as FILE.bak (.bak.1, .bak.2 ... when that exists). The backup."""
    from orchestrator.formats.files import write_text_atomic

    shown = shown_path(path)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with path.open("x", encoding="utf-8") as f:  # "x": a file that appeared meanwhile
                f.write(text)                                # is left alone
            return None
        except FileExistsError:
            pass
        except OSError as e:
            raise UsageError(f"cannot write {shown}: {e.strerror or e}") from None
    if not force:
        raise overwrite_refused(path)
    backup = path.with_name(path.name + ".bak")
    n = 0
    while backup.exists():
        n += 1
        backup = path.with_name(f"{path.name}.bak.{n}")
    try:
        shutil.copy2(path, backup)
        write_text_atomic(path, text)
    except OSError as e:
        raise UsageError(f"cannot write {shown}: {e.strerror or e}") from None
    return backup


def overwrite_refused(path: Path) -> UsageError:
    return UsageError(f"{shown_path(path)} exists already and orch init never overwrites it: keep "
                      "it and write orch's config elsewhere (`orch --config orch.yaml init "
                      f"...`), or replace it with --force (the old one kept as {path.name}.bak)")


def shown_path(path: Path) -> str:
    """``path`` relative to the current folder when it is below it."""
    try:
        return str(path.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


# ---------------------------------------------------------------------------- the text


HEADER = """\
# orch's config, written by `orch init`: the variants tried side by side, each on its own
# git branch and in its own worktree. `orch status` checks it; README ("Where orch's config
# lives") says more. Paths: folders and gates are relative to the repo root (in a variant's
# worktree, the same path there); files this config names (inputs[].path, a preset's data)
# are relative to this file.

"""

PRESETS_GUIDE = """\
# python: .venv/bin/python       # the jobs' interpreter: a name on PATH, or a path relative
#                                # to this file; default the repo's .venv, else orch's own

# Each variant's train runs as `python -m MODULE --preset NAME --output DIR --seed N
# --threads N --device cpu|cuda [--resume]`, so the script must know these preset names.
# A preset may add `data: FILE` (passed as --data) and `train_args: [...]` (every variant's).
presets:
"""

STUDY_GUIDE = """\

# What the numbers are: `orch compare` ranks, flags and draws from this alone. The train
# script writes them into DIR/results.json under these names, through orchestrator.client
# (requirements.md, section 3). A metric is better `higher`, `lower` or `target` (closest to
# `target: VALUE`); the one with `rank: true` ranks the variants; `digits` and `label` are
# how it is shown. A reference row is a baseline the results carry beside the model's: a
# `floor` every model must beat (e.g. predicting the majority class) or a `ceiling` none
# should pass. Without study:, `orch compare` shows what the results hold, unranked.
"""

STUDY_EXAMPLE = """\
# study:
#   metrics:
#     - {name: accuracy, better: higher, rank: true, digits: 3, label: accuracy}
#     - {name: loss, better: lower, digits: 4}
#   references:
#     - {name: majority_class, role: floor, label: majority class}
#   notes:
#     - a line printed under the report's table
"""

VARIANTS_GUIDE = """\

# The variants. `orch spawn` gives each its branch (from base_ref) and a worktree at
# worktree_root/NAME; the folder must exist here. The gate is a pytest path `orch test-all`
# runs in the worktree before any training; train_module runs there with the worktree first
# on the import path, so each branch runs its own code. resources are per job: gpus 0 =
# always CPU, gpu_memory_gb lets small jobs share a GPU, cpu_threads null = an equal share of
# the cores. train_args are added to its train command; `presets: {NAME: {resources: {...},
# train_args: [...]}}` changes either at one preset. `enabled: false` keeps a variant out of
# `orch run` (`orch train NAME` still trains it).
variants:
"""

OPTIONAL = """\

# Optional. shared_jobs: jobs the variants need once per preset (e.g. a tokenizer), run as
# `python -m MODULE --preset P --output DIR ARGS` in the main checkout, cached by a hash of
# the command, the preset and the git tree of depends_on; DIR/ARTIFACT goes to the train of
# each of `variants` (all when empty) as `PASS_AS PATH`. inputs: files the variants need at
# some presets (a downloaded checkpoint), passed the same way. ray: README, "On a Ray cluster".
# shared_jobs:
#   - {name: vocab, module: tools.vocab, args: [], presets: [], depends_on: [tools/],
#      artifact: vocab.json, pass_as: --vocab, variants: []}
# inputs:
#   - {name: weights, path: checkpoints/base.pt, pass_as: --weights, presets: [], variants: []}
# ray: {address: "", max_retries: 1, cpu_fallback: false, gpu_memory_gb: 0, forward_env: []}
"""


def render_config(plans: list[VariantPlan], *, presets: list[str], base_ref: str,
                  metrics: list[MetricSpec], references: list[ReferenceSpec]) -> str:
    """config.yaml's text, with a comment on every key."""
    first, last = presets[0], presets[-1]
    lines = [HEADER,
             _key("base_ref", _scalar(base_ref), "new variant branches start here (orch spawn)"),
             _key("worktree_root", ".orch/worktrees", "one worktree per variant, kept out of git"),
             _key("default_preset", last, "what orch train and orch run use without --preset"),
             _key("gate_preset", first, "the gates run with it (ORCH_PRESET in their env)"),
             _key("grace_seconds", "10", "SIGTERM, then SIGKILL this much later, to stop a job"),
             PRESETS_GUIDE]
    for name in presets:
        what = {(True, True): "the gates' preset and the default",
                (True, False): "the gates' preset",
                (False, True): "the default for train and run"}.get((name == first,
                                                                      name == last), "")
        lines.append(f"  {name}:\n    description: {_scalar(what)}\n")
    lines.append(STUDY_GUIDE)
    if metrics:
        lines.append("study:\n  metrics:\n")
        for m in metrics:
            rank = ", rank: true" if m.rank else ""
            lines.append(f"    - {{name: {_scalar(m.name)}, better: {m.better}{rank}, "
                         f"digits: 3, label: {_scalar(m.name)}}}\n")
        lines.append("  references:" + ("\n" if references else " []\n"))
        for r in references:
            lines.append(f"    - {{name: {_scalar(r.name)}, role: {r.role}, "
                         f"label: {_scalar(r.name)}}}\n")
        lines.append("  notes: []  # lines printed under the report's table\n")
    else:
        lines.append(STUDY_EXAMPLE)
    lines.append(VARIANTS_GUIDE)
    lines.append("\n".join(
        f"  - name: {p.name}\n"
        f"    branch: {_scalar(p.branch)}\n"
        f"    folder: {_scalar(p.folder)}\n"
        f"    gate: {_scalar(p.gate)}\n"
        f"    train_module: {p.train_module}\n"
        "    resources: {gpus: 1, gpu_memory_gb: 4, cpu_threads: null}\n"
        "    train_args: []\n"
        "    enabled: true\n" for p in plans))
    lines.append(OPTIONAL)
    return "".join(lines)


def _key(key: str, value: str, comment: str) -> str:
    """``key: value`` with its comment in the column the rest of the file uses."""
    return f"{key}: {value}".ljust(32) + f" # {comment}\n"


_PLAIN = re.compile(r"[A-Za-z0-9_./+-][A-Za-z0-9_./@+ -]*")


def _scalar(text: str) -> str:
    """``text`` as a YAML scalar that reads back as the same string, plain when it can be."""
    import yaml

    if _PLAIN.fullmatch(text) and not text.endswith(" ") and \
            yaml.safe_load(f"{{k: {text}}}") == {"k": text}:
        return text
    return json.dumps(text)

