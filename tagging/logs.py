"""Logging set-up for the entrypoints. Library modules only do ``logging.getLogger(__name__)``.

Messages go to stderr as ``[module] message`` (warnings and errors say their level); results
(JSON lines) stay on stdout. Nothing here runs at import time.
"""

from __future__ import annotations

import logging
import sys

PACKAGES = ("tagging", "serve_batch", "tune", "jobs")


class _Stderr(logging.StreamHandler):
    """Writes to whatever sys.stderr is at the time (test runners swap it)."""

    @property
    def stream(self):  # noqa: D102
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # StreamHandler.__init__ assigns it
        pass


class _Format(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        level = f"{record.levelname.lower()}: " if record.levelno >= logging.WARNING else ""
        return f"[{record.name}] {level}{super().format(record)}"


def setup_logging(verbosity: int = 0) -> None:
    """Our packages' loggers to stderr: -1 warnings only (--quiet), 0 info, 1+ debug (--verbose).

    Idempotent (a second call replaces the handler); other libraries' loggers (Ray's) are left
    as they configure themselves."""
    level = logging.WARNING if verbosity < 0 else logging.INFO if verbosity == 0 else logging.DEBUG
    handler = _Stderr()
    handler.setFormatter(_Format("%(message)s"))
    for name in PACKAGES:
        logger = logging.getLogger(name)
        logger.setLevel(level)
        for old in [h for h in logger.handlers if isinstance(h, _Stderr)]:
            logger.removeHandler(old)
        logger.addHandler(handler)
