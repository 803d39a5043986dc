"""`orch init`: write a commented config.yaml for the variants of an existing git repository
(the work is ``orchestrator.scaffold``'s; this parses the options and prints)."""

from __future__ import annotations

import shlex

import typer

VariantsArg = typer.Argument(
    ..., metavar="NAME[=FOLDER]...", show_default=False,
    help="The variants: lowercase names (letters, digits, - and _), each optionally with its "
    "own folder (wide=src/wide).")
PrefixOpt = typer.Option("orch/", "--branch-prefix", metavar="PREFIX",
                         help="Each variant's branch is PREFIX + NAME.")
FolderOpt = typer.Option(
    "branches/{pkg}", "--folder", metavar="TEMPLATE", help="Each variant's folder, relative to "
    "the repo root: {name} is the variant's name, {pkg} the same with - as _ ('.' when all "
    "variants share the repo's code and differ by branch).")
GateOpt = typer.Option(
    "{folder}/tests", "--gate", metavar="TEMPLATE", help="Each variant's gate: the pytest "
    "path `orch test-all` runs in its worktree ({name}, {pkg}, {folder}).")
TrainOpt = typer.Option(
    None, "--train", metavar="TEMPLATE", show_default=False, help="Each variant's train "
    "entry, run as `python -m MODULE --preset P --output DIR ...`: a module (pkg.train) or its "
    "file (pkg/train.py) ({name}, {pkg}, {folder}). Default: the folder as a module, + .train.")
PresetOpt = typer.Option(
    None, "--preset", metavar="NAME", show_default=False, help="A preset name the train "
    "script knows (repeat; smallest first): the gates run the first, `orch train` and `orch "
    "run` the last. Default: micro, small.")
BaseRefOpt = typer.Option(None, "--base-ref", metavar="REF", show_default=False,
                          help="Where new variant branches start (default: the current "
                          "branch).")
MetricOpt = typer.Option(
    None, "--metric", metavar="NAME:higher|lower", show_default=False, help="A metric the "
    "train script writes into results.json (repeat); the first ranks the variants. Without "
    "one, study: is written commented out.")
ReferenceOpt = typer.Option(
    None, "--reference", metavar="NAME:floor|ceiling", show_default=False, help="A reference "
    "row the results carry beside the model's (repeat): a floor to beat or a ceiling.")
ForceOpt = typer.Option(False, "--force", help="Replace an existing config file (the old "
                        "one kept as FILE.bak).")

def init(
    variants: list[str] = VariantsArg,
    branch_prefix: str = PrefixOpt,
    folder: str = FolderOpt,
    gate: str = GateOpt,
    train: str | None = TrainOpt,
    presets: list[str] | None = PresetOpt,
    base_ref: str | None = BaseRefOpt,
    metrics: list[str] | None = MetricOpt,
    references: list[str] | None = ReferenceOpt,
    force: bool = ForceOpt,
) -> None:
    """Write orch's config (config.yaml, or `orch --config PATH init`) for these variants.

    Run it in your project's git repository once each variant's folder, gate and train
    module exist: it checks them, writes a commented file that `orch` loads as is, and prints
    the next command. An existing file is never overwritten without --force, which keeps the
    old one as FILE.bak.
    """
    from rich.markup import escape

    from orchestrator import ui
    from orchestrator.cli import config_option
    from orchestrator.config import parse_config
    from orchestrator.scaffold import (
        DEFAULT_PRESETS,
        check_names,
        commit_warnings,
        config_target,
        current_branch,
        overwrite_refused,
        parse_study,
        plan_variants,
        render_config,
        shown_path,
        write_config,
    )

    root, path = config_target(config_option())
    if path.exists() and not force:
        raise overwrite_refused(path)  # before any other check: the file comes first
    plans = plan_variants(root, variants, branch_prefix=branch_prefix, folder=folder,
                          gate=gate, train=train)
    ref = base_ref or current_branch(root)
    declared, rows = parse_study(metrics or [], references or [])
    text = render_config(plans, presets=check_names(presets or DEFAULT_PRESETS, "--preset"),
                         base_ref=ref, metrics=declared, references=rows)
    parse_config(text, root=root, filename=path.name, path=path)  # never write what fails
    for line in commit_warnings(root, ref, plans):
        ui.warn(line)
    backup = write_config(path, text, force=force)

    shown = shown_path(path)
    ui.write(f"wrote {escape(shown)}" + (f" (the old one kept as {escape(shown_path(backup))})"
                                         if backup else ""))
    table = ui.table(["variant", "branch", "gate", "train module"],  # folder: in the file
                     [(p.name, escape(p.branch), escape(p.gate), p.train_module)
                      for p in plans])
    for column in table.columns:
        column.overflow = "fold"  # paths whole, never cut short with an ellipsis
    ui.write(table)
    orch = "orch" if config_option() is None else f"orch --config {shlex.quote(shown)}"
    ui.write(f"next: `{orch} spawn` (a branch and a worktree per variant), then `{orch} "
             f"test-all` (every gate); `{orch} run` does both, then trains and compares",
             soft_wrap=True, markup=False)
