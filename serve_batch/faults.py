"""Fault injection for kill-and-rerun tests: SIGKILL a process at a named point of a run.

Off unless ``SERVE_BATCH_FAULT`` is set in the driver's environment, so production runs never
pay more than one dictionary lookup per point. The driver reads the plan once and hands it to
the Ray stages explicitly (environment variables do not reach the workers of a remote cluster).

    SERVE_BATCH_FAULT=POINT[@N]    fire at the N-th time (default 1) a process reaches POINT
    SERVE_BATCH_FAULT_TARGET=driver|self
                                   kill the driver (default) or the process that reached POINT
    SERVE_BATCH_FAULT_FLAG=FILE    fire at most once overall: the process that creates FILE
                                   (O_EXCL) fires; with it, a rerun under the same env does not

Points (in run order): ``read`` (a reader yielded its first records of a unit), ``score``
(a scoring actor wrote a fragment to staging, before returning its receipt), ``commit`` (the
driver moved a unit's files into place, before its commit marker), ``dedup`` (the driver wrote
a duplicate-id rejects file, before rewriting the part file), ``summary`` (summary.json
written, before _SUCCESS).
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass

POINTS = ("read", "score", "commit", "dedup", "summary")


@dataclass(frozen=True)
class FaultPlan:
    point: str | None = None
    nth: int = 1
    target: str = "driver"
    flag: str | None = None
    driver_pid: int = 0

    @classmethod
    def from_env(cls, env: dict | None = None) -> "FaultPlan":
        env = os.environ if env is None else env
        spec = env.get("SERVE_BATCH_FAULT", "").strip()
        if not spec:
            return cls()
        point, _, nth = spec.partition("@")
        if point not in POINTS:
            raise ValueError(f"SERVE_BATCH_FAULT={spec!r}: unknown point (one of {', '.join(POINTS)})")
        target = env.get("SERVE_BATCH_FAULT_TARGET", "driver")
        if target not in ("driver", "self"):
            raise ValueError(f"SERVE_BATCH_FAULT_TARGET={target!r}: expected driver or self")
        return cls(point, int(nth or 1), target, env.get("SERVE_BATCH_FAULT_FLAG") or None, os.getpid())


_hits: dict[str, int] = {}


def maybe_fault(plan: FaultPlan | None, point: str) -> None:
    """SIGKILL the planned process if ``plan`` targets ``point`` and its count is reached."""
    if plan is None or plan.point != point:
        return
    _hits[point] = _hits.get(point, 0) + 1
    if _hits[point] != plan.nth:
        return
    if plan.flag:
        try:
            os.close(os.open(plan.flag, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return
    pid = plan.driver_pid if plan.target == "driver" and plan.driver_pid else os.getpid()
    os.kill(pid, signal.SIGKILL)
