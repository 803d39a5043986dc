"""Options that several commands share, declared once so they read the same everywhere."""

from __future__ import annotations

import typer

PresetOpt = typer.Option(None, "--preset", "-p", help="Preset (default: default_preset).")
SeedsOpt = typer.Option("1", "--seeds", "-n", metavar="N|S,S,...", help="Seeds per variant: a "
                        "count N (seeds 0..N-1) or a list (0,3,7; one seed as 7,).")
SetOpt = typer.Option(None, "--set", "-s", metavar="KEY=VALUE", help="Override a field of the "
                      "variants' config by its dotted name, e.g. -s study.train.lr=3e-4 "
                      "(repeatable). Typed by the variant against its config; a key it lacks "
                      "fails that job at once with exit 2 and the nearest names.")
DryRunOpt = typer.Option(False, "--dry-run", help="Print the plan without running anything: "
                         "each job's command, device, planned memory, which shared artifacts "
                         "are cached and what would be resumed.")
RunJsonOpt = typer.Option(False, "--json", help="Print the final run state (with --dry-run: "
                          "the plan) as JSON.")
LiveOpt = typer.Option(None, "--live/--plain", help="Live table or plain lines (default: live "
                       "in a terminal).", show_default=False)
BackendOpt = typer.Option("local", "--backend", help="Where jobs run: local (subprocesses "
                          "here) or ray (a Ray cluster; needs the ray extra).")
AddressOpt = typer.Option(None, "--address", help="Ray cluster address, e.g. 10.0.0.5:6379 "
                          "(default: ray.address in config.yaml, else RAY_ADDRESS).")
RehearseOpt = typer.Option(False, "--rehearse", help="Rehearse the preset instead: every job "
                           "for a step or two at its true shapes, measured at micro-batches 1 "
                           "and 2, then plan.json (micro-batch, memory and GPU per job).")
PlanGpusOpt = typer.Option(None, "--plan-gpus", help="With --rehearse: the GPUs to plan for, "
                           "as index:MiB pairs (e.g. 0:81920,1:24576); default: this machine's.")
