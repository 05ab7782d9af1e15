"""`tagging tune` (registered into the main Typer app; light imports only)."""


import json
from pathlib import Path
from typing import Annotated, Optional

import typer


def register(app: typer.Typer) -> None:
    from tagging.cli import Data, _run

    @app.command()
    def tune(
        data: Data,
        out: Annotated[Path, typer.Option(help="Output directory: leaderboard, Pareto plot, best config, artifact.")] = Path("out/tune"),
        labels: Annotated[Optional[str], typer.Option(help="Fixed label space: one tag a line (path or URI).")] = None,
        tags: Annotated[Optional[str], typer.Option(help="Tags file: JSON array of {tag, aliases, parents} (path or URI).")] = None,
        config: Annotated[Optional[Path], typer.Option(help="Base config file; the search overrides its fields.")] = None,
        trials: Annotated[int, typer.Option(help="Number of trials.")] = 12,
        max_epochs: Annotated[int, typer.Option(help="Epochs per trial at most (ASHA stops weak trials sooner).")] = 40,
        workers_per_trial: Annotated[int, typer.Option(help="Ray Train workers per trial.")] = 1,
        cpus_per_worker: Annotated[float, typer.Option(help="CPUs per worker.")] = 0.9,
        max_concurrent: Annotated[int, typer.Option(help="Trials at once.")] = 2,
        search: Annotated[str, typer.Option(help="random | optuna.")] = "random",
        space: Annotated[Optional[Path], typer.Option(help="Search space file (JSON/YAML) overriding the defaults.")] = None,
        grace_period: Annotated[int, typer.Option(help="ASHA: epochs before a trial can be stopped (past the cosine warm-up: a warming-up trial looks weak).")] = 10,
        include_base: Annotated[bool, typer.Option("--include-base/--no-include-base", help="Evaluate the base config (the defaults, or --config) as the first trial.")] = True,
        measure_cost: Annotated[bool, typer.Option("--measure-cost/--no-measure-cost", help="Time each trial's ONNX scoring cost.")] = True,
        ensemble: Annotated[Optional[int], typer.Option(help="The tuned artifact: the best trial plus K-1 more members of its config (seeds seed+1..), averaged; default: the config's (3); 1 = the best trial alone.")] = None,
        address: Annotated[Optional[str], typer.Option(help="Ray cluster address; default: start a local Ray.")] = None,
    ) -> None:
        """Search hyperparameters (Ray Tune + Ray Train, ASHA) and the threshold policy; write the tuned artifact."""

        def body():
            from tagging.config import load_config
            from tune.search import run_tune

            base = load_config(config, {"data.labels_file": str(labels) if labels else None,
                                        "data.tags_file": str(tags) if tags else None, "model.ensemble": ensemble})
            summary = run_tune(base, data, str(out), trials=trials, max_epochs=max_epochs, workers_per_trial=workers_per_trial,
                               cpus_per_worker=cpus_per_worker, max_concurrent=max_concurrent, search=search,
                               space_path=str(space) if space else None, grace_period=grace_period,
                               include_base=include_base, measure_cost=measure_cost, address=address)
            typer.echo(json.dumps(summary, default=str))

        _run(body)
