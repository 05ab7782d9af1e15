"""The `tagging` command line (Typer). Heavy imports happen inside commands, so --help is fast.

Exit codes: 0 success, 1 failure (one-line reason on stderr), 2 bad usage.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Train, tune, evaluate and batch-score a multi-label char-CNN text tagger on Ray.")

EXPECTED_ERRORS: tuple[type[BaseException], ...] = ()


def _expected_errors() -> tuple[type[BaseException], ...]:
    from tagging.artifact import ArtifactError
    from tagging.config import ConfigError
    from tagging.export import ExportError
    from tagging.labels import TagParseError
    from tagging.readers import InputError

    return (ArtifactError, ConfigError, ExportError, InputError, TagParseError, FileExistsError, FileNotFoundError, ValueError)


def fail(message: str, code: int = 1) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _run(fn, *args, **kwargs):
    """Run a command body; known failures become one line on stderr and exit 1."""
    try:
        return fn(*args, **kwargs)
    except typer.Exit:
        raise
    except _expected_errors() as exc:
        fail(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    except Exception as exc:  # Ray wraps worker errors; keep the reason to one line
        reason = str(exc).strip().splitlines()
        fail(f"{type(exc).__name__}: {reason[-1] if reason else ''}")


Data = Annotated[list[str], typer.Option("--data", "-d", help="Input files, directories, globs or pyarrow URIs (CSV, JSON, JSONL, Parquet). Repeatable.")]


@app.command()
def train(
    data: Data,
    out: Annotated[Path, typer.Option(help="Artifact directory to create (must not exist or be empty).")] = Path("artifacts/model"),
    config: Annotated[Optional[Path], typer.Option(help="Config file (JSON/YAML); CLI options override it.")] = None,
    labels: Annotated[Optional[str], typer.Option(help="Fixed label space: one tag a line (path or URI).")] = None,
    tags: Annotated[Optional[str], typer.Option(help="Tags file: JSON array of {tag, aliases, parents} (path or URI).")] = None,
    expand_parents: Annotated[Optional[bool], typer.Option("--expand-parents/--no-expand-parents", help="Add parent tags from --tags.")] = None,
    min_tag_freq: Annotated[Optional[int], typer.Option(help="Without --labels: keep tags in at least N rows.")] = None,
    workers: Annotated[Optional[int], typer.Option(help="Ray Train workers (DDP).")] = None,
    cpus_per_worker: Annotated[Optional[float], typer.Option(help="CPUs per worker (fractional allowed).")] = None,
    gpu: Annotated[Optional[bool], typer.Option("--gpu/--no-gpu", help="One GPU per worker, NCCL, mixed precision.")] = None,
    max_epochs: Annotated[Optional[int], typer.Option(help="Maximum epochs.")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="Global batch size (split across workers).")] = None,
    lr: Annotated[Optional[float], typer.Option(help="Learning rate.")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Seed for split, init and batch order.")] = None,
    embedding_dim: Annotated[Optional[int], typer.Option(help="Character embedding size.")] = None,
    num_filters: Annotated[Optional[int], typer.Option(help="Filters per width.")] = None,
    filter_widths: Annotated[Optional[str], typer.Option(help="Comma-separated widths, e.g. 1,2,3,4,5,6.")] = None,
    hidden_dim: Annotated[Optional[int], typer.Option(help="Hidden layer size.")] = None,
    dropout: Annotated[Optional[float], typer.Option(help="Dropout.")] = None,
    max_length: Annotated[Optional[int], typer.Option(help="Max characters per text.")] = None,
    imbalance: Annotated[Optional[str], typer.Option(help="pos_weight | inverse_count | none.")] = None,
    lr_schedule: Annotated[Optional[str], typer.Option(help="cosine (warm-up, then decay to 0 at --max-epochs) | plateau.")] = None,
    concat_rate: Annotated[Optional[float], typer.Option(help="Concatenation augmentation: extra joined rows per row and epoch (0 = off).")] = None,
    alias_examples: Annotated[Optional[bool], typer.Option("--alias-examples/--no-alias-examples", help="Also train on the tags file's names (needs --tags).", show_default="on with --tags")] = None,
    ensemble: Annotated[Optional[int], typer.Option(help="Train K models (seeds seed..seed+K-1) and export their averaged probabilities as one model (K x scoring cost).")] = None,
    run_name: Annotated[Optional[str], typer.Option(help="Run name; rerun with the same name to resume a killed run.")] = None,
    storage: Annotated[str, typer.Option(help="Checkpoint storage path or URI.")] = "runs",
    address: Annotated[Optional[str], typer.Option(help="Ray cluster address; default: start a local Ray.")] = None,
) -> None:
    """Train the char-CNN data-parallel with Ray Train and write a versioned artifact (with ONNX)."""
    from tagging.config import load_config

    overrides = {
        "data.labels_file": str(labels) if labels else None, "data.tags_file": str(tags) if tags else None,
        "data.expand_parents": expand_parents, "data.min_tag_freq": min_tag_freq, "workers": workers,
        "cpus_per_worker": cpus_per_worker, "use_gpu": gpu, "max_epochs": max_epochs, "batch_size": batch_size,
        "learning_rate": lr, "seed": seed, "model.embedding_dim": embedding_dim, "model.num_filters": num_filters,
        "model.filter_widths": filter_widths, "model.hidden_dim": hidden_dim, "model.dropout": dropout,
        "model.max_length": max_length, "imbalance": imbalance, "lr_schedule": lr_schedule, "concat_rate": concat_rate,
        "alias_examples": alias_examples, "model.ensemble": ensemble,
    }

    def body():
        from tagging.dist.training import run_training

        cfg = load_config(config, overrides)
        art = run_training(cfg, data, str(out), run_name=run_name, storage=storage, address=address)
        typer.echo(json.dumps({"artifact": str(art.path), "test": art.manifest["metrics"]["overall"]}))

    _run(body)


@app.command()
def evaluate(
    model: Annotated[Path, typer.Option(help="Artifact directory.")],
    data: Data,
    out: Annotated[Path, typer.Option(help="Directory for metrics.json.")] = Path("out/eval"),
) -> None:
    """Evaluate an artifact on labeled data with its own label space and thresholds."""

    def body():
        from tagging.evaluation import evaluate_files

        metrics = evaluate_files(str(model), data)
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
        typer.echo(json.dumps({"metrics": str(out / "metrics.json"), "overall": metrics["overall"], "accounting": metrics["accounting"]}))

    _run(body)


@app.command()
def predict(
    model: Annotated[Path, typer.Option(help="Artifact directory.")],
    text: Annotated[list[str], typer.Option(help="Text to tag. Repeatable.")],
    top: Annotated[int, typer.Option(help="Also show this many highest-scoring tags.")] = 5,
) -> None:
    """Tag texts: prints the predicted tags with their probabilities (JSON Lines)."""

    def body():
        from tagging.evaluation import predict_texts_from_artifact

        for item in predict_texts_from_artifact(str(model), text, top=top):
            typer.echo(json.dumps(item))

    _run(body)


@app.command()
def synth(
    rows: Annotated[int, typer.Option(help="Rows to generate.")] = 5000,
    out: Annotated[str, typer.Option(help="Output file or URI (.parquet, .csv, .jsonl, .json).")] = "data/synth.parquet",
    seed: Annotated[int, typer.Option(help="Seed.")] = 0,
    bad_fraction: Annotated[float, typer.Option(help="Fraction of rows replaced by bad rows of every kind.")] = 0.0,
) -> None:
    """Write the built-in synthetic corpus (id, text, tags)."""

    def body():
        from tagging.synth import generate_corpus, write_corpus

        df = generate_corpus(rows, seed=seed, bad_fraction=bad_fraction)
        write_corpus(df, out)
        typer.echo(json.dumps({"rows": len(df), "out": out}))

    _run(body)


@app.command("bench-train")
def bench_train(
    data: Data,
    labels: Annotated[Optional[str], typer.Option(help="Fixed label space file (path or URI).")] = None,
    epochs: Annotated[int, typer.Option(help="Timed epochs per side (after one warm-up epoch); medians are compared.")] = 4,
    workers: Annotated[int, typer.Option(help="Ray Train workers.")] = 2,
    out: Annotated[Optional[Path], typer.Option(help="Write the measurements as JSON here.")] = None,
) -> None:
    """Samples/s of N-worker Ray Train vs a plain single-process PyTorch loop, same model, data and cores."""

    def body():
        from tagging.dist.bench_train import bench_train as run

        result = run(data, labels, epochs=epochs, workers=workers)
        if out:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(result, indent=1) + "\n")

    _run(body)


def _register_extensions() -> None:
    """Commands implemented outside the core package register themselves here (light imports only)."""
    import importlib

    for module in ("serve_batch.commands", "tune.commands", "tagging.report_commands"):
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name not in (module, module.split(".")[0]):
                raise
            continue
        mod.register(app)


_register_extensions()


def main() -> None:  # pragma: no cover - console entry
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
