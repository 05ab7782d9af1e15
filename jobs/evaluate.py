"""`ray job submit ... -- python -m jobs.evaluate --model DIR --data ... --out DIR` (options of `tagging evaluate`)."""

import sys

from tagging.cli import app


def main(argv: list[str] | None = None) -> None:
    app(["evaluate", *(sys.argv[1:] if argv is None else argv)], prog_name="jobs.evaluate")


if __name__ == "__main__":
    main()
