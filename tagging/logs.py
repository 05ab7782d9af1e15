"""Logging set-up for the entrypoints; library modules only do ``logging.getLogger(__name__)``.

Messages go to stderr as ``[module] message`` (warnings and errors say their level); results
(JSON lines) stay on stdout. Nothing happens at import time.
"""

from __future__ import annotations

import logging
import sys

PACKAGES = ("tagging", "serve_batch", "tune", "jobs")


class _Stderr(logging.StreamHandler):
    """Writes to whatever sys.stderr is when a record comes (test runners swap it)."""

    stream = property(lambda self: sys.stderr, lambda self, value: None)


class _Format(logging.Formatter):
    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name
        level = f"{record.levelname.lower()}: " if record.levelno >= logging.WARNING else ""
        return f"[{record.name}] {level}{record.message}"


def setup_logging(verbosity: int = 0) -> None:
    """Our packages' loggers to stderr: -1 warnings only (--quiet), 0 info, 1+ debug (--verbose).

    Idempotent (a second call replaces the handler); other libraries' loggers (Ray's) keep
    their own set-up."""
    handler = _Stderr()
    handler.setFormatter(_Format())
    for name in PACKAGES:
        logger = logging.getLogger(name)
        logger.setLevel(logging.WARNING if verbosity < 0 else logging.INFO if verbosity == 0 else logging.DEBUG)
        for old in [h for h in logger.handlers if isinstance(h, _Stderr)]:
            logger.removeHandler(old)
        logger.addHandler(handler)
