"""Nightly batch tagging, for `ray job submit`:

    ray job submit --working-dir . -- python -m jobs.score_nightly \
        --model artifacts/model --input s3://bucket/new/2026-11-21/ --output s3://bucket/tags [--date 2026-11-21]

Connects to the cluster it runs in (RAY_ADDRESS, set by the job server; see
tagging.dist.runtime.init_ray), scores the inputs into OUTPUT/date=DATE/ exactly once, and exits
0 with one JSON line, or non-zero with one line `error: <reason>` on stderr. The date defaults
to yesterday. Rerunning the same command after a failure resumes; rerunning a finished date
is a no-op unless --overwrite.
"""

from __future__ import annotations

import argparse
import json
import sys


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m jobs.score_nightly", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="artifact directory")
    p.add_argument("--input", required=True, nargs="+", help="files, directories, globs or URIs")
    p.add_argument("--output", required=True, help="output root; results go to OUTPUT/date=DATE/")
    p.add_argument("--date", default=None, help="YYYY-MM-DD (default: yesterday)")
    p.add_argument("--precision", default="fp32", choices=["fp32", "int8"])
    p.add_argument("--actors", type=int, default=None, help="default: 4 per GPU (0.25 GPU each), else one per CPU")
    p.add_argument("--cpus-per-actor", type=float, default=0.75)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--address", default=None, help="default: RAY_ADDRESS, else a local Ray")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        from serve_batch.faults import FaultPlan
        from serve_batch.job import ScoreOptions, run_score, yesterday

        opts = ScoreOptions(model=args.model, inputs=tuple(args.input), output=args.output,
                            date=args.date or yesterday(), actors=args.actors, cpus_per_actor=args.cpus_per_actor,
                            batch_size=args.batch_size, precision=args.precision, top_k=args.top_k,
                            overwrite=args.overwrite, address=args.address, fault=FaultPlan.from_env())
        summary = run_score(opts)
    except Exception as exc:  # one line, whatever failed (Ray wraps worker errors in long messages)
        lines = [ln for ln in str(exc).strip().splitlines() if ln.strip()]
        print(f"error: {type(exc).__name__}: {lines[-1] if lines else ''}", file=sys.stderr)
        return 1
    keys = ("status", "output", "rows_read", "rows_scored", "rows_rejected", "throughput_docs_per_s")
    print(json.dumps({k: summary.get(k) for k in keys}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
