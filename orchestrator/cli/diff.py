"""orch diff: how two variants differ, in their code, their params and their numbers."""

from __future__ import annotations

from typing import Annotated

import typer

from orchestrator.cli import complete_variants


def diff(
    a: Annotated[str, typer.Argument(
        help="A variant, a job (e.g. baseline-s1), or RUN_ID:VARIANT.",
        autocompletion=complete_variants)],
    b: Annotated[str, typer.Argument(
        help="The variant, job or RUN_ID:VARIANT to set against A.",
        autocompletion=complete_variants)],
    run: Annotated[str | None, typer.Option(
        "--run", help="Run id for names without one (default: the newest run with "
        "results).")] = None,
    json_output: Annotated[bool, typer.Option(
        "--json", help="Print everything, the patches included, as JSON.")] = False,
    stat: Annotated[bool, typer.Option(
        "--stat", help="The tables only, without the patches.")] = False,
    no_pager: Annotated[bool, typer.Option(
        "--no-pager", help="Print straight to the terminal, not through a pager.")] = False,
) -> None:
    """Show how B differs from A: code, params and metrics.

    The code diff between the commits their jobs recorded (and between the variants' folders
    when the config puts them in different ones), with uncommitted changes a job ran with;
    the recorded config's keys that differ; each declared metric's difference with its 95%
    paired interval and verdict, as `orch compare` computes them. In a terminal the patch is
    paged.
    """
    from orchestrator import ui
    from orchestrator.cli import optional_config, state_dir
    from orchestrator.diff import diff_variants

    # The config names each variant's branch and folder; a run away from its repo goes without.
    cfg = optional_config()
    pair = diff_variants(
        state_dir(), a, b, run_id=run,
        study=cfg.study.spec() if cfg and cfg.study else None,
        repo=cfg.root if cfg else None,
        branches={v.name: v.branch for v in cfg.variants} if cfg else None,
        folders=cfg.variant_folders() if cfg else None,
    )
    if json_output:
        ui.write_json(pair.to_dict())
        return
    ui.page(ui.pair_view(pair, patch=not stat), pager=not no_pager)
