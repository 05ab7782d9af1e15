"""What every command shares: error handling, the common options, ``--set`` parsing.

Imports only typer, so command modules stay light; each command imports its
implementation inside its body. Exit codes: 0 success, 1 failure (one line ``error: ...`` on
stderr), 2 bad usage.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, NoReturn, Optional

import typer

Data = Annotated[list[str], typer.Option("--data", "-d", help="Input files, directories, globs or pyarrow URIs (CSV, JSON, JSONL, Parquet). Repeatable.")]
Labels = Annotated[Optional[str], typer.Option(help="Fixed label space: one tag a line, path or URI (data.labels_file).")]
Tags = Annotated[Optional[str], typer.Option(help="Tags file: JSON array of {tag, aliases, parents}, path or URI (data.tags_file).")]
ConfigFile = Annotated[Optional[Path], typer.Option("--config", help="Config file (JSON/YAML). Precedence: command line > this file > defaults.")]
Sets = Annotated[Optional[list[str]], typer.Option(
    "--set", metavar="KEY=VALUE", show_default=False,
    help="Any config field, dotted (model.dropout=0.2, model.filter_widths=1,2,3), typed by the field; "
         "repeatable; `tagging config` lists the fields.")]
Address = Annotated[Optional[str], typer.Option(help="Ray cluster address.", show_default="RAY_ADDRESS, else a local Ray")]
TrackingUri = Annotated[Optional[str], typer.Option(
    "--tracking-uri", envvar="MLFLOW_TRACKING_URI", metavar="URI",
    help="MLflow tracking URI: log this run there (sqlite:///mlflow.db, http://host:5000). Logging never fails the command.",
    show_default="MLFLOW_TRACKING_URI, else no tracking")]


def expected_errors() -> tuple[type[BaseException], ...]:
    """Failures whose message is the whole story (shown as its first line, without a type name)."""
    from tagging.artifact import ArtifactError
    from tagging.config import ConfigError
    from tagging.export import ExportError
    from tagging.labels import TagParseError
    from tagging.readers import InputError

    return (ArtifactError, ConfigError, ExportError, InputError, TagParseError, FileExistsError, FileNotFoundError, ValueError)


def fail(message: str, code: int = 1) -> NoReturn:
    """One line ``error: message`` on stderr, then exit ``code``."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def run_command(fn, *args, **kwargs):
    """Run a command body: known failures -> one line on stderr + exit 1; typer.BadParameter
    passes through to exit 2 (bad usage); anything else (Ray wraps worker errors in
    long messages) -> ``error: Type: last line`` + exit 1."""
    try:
        return fn(*args, **kwargs)
    except (typer.Exit, typer.Abort, typer.BadParameter, BrokenPipeError):  # typer handles these (exit 2; a closed pipe)
        raise
    except expected_errors() as exc:
        fail(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    except Exception as exc:  # noqa: BLE001 - the CLI's last word: one line, whatever failed
        reason = [line for line in str(exc).strip().splitlines() if line.strip()]
        fail(f"{type(exc).__name__}: {reason[-1] if reason else ''}")


def echo_json(obj: Any) -> None:
    """A result: one JSON line on stdout."""
    typer.echo(json.dumps(obj, default=str))


def parse_sets(items: list[str] | None) -> dict[str, str]:
    """``--set KEY=VALUE`` items as load_config overrides; a bad key or value is a usage error.

    Values stay strings here (load_config coerces them by the field, so ``none`` can reset an
    optional field); they are checked now so the error points at ``--set``."""
    from tagging.config import ConfigError, check_override

    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise typer.BadParameter(f"{item!r}: expected KEY=VALUE", param_hint="--set")
        try:
            check_override(key, value)
        except ConfigError as exc:
            raise typer.BadParameter(str(exc), param_hint="--set") from None
        out[key] = value
    return out


def config_overrides(flags: dict[str, Any], sets: list[str] | None) -> dict[str, Any]:
    """load_config overrides from a command's flags (dotted field -> value, None = not given)
    and its ``--set`` items; a field given both ways is a usage error."""
    given = parse_sets(sets)
    both = sorted(k for k, v in flags.items() if v is not None and k in given)
    if both:
        raise typer.BadParameter(f"{', '.join(both)}: given by its own option and by --set; give it once", param_hint="--set")
    return {**flags, **given}
