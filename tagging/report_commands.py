"""`tagging baselines`, `tagging report` and `tagging explain` (registered by tagging.cli).

Only typer is imported here; each command imports its implementation when it runs, so
`tagging --help` stays fast. Failures follow tagging.cli: one line on stderr, exit 1.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer


def register(app: typer.Typer) -> None:
    app.command("baselines")(baselines)
    app.command("report")(report)
    app.command("explain")(explain)


def _run(fn):
    from tagging.cli import _run as run

    return run(fn)


def _log(message: str) -> None:
    typer.echo(message, err=True)


def baselines(
    data: Annotated[list[str], typer.Option("--data", "-d", help="Labeled input files, directories, globs or URIs. Repeatable.")],
    out: Annotated[Path, typer.Option(help="Directory for baselines.json, baselines.md and run.json.")],
    labels: Annotated[Optional[str], typer.Option(help="Fixed label space: one tag a line, path or URI (as for `tagging train`).")] = None,
    tags: Annotated[Optional[str], typer.Option(help="Tags file (JSON array of {tag, aliases, parents}; path or URI): alias mapping and the rules.")] = None,
    model: Annotated[Optional[Path], typer.Option(help="Reuse this artifact's labels and split membership (splits.json).")] = None,
    config: Annotated[Optional[Path], typer.Option(help="Config file of the CNN run (its data settings and seed define the split); not used with --model.")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Split seed (as `tagging train --seed`); also seeds the random baselines.")] = None,
    min_tag_freq: Annotated[Optional[int], typer.Option(help="Without --labels: keep tags in at least N rows.")] = None,
    logreg: Annotated[bool, typer.Option("--logreg/--no-logreg", help="Also TF-IDF + logistic regression (slower).")] = False,
    c: Annotated[Optional[list[float]], typer.Option("--c", help="C values tried for the linear models (chosen on validation). Repeatable.", show_default="SVM 0.1 0.3 1 3; logreg 3 10 30")] = None,
) -> None:
    """Random, prior-random, rule-based and TF-IDF + linear baselines on the CNN's split and label space."""

    def body():
        from tagging.baselines import default_baselines, load_split_data, markdown_table, run_baselines, write_baselines
        from tagging.config import load_config

        overrides = {"data.labels_file": str(labels) if labels else None, "data.tags_file": str(tags) if tags else None,
                     "seed": seed, "data.min_tag_freq": min_tag_freq}
        if model is not None:
            from tagging.artifact import load_artifact
            from tagging.config import merge, to_dict

            base = to_dict(load_artifact(model).config)
            base["data"]["labels_file"] = None  # labels come from the artifact
            cfg = load_config(None, merge(base, overrides))
        else:
            cfg = load_config(config, overrides)
        split = load_split_data(data, cfg, str(model) if model else None)
        _log(f"[baselines] rows train/val/test {split.info['counts']}, {len(split.labels)} tags, split from {split.info['split_source']}")
        ladder = default_baselines(cfg.seed, cfg.threshold_min_support, logreg=logreg, c_grid=c)
        results = run_baselines(split, ladder)
        path = write_baselines(results, split, out)
        typer.echo(markdown_table(results), err=True)
        typer.echo(json.dumps({"baselines": str(path), "f1": {k: round(v["overall"]["f1"], 4) for k, v in results.items()}}))

    _run(body)


def report(
    model: Annotated[Path, typer.Option(help="Artifact directory.")],
    out: Annotated[Path, typer.Option(help="Directory for report.html and metrics.json.")],
    data: Annotated[Optional[list[str]], typer.Option("--data", "-d", help="Labeled data the model was trained on: its test ids (splits.json) are scored. Repeatable.")] = None,
    baselines: Annotated[Optional[Path], typer.Option(help="Output directory of `tagging baselines`, shown next to the model.")] = None,
    behavior: Annotated[bool, typer.Option("--behavior/--no-behavior", help="Run the behavioral checks and summarize them.")] = True,
    tags: Annotated[Optional[str], typer.Option(help="Tags file (aliases, parents); path or URI.", show_default="the training run's, if present")] = None,
) -> None:
    """Self-contained HTML evaluation report (metrics, baselines, curves, errors, slices, behavioral checks)."""

    def body():
        from tagging.report import build_report

        r = build_report(model, out, data=data, baselines_dir=baselines, behavior=behavior, tags_file=tags)
        summary = {"report": str(out / "report.html"), "metrics": str(out / "metrics.json"), "f1": round(r["overall"]["f1"], 4)}
        if "behavioral" in r:
            summary["behavioral"] = {k: r["behavioral"][k] for k in ("passed", "failed", "skipped")}
        typer.echo(json.dumps(summary))

    _run(body)


def explain(
    model: Annotated[Path, typer.Option(help="Artifact directory.")],
    text: Annotated[list[str], typer.Option(help="Text to explain. Repeatable.")],
    top_k: Annotated[int, typer.Option(help="N-grams shown per tag.")] = 5,
    tag: Annotated[Optional[list[str]], typer.Option(help="Explain these tags instead of the predicted ones. Repeatable.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON Lines instead of text.")] = False,
) -> None:
    """For each predicted tag, the character n-grams (max-pooled filter windows) that drove it."""

    def body():
        from tagging.explain import Explainer, format_explanation

        explainer = Explainer(str(model))
        for t in text:
            items = explainer.explain(t, top_k=top_k, tags=tag or None)
            typer.echo(json.dumps({"text": t, "tags": items}) if as_json else format_explanation(t, items))

    _run(body)
