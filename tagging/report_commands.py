"""`tagging baselines`, `tagging report` and `tagging explain` (composed into the app by tagging.cli).

Light imports only; each command imports its implementation when it runs, so `tagging --help`
stays fast. Failures go through tagging.cli_support.run_command.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated, Optional

import typer

from tagging.cli_support import Data, Labels, Sets, Tags, config_overrides, echo_json, run_command

logger = logging.getLogger(__name__)


def baselines(
    data: Data,
    out: Annotated[Path, typer.Option(help="Directory for baselines.json, baselines.md and run.json.")],
    labels: Labels = None,
    tags: Tags = None,
    model: Annotated[Optional[Path], typer.Option(help="Reuse this artifact's labels and split membership (splits.json).")] = None,
    config: Annotated[Optional[Path], typer.Option(help="Config file of the CNN run (its data settings and seed define the split); not used with --model.")] = None,
    sets: Sets = None,
    seed: Annotated[Optional[int], typer.Option(help="Split seed (as `tagging train --seed`); also seeds the random baselines.")] = None,
    min_tag_freq: Annotated[Optional[int], typer.Option(help="Without --labels: keep tags in at least N rows.")] = None,
    logreg: Annotated[bool, typer.Option("--logreg/--no-logreg", help="Also TF-IDF + logistic regression (slower).")] = False,
    c: Annotated[Optional[list[float]], typer.Option("--c", help="C values tried for the linear models (chosen on validation). Repeatable.", show_default="SVM 0.1 0.3 1 3; logreg 3 10 30")] = None,
) -> None:
    """Random, prior-random, rule-based and TF-IDF + linear baselines on the CNN's split and label space."""

    def body():
        from tagging.baselines import default_baselines, load_split_data, markdown_table, run_baselines, write_baselines
        from tagging.config import load_config

        overrides = config_overrides({"data.labels_file": labels, "data.tags_file": tags, "seed": seed,
                                      "data.min_tag_freq": min_tag_freq}, sets)
        if model is not None:
            from tagging.artifact import load_artifact
            from tagging.config import merge, to_dict

            base = to_dict(load_artifact(model).config)
            base["data"]["labels_file"] = None  # labels come from the artifact
            cfg = load_config(None, merge(base, overrides))
        else:
            cfg = load_config(config, overrides)
        split = load_split_data(data, cfg, str(model) if model else None)
        logger.info(f"rows train/val/test {split.info['counts']}, {len(split.labels)} tags, split from {split.info['split_source']}")
        ladder = default_baselines(cfg.seed, cfg.threshold_min_support, logreg=logreg, c_grid=c)
        results = run_baselines(split, ladder)
        path = write_baselines(results, split, out)
        typer.echo(markdown_table(results), err=True)
        echo_json({"baselines": str(path), "f1": {k: round(v["overall"]["f1"], 4) for k, v in results.items()}})

    run_command(body)


def report(
    model: Annotated[Optional[Path], typer.Option(help="Artifact directory (the evaluation report).")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Directory for report.html and metrics.json (with --scores: nights.md and nights.json).")] = None,
    data: Annotated[Optional[list[str]], typer.Option("--data", "-d", help="Labeled data the model was trained on: its test ids (splits.json) are scored. Repeatable.")] = None,
    baselines: Annotated[Optional[Path], typer.Option(help="Output directory of `tagging baselines`, shown next to the model.")] = None,
    behavior: Annotated[bool, typer.Option("--behavior/--no-behavior", help="Run the behavioral checks and summarize them.")] = True,
    tags: Annotated[Optional[str], typer.Option(help="Tags file (aliases, parents); path or URI.", show_default="the training run's, if present")] = None,
    scores: Annotated[Optional[str], typer.Option(help="Instead: the last nights of this `tagging score` output (path or URI) side by side: "
                                                       "accounting, rejects, throughput, tag rates and drift flags.")] = None,
    last: Annotated[int, typer.Option(help="With --scores: how many finished nights (newest last).")] = 7,
) -> None:
    """Self-contained HTML evaluation report (metrics, baselines, curves, errors, slices, behavioral checks),
    or with --scores the last nights side by side (a Markdown table on stdout)."""

    def body():
        if scores is not None:
            from tagging.scores import finished_dates, nights_table, read_summary

            nights = [s for s in (read_summary(scores, d) for d in finished_dates(scores)[-last:]) if s]
            if not nights:
                raise ValueError(f"{scores}: no finished night (no date=*/_SUCCESS)")
            table = nights_table(nights)
            typer.echo(table, nl=False)
            if out:
                out.mkdir(parents=True, exist_ok=True)
                (out / "nights.md").write_text(table)
                (out / "nights.json").write_text(json.dumps(nights, indent=1, default=str) + "\n")
            return
        if model is None or out is None:
            raise typer.BadParameter("--model and --out are required (or --scores for the nightly report)")
        from tagging.report import build_report

        r = build_report(model, out, data=data, baselines_dir=baselines, behavior=behavior, tags_file=tags)
        summary = {"report": str(out / "report.html"), "metrics": str(out / "metrics.json"), "f1": round(r["overall"]["f1"], 4)}
        if "behavioral" in r:
            summary["behavioral"] = {k: r["behavioral"][k] for k in ("passed", "failed", "skipped")}
        echo_json(summary)

    run_command(body)


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

    run_command(body)


COMMANDS = {"baselines": baselines, "report": report, "explain": explain}
