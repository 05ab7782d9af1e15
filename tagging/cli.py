"""The `tagging` command line: one Typer app composed of the command modules below.

    tagging.commands         train, config, evaluate, register, predict, synth, bench-train
    tagging.report_commands  baselines, report, explain
    serve_batch.commands     score, quantize, bench-score
    tune.commands            tune

Each command module imports only typer and tagging.cli_support (shared options and error
handling); implementations are imported when a command runs, so `tagging --help` is fast.
The job entrypoints (jobs/*.py) run these same commands through ``run_job``.
Exit codes: 0 success, 1 failure (one line `error: ...` on stderr), 2 bad usage.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from serve_batch import commands as scoring
from tagging import commands as core
from tagging import report_commands as reports
from tune import commands as tuning

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Train, tune, evaluate and batch-score a multi-label char-CNN text tagger on Ray.")

for _module in (core, reports, scoring, tuning):
    for _name, _fn in _module.COMMANDS.items():
        app.command(_name)(_fn)


@app.callback()
def _setup(
    verbose: Annotated[int, typer.Option("--verbose", "-v", count=True, help="More log lines on stderr (debug).")] = 0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only warnings and errors on stderr.")] = False,
) -> None:
    from tagging.logs import setup_logging

    setup_logging(-1 if quiet else verbose)


def run_job(command: str, argv: list[str] | None = None, prog_name: str | None = None) -> int:
    """Run the command ``command`` on ``argv`` (default sys.argv[1:]) and return its exit code:
    what the `python -m jobs.<name>` entrypoints do, so their options are the command's."""
    from tagging.logs import setup_logging

    setup_logging()
    try:
        typer.main.get_command(app).commands[command].main(sys.argv[1:] if argv is None else argv, prog_name=prog_name)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return 0


if __name__ == "__main__":  # python -m tagging.cli
    sys.exit(app())
