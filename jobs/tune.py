"""`ray job submit ... -- python -m jobs.tune --data ... --out ...` (options of `tagging tune`)."""

import sys

from tagging.cli import app


def main(argv: list[str] | None = None) -> None:
    app(["tune", *(sys.argv[1:] if argv is None else argv)], prog_name="jobs.tune")


if __name__ == "__main__":
    main()
