"""`tagging score`, `tagging read-scores`, `tagging quantize` and `tagging bench-score` (composed into the app by tagging.cli;
`python -m jobs.score_nightly` runs `score`).

Light imports only; each command imports its implementation when it runs, so `tagging --help`
stays fast. Failures go through tagging.cli_support.run_command.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal, Optional

import typer

from tagging.cli_support import Address, Data, TrackingUri, echo_json, run_command


def score(
    model: Annotated[str, typer.Option(help="Artifact directory (from `tagging train`), or a registered model: models:/NAME@ALIAS or "
                                            "models:/NAME/VERSION (resolved to one version when the run plans; needs --tracking-uri).")],
    input: Annotated[list[str], typer.Option("--input", "-i", help="Input file, directory, glob or pyarrow URI (CSV, JSON Lines, JSON, Parquet). Repeatable; more may follow as arguments.")],
    output: Annotated[str, typer.Option(help="Output root (path or URI); results go to OUTPUT/date=DATE/.")],
    more_inputs: Annotated[Optional[list[str]], typer.Argument(metavar="[URI...]", help="More inputs.", show_default=False)] = None,
    date: Annotated[Optional[str], typer.Option(help="Partition date YYYY-MM-DD.", show_default="yesterday")] = None,
    actors: Annotated[Optional[int], typer.Option(help="Scoring actors.", show_default="4 per GPU (0.25 GPU each), else one per CPU")] = None,
    cpus_per_actor: Annotated[float, typer.Option(help="CPUs per actor (fractional leaves room for Ray's own processes); ONNX Runtime threads = round(this), at least 1.")] = 0.75,
    gpus_per_actor: Annotated[Optional[float], typer.Option(help="GPUs per actor.", show_default="0.25 if the cluster has GPUs")] = None,
    batch_size: Annotated[int, typer.Option(help="Texts per ONNX Runtime call (grouped by length).")] = 64,
    actor_start_timeout: Annotated[Optional[float], typer.Option(help="Seconds to wait for every scoring actor to start before work is handed out (then fail, naming the cause); 0: no wait.", show_default="600 when the inputs hold 1 MiB or more, else no wait")] = None,
    slice_rows: Annotated[int, typer.Option(help="Records an actor scores and stages at a time (its memory follows this).")] = 16_384,
    unit_rows: Annotated[int, typer.Option(help="A Parquet row group over this many rows is cut into row ranges of at most this many (resume granularity).")] = 65_536,
    unit_mb: Annotated[float, typer.Option(help="An uncompressed JSON Lines / CSV file over this many MiB is cut into byte ranges of about this size at line boundaries.")] = 4.0,
    min_units: Annotated[int, typer.Option(help="Cut smaller units (down to 4,096 rows / 256 KiB) where the inputs would give fewer than this, so every actor stays busy to the end (0: only --unit-rows / --unit-mb).")] = 64,
    precision: Annotated[Literal["fp32", "int8"], typer.Option(help="int8 needs `tagging quantize` (refused unless it passed its F1 gate).")] = "fp32",
    top_k: Annotated[Optional[int], typer.Option(help="Write only the K highest scores per row.", show_default="every tag")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Redo a date that already finished, or discard an unfinished run made with another model or inputs.")] = False,
    wait: Annotated[float, typer.Option("--wait", help="Seconds to wait for another run of the same date to finish (0: refuse at once, naming it).")] = 0.0,
    lease_ttl: Annotated[float, typer.Option(help="Object stores: seconds the date's lease lives unless renewed (a crashed run's date can be taken over after this).")] = 120.0,
    no_lease: Annotated[bool, typer.Option("--no-lease", help="Take no lease on the date (only if the scheduler never starts two runs of a date; needed for stores without conditional writes).")] = False,
    require_upstream_success: Annotated[bool, typer.Option("--require-upstream-success", help="Plan only once each input folder holds its own _SUCCESS (its writer finished); else fail naming the folder.")] = False,
    upstream_wait: Annotated[float, typer.Option("--upstream-wait", help="With --require-upstream-success: seconds to wait for the upstream _SUCCESS files (0: require them now).")] = 0.0,
    address: Address = None,
    tracking_uri: TrackingUri = None,
) -> None:
    """Tag texts in files with the ONNX model on Ray Data, exactly once per id, into OUTPUT/date=DATE/.

    A killed run resumes when rerun with the same arguments (committed units are kept); rerunning a finished date does nothing unless --overwrite
    (exit 3 with status inputs_changed if its inputs changed since). One run per date: a second one is refused (or waits, --wait).
    """

    def body():
        from serve_batch.faults import FaultPlan
        from serve_batch.job import ScoreOptions, run_score, yesterday
        from tagging.tracking import tracking_uri as uri

        opts = ScoreOptions(model=str(model), inputs=tuple(list(input) + list(more_inputs or [])), output=output,
                            date=date or yesterday(), actors=actors, cpus_per_actor=cpus_per_actor,
                            gpus_per_actor=gpus_per_actor, batch_size=batch_size, actor_start_s=actor_start_timeout, slice_rows=slice_rows, unit_rows=unit_rows,
                            unit_mb=unit_mb, min_units=min_units, precision=precision, top_k=top_k,
                            overwrite=overwrite, address=address, wait_s=wait, lease_ttl_s=lease_ttl, lease=not no_lease,
                            require_upstream_success=require_upstream_success, upstream_wait_s=upstream_wait,
                            fault=FaultPlan.from_env(), tracking_uri=uri(tracking_uri))
        summary = run_score(opts)
        keys = ("status", "output", "rows_read", "rows_scored", "rows_rejected", "throughput_docs_per_s", "changes")
        out = {k: summary.get(k) for k in keys if k in summary or k != "changes"}
        echo_json({**out, "model_version": summary.get("model", {}).get("version"),
                   "drift_flagged": (summary.get("drift") or {}).get("flagged")})
        if summary.get("status") == "inputs_changed":
            raise typer.Exit(3)  # a finished date whose inputs changed since: not an error of this run, not success

    run_command(body)


def quantize(
    model: Annotated[Path, typer.Option(help="Artifact directory; the int8 model is added to it.")],
    data: Data,
    calibration_rows: Annotated[int, typer.Option(help="Training rows used to calibrate activation ranges.")] = 512,
    max_drop: Annotated[float, typer.Option(help="Refuse int8 if its validation weighted F1 is more than this below fp32.")] = 0.01,
) -> None:
    """Static int8 quantization (QDQ, calibrated on training texts; --data is the artifact's training data), gated on validation F1."""

    def body():
        from tagging.quantize import quantize_artifact

        entry = quantize_artifact(str(model), data, calibration_rows=calibration_rows, max_drop=max_drop)
        echo_json(entry)

    run_command(body)


def bench_score(
    model: Annotated[Path, typer.Option(help="Artifact directory (with an int8 model for the int8 columns).")],
    out: Annotated[Path, typer.Option(help="Write the measurements here (JSON).")] = Path("out/bench_score.json"),
    rows: Annotated[int, typer.Option(help="N: rows of the throughput runs; RSS is also measured at N x --scale.")] = 200_000,
    scale: Annotated[int, typer.Option(help="Multiplier of the second RSS run (at least 2).")] = 10,
    unit_rows: Annotated[int, typer.Option(help="Rows per Parquet row group (one work unit).")] = 20_000,
    batch_size: Annotated[int, typer.Option(help="Texts per ONNX Runtime call, ceiling and pipeline alike.")] = 64,
    actors: Annotated[Optional[int], typer.Option(help="Pipeline actors.", show_default="one per CPU")] = None,
    cpus_per_actor: Annotated[float, typer.Option(help="Pipeline CPUs per actor.")] = 0.75,
    rss_precision: Annotated[Optional[str], typer.Option(help="Precision of the N and N x scale RSS runs.", show_default="int8 if accepted, else fp32")] = None,
    work_dir: Annotated[Optional[Path], typer.Option(help="Where generated data and outputs go.", show_default="a temporary directory")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the generated rows.")] = 7,
    ceiling_repeats: Annotated[int, typer.Option(help="Runs of each single-process ceiling; the best is the ceiling.")] = 2,
    layout: Annotated[Optional[list[str]], typer.Option(help="Measure input layouts instead (repeatable, or 'all'): parquet-big, parquet-small, jsonl, jsonl-gz, csv; each at N and N x --scale rows, --rss-precision.", show_default=False)] = None,
    dedup_ids: Annotated[int, typer.Option(help="With --layout: also the duplicate-id pass's driver memory over this many ids (0: skip).")] = 0,
    compare: Annotated[Optional[list[str]], typer.Option(help="Measure these artifacts side by side with --model instead (repeatable): each one's int8 pipeline docs/s (fp32 if it has no int8) and ceiling on the same rows, ratios against --model.", show_default=False)] = None,
    linear_data: Annotated[Optional[list[str]], typer.Option(help="With --compare: also TF-IDF + LinearSVC fit on --model's train split of this data (its training data), predicting the same texts on the same cores.", show_default=False)] = None,
) -> None:
    """Throughput of the raw ONNX Runtime ceiling vs the full pipeline, fp32 vs int8, and peak RSS at N and 10N rows.

    With --layout: the same per input layout (Parquet with one big or small row groups, one big JSON Lines file, gzipped, CSV)."""

    def body():
        from serve_batch.bench import LAYOUTS, bench_layouts
        from serve_batch.bench import bench_score as run

        if compare:
            from serve_batch.bench import bench_models

            result = bench_models([str(model), *compare], rows=rows, unit_rows=unit_rows, batch_size=batch_size, actors=actors,
                                  cpus_per_actor=cpus_per_actor, linear_data=linear_data,
                                  work_dir=str(work_dir) if work_dir else None, seed=seed)
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(result, indent=1) + "\n")
            typer.echo(result["table"])
            return
        if layout:
            names = list(LAYOUTS) if "all" in layout else [n for item in layout for n in item.split(",") if n]
            bad = [n for n in names if n not in LAYOUTS]
            if bad:
                raise typer.BadParameter(f"{bad[0]!r}: expected one of {', '.join(LAYOUTS)} or all", param_hint="--layout")
            result = bench_layouts(str(model), names, rows=rows, scale=scale, unit_rows=unit_rows, batch_size=batch_size,
                                   actors=actors, cpus_per_actor=cpus_per_actor, precision=rss_precision,
                                   work_dir=str(work_dir) if work_dir else None, seed=seed,
                                   ceiling_repeats=ceiling_repeats, dedup_ids=dedup_ids)
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(result, indent=1) + "\n")
            typer.echo(result["table"])
            return
        result = run(str(model), rows=rows, scale=scale, unit_rows=unit_rows, batch_size=batch_size, actors=actors,
                     cpus_per_actor=cpus_per_actor, rss_precision=rss_precision,
                     work_dir=str(work_dir) if work_dir else None, seed=seed, ceiling_repeats=ceiling_repeats)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=1) + "\n")
        typer.echo(result["table"])

    run_command(body)


