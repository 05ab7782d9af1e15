"""`ray job submit ... -- python -m jobs.train --data ... --out ...`: the train command as a Ray job.

Takes exactly the options of `tagging train`; connects to the cluster it runs in (RAY_ADDRESS).
Exits non-zero with a one-line reason on failure (shown by `ray job logs`).
"""

import sys

from tagging.cli import app


def main(argv: list[str] | None = None) -> None:
    app(["train", *(sys.argv[1:] if argv is None else argv)], prog_name="jobs.train")


if __name__ == "__main__":
    main()
