"""Nightly batch tagging, for `ray job submit`: the options of `tagging score`.

    ray job submit --working-dir . -- python -m jobs.score_nightly \
        --model artifacts/model --input s3://bucket/new/2026-11-21/ --output s3://bucket/tags [--date 2026-11-21]

Connects to the cluster it runs in (RAY_ADDRESS, set by the job server; see
tagging.dist.runtime.init_ray), scores the inputs into OUTPUT/date=DATE/ exactly once, and exits
0 with one JSON line, or 1 with one line `error: <reason>` on stderr (2: bad usage). The date
defaults to yesterday. Rerunning the same command after a failure resumes; rerunning a finished
date is a no-op unless --overwrite. `--input a b` takes several inputs.
`--model models:/NAME@production --tracking-uri http://mlflow:5000` scores the registry's production
version (resolved once, at plan time) and logs the night as an MLflow run.
"""

import sys

from tagging.cli import run_job


def main(argv: list[str] | None = None) -> int:
    return run_job("score", argv, prog_name="python -m jobs.score_nightly")


if __name__ == "__main__":
    sys.exit(main())