def read_scores(
    output: Annotated[str, typer.Argument(help="Output root of `tagging score` (path or URI).")],
    date: Annotated[Optional[str], typer.Option(help="Date YYYY-MM-DD (fails unless it is finished).", show_default="every finished date")] = None,
    to: Annotated[Optional[str], typer.Option(help="Write the rows to this Parquet file (path or URI) instead of JSON Lines on stdout.")] = None,
    rejects: Annotated[bool, typer.Option("--rejects", help="The rejected records instead of the scored rows.")] = False,
    list_files: Annotated[bool, typer.Option("--list-files", help="Print the committed files (one URI a line) instead of rows, e.g. for DuckDB.")] = False,
) -> None:
    """Read exactly the files a finished date's _SUCCESS lists (never half a night)."""

    def body():
        from tagging.scores import committed_files, finished_dates, read_scores as read

        if list_files:
            scheme = output.split("://", 1)[0] + "://" if "://" in output else ""
            for d in [date] if date else finished_dates(output):
                for path in committed_files(output, d, rejects=rejects):
                    typer.echo(scheme + path)
            return
        table = read(output, date, rejects=rejects, verify=True)
        if to:
            import pyarrow.parquet as pq

            from tagging.readers import resolve_filesystem

            fs, path = resolve_filesystem(to)
            pq.write_table(table, path, filesystem=fs)
            echo_json({"rows": table.num_rows, "to": to})
            return
        for row in table.to_pylist():
            if isinstance(row.get("scores"), list):
                row["scores"] = dict(row["scores"])
            typer.echo(json.dumps(row, default=str))

    run_command(body)


COMMANDS = {"score": score, "read-scores": read_scores, "quantize": quantize, "bench-score": bench_score}
