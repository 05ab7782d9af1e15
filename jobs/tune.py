"""`ray job submit ... -- python -m jobs.tune --data ... --out ...` (the options of `tagging tune`)."""

import sys

from tagging.cli import run_job


def main(argv: list[str] | None = None) -> int:
    return run_job("tune", argv, prog_name="python -m jobs.tune")


if __name__ == "__main__":
    sys.exit(main())
