"""`ray job submit ... -- python -m jobs.evaluate --model DIR --data ... --out DIR` (the options of `tagging evaluate`)."""

import sys

from tagging.cli import run_job


def main(argv: list[str] | None = None) -> int:
    return run_job("evaluate", argv, prog_name="python -m jobs.evaluate")


if __name__ == "__main__":
    sys.exit(main())
