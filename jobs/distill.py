"""`ray job submit ... -- python -m jobs.distill --data ... --out ...`: `tagging distill` as a Ray job.

Takes exactly the options of `tagging distill`; connects to the cluster it runs in (RAY_ADDRESS).
Exits non-zero with a one-line reason on failure (shown by `ray job logs`).
"""

import sys

from tagging.cli import run_job


def main(argv: list[str] | None = None) -> int:
    return run_job("distill", argv, prog_name="python -m jobs.distill")


if __name__ == "__main__":
    sys.exit(main())
