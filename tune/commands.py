"""`tagging tune` (composed into the app by tagging.cli; light imports only)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Optional

import typer

from tagging.cli_support import Address, Data, Labels, Sets, Tags, TrackingUri, config_overrides, echo_json, run_command


def tune(
    data: Data,
    out: Annotated[Path, typer.Option(help="Output directory: leaderboard, Pareto plot, best config, artifact.")] = Path("out/tune"),
    labels: Labels = None,
    tags: Tags = None,
    config: Annotated[Optional[Path], typer.Option(help="Base config file; the search overrides its fields.")] = None,
    sets: Sets = None,
    trials: Annotated[int, typer.Option(help="Number of trials (>= 1).")] = 12,
    max_epochs: Annotated[int, typer.Option(help="Epochs per trial at most (ASHA stops weak trials sooner).")] = 40,
    workers_per_trial: Annotated[int, typer.Option(help="Ray Train workers per trial (>= 1).")] = 1,
    cpus_per_worker: Annotated[float, typer.Option(help="CPUs per worker.")] = 0.9,
    max_concurrent: Annotated[int, typer.Option(help="Trials at once (>= 1).")] = 2,
    search: Annotated[Literal["random", "optuna"], typer.Option(help="Search algorithm.")] = "random",
    space: Annotated[Optional[Path], typer.Option(help="Search space file (JSON/YAML) overriding the defaults.")] = None,
    grace_period: Annotated[Optional[int], typer.Option(
        help="ASHA: epochs before a trial can be stopped (1..--max-epochs; past the cosine warm-up: a warming-up trial looks weak).",
        show_default="max-epochs / 4, between 1 and 10")] = None,
    include_base: Annotated[bool, typer.Option("--include-base/--no-include-base", help="Evaluate the base config (the defaults, or --config) as the first trial.")] = True,
    measure_cost: Annotated[bool, typer.Option("--measure-cost/--no-measure-cost", help="Time each trial's ONNX scoring cost.")] = True,
    ensemble: Annotated[Optional[int], typer.Option(help="The tuned artifact: the best trial plus K-1 more members of its config (seeds seed+1..), averaged; 1 = the best trial alone.", show_default="the config's model.ensemble")] = None,
    teacher: Annotated[Optional[Path], typer.Option(help="Tune distillation students of this teacher artifact (its config is the base; --data must be its training data).")] = None,
    address: Address = None,
    tracking_uri: TrackingUri = None,
) -> None:
    """Search hyperparameters (Ray Tune + Ray Train, ASHA) and the threshold policy; write the tuned artifact.

    With --teacher every trial is a student distilled from that artifact (tagging distill), e.g. to find a cheaper student.
    """

    def body():
        from tagging.config import load_config
        from tune.search import check_tune_options, run_tune

        options = dict(trials=trials, max_epochs=max_epochs, workers_per_trial=workers_per_trial, cpus_per_worker=cpus_per_worker,
                       max_concurrent=max_concurrent, search=search, grace_period=grace_period)
        try:
            check_tune_options(**options)
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from None
        teacher_config = None
        if teacher:
            from tagging.artifact import load_artifact
            from tagging.config import to_dict

            teacher_config = to_dict(load_artifact(teacher).config)
        base = load_config(config, config_overrides({"data.labels_file": labels, "data.tags_file": tags, "model.ensemble": ensemble}, sets),
                           base=teacher_config)
        import datetime as dt

        from tagging.tracking import start_run, tracking_uri as uri

        with start_run("tune", uri(tracking_uri), f"tune-{dt.datetime.now():%Y%m%d-%H%M%S}") as tracked:
            summary = run_tune(base, data, str(out), space_path=str(space) if space else None, include_base=include_base,
                               measure_cost=measure_cost, address=address, teacher=str(teacher) if teacher else None,
                               tracked=tracked, **options)
        echo_json(summary)

    run_command(body)


COMMANDS = {"tune": tune}
