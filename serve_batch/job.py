"""`tagging score`: plan -> (resume) -> Ray Data read -> actor-pool ONNX scoring -> commit per
unit -> duplicate-id pass -> summary.json -> _SUCCESS.

Exactly once: every input record belongs to one ReadUnit (a file, a Parquet row group or a row
range of one, a byte range of a big text file: ``tagging.readers``).
Scoring actors write a unit's fragments to ``_staging/<attempt>/`` and return receipts; the
driver commits a unit when the receipts cover its records 0..n-1 exactly once (a count and a
range check), by moving the files into place and then writing ``_commits/<unit>.json``. A rerun
skips committed units, deletes any other unit's files and all staging, and scores the rest.
Rows are never collected on the driver: it sees receipts (a few per unit) and, at the end,
the id / tags / reason columns it reads back from the committed files.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
import posixpath
import time
import uuid
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from serve_batch.dedup import count_reasons, dedup_pass, part_files_in_order
from serve_batch import pins
from serve_batch.faults import FaultPlan, maybe_fault
from serve_batch.lease import open_lease
from serve_batch.layout import COMMITS, REJECTS, RUN, STAGING, SUCCESS, SUMMARY, OutputLayout, ScoreError, check_date
from tagging.artifact import code_version
from tagging.drift import PREVIOUS_NIGHTS, night_drift
from tagging.readers import InputError, ReadUnit, check_columns, check_readable, plan_units
from tagging.scores import previous_summaries

logger = logging.getLogger(__name__)

RUN_SCHEMA = 1
GPU_SHARE = 0.25  # default GPUs per scoring actor on a GPU cluster (4 actors per GPU)
ACTOR_START_S = 600.0  # ScoreOptions.actor_start_s when the inputs hold AUTO_WAIT_BYTES or more
AUTO_WAIT_BYTES = 1 << 20


@dataclass(frozen=True)
class ScoreOptions:
    model: str
    """Artifact directory, or a registered model: models:/NAME@ALIAS or models:/NAME/VERSION (resolved
    to one version, downloaded and verified once at plan time; needs ``tracking_uri``)."""
    inputs: tuple[str, ...]
    """Files, directories, globs or pyarrow filesystem URIs (CSV, JSON Lines, JSON, Parquet)."""
    output: str
    """Output root (local path or URI); results go to OUTPUT/date=DATE/."""
    date: str
    """YYYY-MM-DD."""
    actors: int | None = None
    """Scoring actors; default 1 / gpus_per_actor per GPU if the cluster has GPUs, else one per CPU."""
    cpus_per_actor: float = 0.75
    """Logical CPUs per actor (fractional leaves room for Ray's own processes on small machines; see RAY.md).
    ONNX Runtime intra-op threads = max(1, round(cpus_per_actor))."""
    gpus_per_actor: float | None = None
    """GPUs per actor; default 0.25 when the cluster has GPUs (CUDA provider), else 0: each actor
    also reads and validates its items on its own CPU, so 4 actors share a GPU and keep it busy
    while one of them is reading."""
    tasks_per_actor: int = 2
    """Work items queued at each actor (1 = an actor waits for the driver between items)."""
    actor_start_s: float | None = None
    """Seconds to wait for every scoring actor to start before any work item is handed out (else the
    first actor up queues the first items and, with few units, scores them alone); a cluster that
    cannot start them all in time fails with that message. None: 600 s when the inputs hold 1 MiB
    or more, else no wait (a smaller night is scored in about the time an actor takes to start)."""
    slice_rows: int = 16_384
    """Records per staged fragment: an actor reads its unit once and scores and stages this many
    records at a time (its memory follows this, not the unit; more records make longer
    exact-length batches for ONNX Runtime)."""
    unit_rows: int = 65_536
    """A Parquet row group over this many rows is cut into equal row ranges of at most this many
    (the resume granularity: a kill redoes at most this many rows per unit in flight)."""
    unit_mb: float = 4.0
    """An uncompressed JSON Lines / CSV file over this many MiB is cut into byte ranges of about
    this size at line boundaries (parallel reading; the resume granularity of text files)."""
    min_units: int = 64
    """Cut smaller units (down to 4,096 rows / 256 KiB, at most 16 ranges per row group) where the
    inputs would give fewer than this: a small night or one big file still keeps every actor busy,
    and the last units end together (a run's tail is one unit). 0: only the two limits above."""
    batch_size: int = 64
    """Texts per ONNX Runtime call (texts of similar length are batched together)."""
    precision: str = "fp32"
    """fp32, or int8 (the artifact's quantized model; refused unless it passed its F1 gate)."""
    top_k: int | None = None
    """Write only the k highest scores per row (default: a score for every tag)."""
    overwrite: bool = False
    """Redo a date that already finished, or that was started with another model or inputs."""
    address: str | None = None
    """Ray address; default RAY_ADDRESS (inside a job), else a local Ray."""
    object_store_budget_mb: int | None = None
    """Object store memory this run's Ray Data execution may hold (read-ahead): it bounds the
    run's memory whatever the input size. Default 32 MiB per actor, at least 64 MiB."""
    max_rounds: int = 3
    """Units whose fragments did not add up (a retried task) are rescored, this many rounds at most."""
    wait_s: float = 0.0
    """Seconds to wait for another run of the date to end (0: refuse at once, naming it)."""
    lease_ttl_s: float = 120.0
    """Object stores: seconds a lease lives unless renewed (renewed every ttl/4; a crashed run's date
    can be taken over this long after its last renewal). Local disks use a lock instead."""
    lease: bool = True
    """Take the date's lease (False: --no-lease, the scheduler guarantees one run per date)."""
    require_upstream_success: bool = False
    """Plan only once each input folder holds its own _SUCCESS (its writer finished); else fail naming it."""
    upstream_wait_s: float = 0.0
    """With require_upstream_success: seconds to wait for the upstream _SUCCESS files (0: require them now)."""
    fault: FaultPlan = field(default_factory=FaultPlan)
    tracking_uri: str | None = None
    """MLflow tracking URI: the registry of a models:/ model, and where the date is logged as a run (tagging.tracking)."""

    @property
    def threads(self) -> int:
        return max(1, round(self.cpus_per_actor))


@dataclass(frozen=True)
class PinnedArtifact:
    """The artifact as planned: its manifest's sha256 is taken once (``Artifact.sha`` re-reads the
    file, which `tagging quantize` may rewrite mid-run); everything else is the loaded artifact's.
    ``registry``: the registry version it was resolved from (tagging.tracking.resolve_model), if any."""

    art: object
    sha: str
    registry: dict | None = None

    @classmethod
    def of(cls, art, registry: dict | None = None) -> "PinnedArtifact":
        return cls(art, art.sha, registry)

    @property
    def version(self) -> str:
        """What every output row's model_version says: models:/NAME/VERSION, else the artifact's model_version."""
        return self.registry["uri"] if self.registry else self.art.model_version

    def __getattr__(self, name: str):
        return getattr(self.art, name)


def yesterday() -> str:
    return (dt.date.today() - dt.timedelta(days=1)).isoformat()


# ----------------------------------------------------------------------------- planning


def plan(inputs: Sequence[str], cfg, unit_rows: int = 65_536, unit_mb: float = 4.0, min_units: int = 0) -> list[ReadUnit]:
    """Read units of the inputs; a missing, unreadable or column-less file fails here, before any scoring."""
    if not inputs:
        raise InputError("no --input given")
    try:
        units = plan_units(list(inputs), parquet_unit_rows=unit_rows, text_unit_bytes=max(1, int(unit_mb * 2**20)),
                           min_units=min_units)
    except (pa.ArrowException, OSError) as exc:  # unreadable Parquet footer, permissions, ...
        raise InputError(f"cannot read input: {str(exc).splitlines()[0]}") from None
    for unit in units:
        if unit.start == 0 and unit.fmt != "parquet":
            check_readable(unit)
    try:
        check_columns(units, cfg, need_tags=False)
    except (pa.ArrowException, OSError) as exc:
        raise InputError(f"cannot read input: {str(exc).splitlines()[0]}") from None
    return units


def run_record(units: Sequence[ReadUnit], art, opts: ScoreOptions) -> dict:
    """What this date is scored with (model, output options, each unit with its file's identity:
    size, mtime, ETag on S3); a resumed run must match it, and _SUCCESS needs the inputs unchanged."""
    idents = pins.identities(units)
    out = [{"name": u.name, "path": u.path, "fmt": u.fmt, "part": u.part, "start": u.start, "stop": u.stop,
            **idents[u.path]} for u in units]
    return {"schema": RUN_SCHEMA, "model_sha": art.sha, "model_version": art.version, "model_path": str(art.path),
            "registry": art.registry, "precision": opts.precision, "top_k": opts.top_k, "units": out, "inputs": idents,
            "code": code_version()}


def _same_run(old: dict, new: dict) -> bool:
    """A run that may resume ``old``: the same model, output options and inputs (other code only warns)."""
    keys = ("schema", "model_sha", "precision", "top_k", "units")
    return all(old.get(k) == new.get(k) for k in keys)


# ----------------------------------------------------------------------------- committing


@dataclass
class _Progress:
    total: int = -1
    ranges: list = field(default_factory=list)  # [(start, stop)] sorted
    frags: dict = field(default_factory=dict)  # start -> receipt
    dirty: bool = False


class Committer:
    """Driver side: collect receipts and commit each unit once its records add up exactly."""

    def __init__(self, layout: OutputLayout, units: Sequence[ReadUnit], attempt: str, staging: str,
                 fault: FaultPlan, fence: Callable[[], None] = lambda: None) -> None:
        self.layout, self.attempt, self.staging, self.fault = layout, attempt, staging, fault
        self.fence = fence  # raises unless this run still holds the date's lease
        self.units = {u.name: u for u in units}
        self.progress = {u.name: _Progress() for u in units}
        self.committed: dict[str, dict] = {}
        self.rows = 0
        self.commit_times: list[tuple[float, int]] = []  # (time, rows committed so far), for the timing report
        self.actor_rows: Counter[str] = Counter()  # rows committed by each actor (how the work spread)

    def add(self, receipts: pa.Table) -> None:
        for rec in receipts.to_pylist():
            unit = rec["unit"]
            if rec.get("changed"):  # its file is not as planned: this unit never commits, nor does the date
                raise ScoreError(f"inputs changed during the run, not writing _SUCCESS: {rec['changed']}, seen right "
                                 f"after reading unit {unit} (not committed); rerun with --overwrite to score the "
                                 "inputs as they are now")
            if unit in self.committed or unit not in self.progress:
                continue
            p = self.progress[unit]
            if rec["total"] >= 0:
                p.total = rec["total"]
            if rec["start"] >= 0:
                self._add_fragment(p, rec)
            if not p.dirty and self._complete(p):
                self._commit(unit, p)

    def _add_fragment(self, p: _Progress, rec: dict) -> None:
        old = p.frags.get(rec["start"])
        if old is not None:
            if {**old, "actor": None} != {**rec, "actor": None}:  # a retried task cut the unit differently: rescore it next round
                p.dirty = True
            return
        new = list(zip(rec["ranges"][0::2], rec["ranges"][1::2]))
        merged = sorted(p.ranges + new)
        if any(a[1] > b[0] for a, b in zip(merged, merged[1:])):
            p.dirty = True
            return
        p.ranges = merged
        p.frags[rec["start"]] = rec

    @staticmethod
    def _complete(p: _Progress) -> bool:
        if p.total < 0:
            return False
        covered = sum(b - a for a, b in p.ranges)
        return covered == p.total and (p.total == 0 or (p.ranges[0][0] == 0 and p.ranges[-1][1] == p.total))

    def _commit(self, unit: str, p: _Progress) -> None:
        lay = self.layout
        moves, files, reject_files = [], [], []
        rows = rejects = chars = oov = 0
        by_actor: Counter[str] = Counter()
        for start in sorted(p.frags):
            rec = p.frags[start]
            if rec["scored_file"]:
                src = f"{self.staging}/{rec['scored_file']}"
                if _num_rows(lay.fs, src) != rec["rows"]:
                    p.dirty = True
                    return
                name = rec["scored_file"][len("scored-"):]
                moves.append((src, lay.path(name)))
                files.append(name)
            if rec["rejects_file"]:
                name = rec["rejects_file"][len("rejects-"):]
                moves.append((f"{self.staging}/{rec['rejects_file']}", lay.path(REJECTS, name)))
                reject_files.append(name)
            rows += rec["rows"]
            rejects += rec["rejects"]
            by_actor[rec.get("actor") or "?"] += rec["rows"]
            chars += rec.get("chars") or 0
            oov += rec.get("oov_chars") or 0
        u = self.units[unit]
        marker = {"unit": unit, "path": u.path, "fmt": u.fmt, "part": u.part, "start": u.start, "stop": u.stop,
                  "records": p.total, "rows": rows,
                  "rejects": rejects, "chars": chars, "oov_chars": oov, "files": files, "reject_files": reject_files,
                  "attempt": self.attempt,
                  "committed_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
        def before_marker():
            maybe_fault(self.fault, "commit")
            self.fence()

        lay.commit_unit(unit, moves, marker, before_marker=before_marker)
        self.committed[unit] = marker
        self.rows += rows
        self.actor_rows.update(by_actor)
        self.commit_times.append((time.time(), self.rows))
        done = len(self.committed)
        if done == len(self.units) or done % max(1, len(self.units) // 10) == 0:
            logger.info(f"committed {done}/{len(self.units)} units of this round ({self.rows} rows scored)")

    def unfinished(self) -> list[ReadUnit]:
        return [self.units[n] for n in self.units if n not in self.committed]


def _num_rows(fs: pafs.FileSystem, path: str) -> int:
    with fs.open_input_file(path) as f:
        return pq.ParquetFile(f).metadata.num_rows


# ----------------------------------------------------------------------------- Ray


def _resources(opts: ScoreOptions) -> tuple[int, float, float]:
    """(actors, cpus per actor, gpus per actor) for the connected cluster."""
    import ray

    res = ray.cluster_resources()
    gpus = float(res.get("GPU", 0))
    gpa = opts.gpus_per_actor if opts.gpus_per_actor is not None else (GPU_SHARE if gpus >= 1 else 0.0)
    if opts.actors:
        actors = opts.actors
    elif gpa > 0:
        actors = max(1, int(gpus // gpa))
    else:
        actors = max(1, int(float(res.get("CPU", 1)) // 1))
    return actors, opts.cpus_per_actor, gpa


def build_dataset(units: Sequence[ReadUnit], art, opts: ScoreOptions, staging_uri: str, sizing: tuple[int, float, float],
                  inputs: dict[str, dict] | None = None):
    """The scoring pipeline over ``units``; ``inputs``: the planned identity of each file (read at it, checked after)."""
    import ray

    from serve_batch.stages import ScoreStage, work_items

    actors, cpa, gpa = sizing
    items = work_items(list(units), inputs)
    actors = max(1, min(actors, len(items)))  # more actors than work items would idle
    # One block per work item and one item per actor call: a free actor takes the next slice.
    ds = ray.data.from_items(items, override_num_blocks=max(1, len(items)))
    budget_mb = opts.object_store_budget_mb or max(64, 32 * actors)
    ctx = ds.context  # this dataset's own copy of the DataContext
    ctx.execution_options.resource_limits = ctx.execution_options.resource_limits.copy(
        object_store_memory=budget_mb * 2**20)
    # Every actor is up before the first item is dispatched: without this (Ray Data's default), the
    # first actor to load its model queues tasks_per_actor items, and a file of two units (100k rows
    # in one row group) was scored by one actor while the other idled (default model int8: 1,929 docs/s; 3,314 with this).
    wait_s = actor_wait_s(opts, inputs)
    if wait_s is not None:  # else Ray Data's default (RAY_DATA_DEFAULT_WAIT_FOR_MIN_ACTORS_S, -1 unset)
        ctx.wait_for_min_actors_s = wait_s
    with warnings.catch_warnings():
        # ray_remote_args_fn is deprecated (removal planned for Ray 2.64) but is 2.60's only way to
        # cap actor task retries without the (also deprecated) **ray_remote_args.
        warnings.simplefilter("ignore", DeprecationWarning)
        return ds.map_batches(
            ScoreStage,
            fn_constructor_kwargs={"model_dir": str(art.path), "model_sha": art.sha, "model_version": art.version,
                                   "precision": opts.precision, "threads": opts.threads,
                                   "batch_size": opts.batch_size, "top_k": opts.top_k, "staging_uri": staging_uri,
                                   "cfg": art.config.data, "fault": opts.fault, "chunk": opts.slice_rows},
            # items queued per actor: the next one is already there when the current one ends (with 1,
            # an actor idled for a scheduling round trip after every item: 15-25% of the time with int8)
            compute=ray.data.ActorPoolStrategy(size=actors, max_tasks_in_flight_per_actor=opts.tasks_per_actor),
            batch_size=1, batch_format="pyarrow",
            num_cpus=cpa, num_gpus=gpa or None, ray_remote_args_fn=_actor_retries)


def actor_wait_s(opts: ScoreOptions, inputs: dict[str, dict] | None) -> float | None:
    """Ray Data's wait_for_min_actors_s for this run: ``opts.actor_start_s``, or (None) 600 s when
    the planned input files hold AUTO_WAIT_BYTES or more, else None (Ray Data's default)."""
    if opts.actor_start_s is not None:
        return opts.actor_start_s
    size = sum(int(i.get("size") or 0) for i in (inputs or {}).values())
    return ACTOR_START_S if size >= AUTO_WAIT_BYTES else None


def _actor_retries() -> dict:
    """A task whose actor died is retried on a restarted actor, 3 times at most (Ray Data's
    default is forever: a batch that kills its actor every time would never fail the run)."""
    return {"max_task_retries": 3}


def _init(opts: ScoreOptions) -> tuple[int, float, float]:
    """Connect to (or start) Ray; returns the actor sizing for this cluster."""
    from tagging.dist.runtime import init_ray

    init_ray(opts.address, include_dashboard=False)
    return _resources(opts)


def _ray_failure(exc: BaseException) -> ScoreError:
    lines = [ln for ln in str(exc).strip().splitlines() if ln.strip()]
    return ScoreError(f"scoring failed: {lines[-1] if lines else type(exc).__name__}")


# ----------------------------------------------------------------------------- the run


def run_score(opts: ScoreOptions) -> dict:
    """Score ``opts.inputs`` into OUTPUT/date=D exactly once; returns the summary.

    Status ``complete`` (scored now), ``already_complete`` (a finished date, inputs as planned:
    nothing touched) or ``inputs_changed`` (a finished date whose inputs changed or grew since:
    nothing touched; rerun with --overwrite to redo it)."""
    from tagging.artifact import load_artifact
    from tagging.tracking import is_registry_uri, log_night, resolve_model

    started = time.time()
    check_date(opts.date)
    if opts.precision not in ("fp32", "int8"):
        raise ScoreError(f"--precision {opts.precision!r}: expected fp32 or int8")
    if opts.top_k is not None and opts.top_k < 1:
        raise ScoreError("--top-k must be at least 1")
    # The model is pinned: models:/NAME@alias becomes one version (downloaded and verified once),
    # a symlinked --model is resolved once, and every actor checks the manifest's sha.
    model_dir, registry = resolve_model(opts.model, opts.tracking_uri) if is_registry_uri(opts.model) else (opts.model, None)
    art = PinnedArtifact.of(load_artifact(os.path.realpath(model_dir)), registry)
    if registry:
        logger.info(f"model {opts.model} -> {registry['uri']} ({art.path})")
    if art.unpadded_variant(opts.precision) is None:  # also refuses a missing or gate-failed int8 model now
        logger.info(f"{art.path} has no unpadded {opts.precision} graph (written before it existed): scored with the "
                    "masked graph; `tagging quantize` on it adds both unpadded graphs (about 1.3x faster)")
    run_id = f"{dt.datetime.now():%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"  # names this run's staging and lease
    layout = OutputLayout(opts.output, opts.date)
    if layout.succeeded() and not opts.overwrite:  # read-only fast path: no lease needed
        return _finished(layout, opts)
    if opts.require_upstream_success:
        pins.wait_for_upstream(opts.inputs, opts.upstream_wait_s)
    units = plan(opts.inputs, art.config.data, opts.unit_rows, opts.unit_mb, opts.min_units)
    layout.mkdirs()
    with open_lease(layout, run_id, ttl_s=opts.lease_ttl_s, wait_s=opts.wait_s, enabled=opts.lease) as lease:
        if layout.succeeded() and not opts.overwrite:
            # Another run finished this date while we planned or waited: touch nothing.
            return _finished(layout, opts)
        record = run_record(units, art, opts)
        old = layout.read_json(layout.path(RUN))
        if layout.succeeded() or (old is not None and not _same_run(old, record) and opts.overwrite):
            logger.info(f"--overwrite: removing the previous output of {layout.dir}")
            layout.clear()
            old = None
        elif old is not None and not _same_run(old, record):
            raise ScoreError(f"{layout.dir} holds an unfinished run with a different model, precision, top-k or inputs; "
                             "rerun it with the same ones, or pass --overwrite to discard it")
        if old is not None and old.get("code") != record["code"]:
            logger.warning(f"{layout.dir} was started with other code ({old.get('code')}); resuming it with {record['code']}")
        if old is None:
            layout.clear()  # leftovers without a run record (an interrupted --overwrite) are not resumable
            layout.write_json(layout.path(RUN), {**record, "created_at": dt.datetime.now(dt.timezone.utc).isoformat()})
        for sub in (COMMITS, REJECTS):
            layout.mkdirs(layout.path(sub))
        names = {u.name for u in units}
        committed = {k: v for k, v in layout.committed().items() if k in names}
        stale = layout.discard_uncommitted(committed)
        pending = [u for u in units if u.name not in committed]
        logger.info(f"{len(units)} units; {len(committed)} already committed, {len(pending)} to score"
                    + (f"; deleted {stale} uncommitted files of an earlier run" if stale else ""))
        rows_this_run = 0
        commit_times: list[tuple[float, int]] = []
        attempts: set[str] = set()
        actor_rows: Counter[str] = Counter()
        t_ray = time.time()
        if pending:
            sizing = _init(opts)
            logger.info(f"{sizing[0]} actors x {sizing[1]} CPU ({opts.threads} ONNX Runtime threads)"
                        + (f" x {sizing[2]} GPU" if sizing[2] else "") + f", {opts.precision}, batch {opts.batch_size}")
            t_ray = time.time()
            for rnd in range(1, opts.max_rounds + 1):
                attempt = f"{run_id}-r{rnd}"
                attempts.add(attempt)
                staging = layout.staging(attempt)
                layout.mkdirs(staging)
                committer = Committer(layout, pending, attempt, staging, opts.fault, fence=lease.check)
                ds = build_dataset(pending, art, opts, layout.uri_of(staging), sizing, record["inputs"])
                try:
                    for receipts in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
                        committer.add(receipts)
                except Exception as exc:
                    if isinstance(exc, (ScoreError, KeyboardInterrupt)):
                        raise
                    # An input replaced while an actor read it (a footer and row group of two
                    # versions) fails the read: say that, rather than the reader's error.
                    _check_inputs(opts, record, "inputs changed during the run (an actor's read failed)")
                    raise _ray_failure(exc) from exc
                committed.update(committer.committed)
                commit_times += [(t, rows_this_run + r) for t, r in committer.commit_times]
                rows_this_run += committer.rows
                actor_rows.update(committer.actor_rows)
                layout.delete(staging)
                pending = committer.unfinished()
                if not pending:
                    break
                logger.info(f"round {rnd}: {len(pending)} units did not add up; rescoring them")
            logger.info("rows scored per actor: " + ", ".join(f"{n}" for n in sorted(actor_rows.values(), reverse=True)))
            if pending:
                raise ScoreError(f"{len(pending)} units could not be committed after {opts.max_rounds} rounds "
                                 f"(first: {pending[0].path})")
        order = [u.name for u in units]
        files = part_files_in_order(layout, order, committed)
        lease.check()
        moved = dedup_pass(layout, files, stage=layout.staging(f"dedup-{run_id}"),
                           before_rewrite=lambda: maybe_fault(opts.fault, "dedup"))
        if moved:
            logger.info(f"moved {moved} later duplicate ids to _rejects")
        layout.delete(layout.path(STAGING))
        summary = build_summary(layout, units, committed, art, opts, files)
        finished = time.time()
        scoring_s = finished - t_ray  # first read to summary: the pipeline, without Ray's own start-up
        summary.update({
            "status": "complete",
            "run_id": run_id,
            "duplicates_moved": moved,
            "units": {"total": len(units), "scored_this_run": sum(m["attempt"] in attempts for m in committed.values())},
            "rows_by_actor": dict(sorted(actor_rows.items())),  # this run's rows, by the actor (host:pid) that scored them
            "rows_scored_this_run": rows_this_run,
            "started_at": dt.datetime.fromtimestamp(started, dt.timezone.utc).isoformat(timespec="seconds"),
            "finished_at": dt.datetime.fromtimestamp(finished, dt.timezone.utc).isoformat(timespec="seconds"),
            "elapsed_s": round(finished - started, 3),
            "pipeline_s": round(scoring_s, 3) if rows_this_run else None,
            "timing": _timing(started, t_ray, commit_times, finished),
            "throughput_docs_per_s": round(rows_this_run / scoring_s, 1) if rows_this_run and scoring_s > 0 else None,
            "options": {k: v for k, v in asdict(opts).items() if k not in ("fault", "model", "inputs", "output", "date", "tracking_uri")},
        })
        # Pinned inputs: every planned file as it was, and no new one, or no _SUCCESS.
        _check_inputs(opts, record, "inputs changed during the run")
        success = success_manifest(layout, run_id, summary, files, committed)
        lease.check()
        layout.write_json(layout.path(SUMMARY), summary)
        maybe_fault(opts.fault, "summary")
        lease.check()
        layout.write_json(layout.path(SUCCESS), success)
        logger.info(f"done: {summary['rows_scored']} scored + {summary['rows_rejected']} rejected = {summary['rows_read']} read "
                    f"-> {layout.dir}")
        if summary["drift"]["flagged"]:
            logger.info(f"drift flagged: {', '.join(summary['drift']['flagged'])} (summary.json: drift)")
        log_night(opts.tracking_uri, summary, layout.path(SUMMARY) if layout.local else None)
        return summary


def _check_inputs(opts: ScoreOptions, record: dict, what: str) -> None:
    """Raise (no _SUCCESS) if an input planned in ``record`` changed or a new one appeared."""
    changed = pins.changes(opts.inputs, record["inputs"])
    if changed:
        raise ScoreError(f"{what}, not writing _SUCCESS: {changed[0]}"
                         + (f" (and {len(changed) - 1} more)" if len(changed) > 1 else "")
                         + "; rerun with --overwrite to score the inputs as they are now")


def _finished(layout: OutputLayout, opts: ScoreOptions) -> dict:
    """A date with _SUCCESS: ``already_complete`` if its inputs are as planned, else ``inputs_changed``."""
    summary = layout.read_json(layout.path(SUMMARY)) or {}
    run = layout.read_json(layout.path(RUN)) or {}
    planned = run.get("inputs")
    changed = pins.changes(opts.inputs, planned) if planned else []
    if changed:
        logger.info(f"{layout.dir} is complete, but its inputs changed since: {changed[0]}"
                    + (f" (and {len(changed) - 1} more)" if len(changed) > 1 else "") + "; use --overwrite to redo it")
        return {**summary, "status": "inputs_changed", "changes": changed}
    logger.info(f"{layout.dir} is already complete (_SUCCESS); nothing to do (use --overwrite to redo it)")
    return {**summary, "status": "already_complete"}


def success_manifest(layout: OutputLayout, run_id: str, summary: dict, files: Sequence[str],
                     committed: dict[str, dict]) -> dict:
    """The content of _SUCCESS: exactly the files of the date (paths relative to it), with rows and sha256.
    Readers (tagging.read_scores) read these files and nothing else."""
    def entry(path: str) -> dict:
        h = hashlib.sha256()
        with layout.fs.open_input_stream(path) as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
        return {"path": path[len(layout.dir) + 1:], "rows": _num_rows(layout.fs, path), "sha256": h.hexdigest()}

    rejects = [layout.path(REJECTS, n) for m in committed.values() for n in m["reject_files"]]
    rejects += [i.path for i in layout.list(layout.path(REJECTS)) if posixpath.basename(i.path).startswith("dup-")]
    return {"schema": 1, "date": summary["date"], "run_id": run_id, "model": summary["model"],
            "rows_scored": summary["rows_scored"], "rows_rejected": summary["rows_rejected"],
            "files": [entry(p) for p in files], "rejects": [entry(p) for p in sorted(set(rejects))],
            "written_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}


def _timing(started: float, t_ray: float, commits: list[tuple[float, int]], finished: float) -> dict:
    """Where the time went: start-up (plan + Ray), first commit, steady state between commits, finish."""
    out = {"ray_start_s": round(t_ray - started, 3), "finish_s": None, "first_commit_s": None,
           "steady_docs_per_s": None}
    if commits:
        out["first_commit_s"] = round(commits[0][0] - t_ray, 3)
        out["finish_s"] = round(finished - commits[-1][0], 3)
        if len(commits) > 1 and commits[-1][0] > commits[0][0]:
            out["steady_docs_per_s"] = round((commits[-1][1] - commits[0][1]) / (commits[-1][0] - commits[0][0]), 1)
    return out


def build_summary(layout: OutputLayout, units: Sequence[ReadUnit], committed: dict[str, dict], art,
                  opts: ScoreOptions, files: Sequence[str]) -> dict:
    """Counts read back from the committed files (the truth after resumes and the duplicate pass)."""
    labels = list(art.labels.labels)
    tag_counts = dict.fromkeys(labels, 0)
    rows_scored = truncated = 0
    for path in files:
        t = pq.read_table(path, columns=["tags", "truncated"], filesystem=layout.fs)
        rows_scored += t.num_rows
        truncated += int(pc.sum(t.column("truncated")).as_py() or 0)
        flat = pc.list_flatten(t.column("tags").combine_chunks())
        for item in pc.value_counts(flat).to_pylist():
            tag_counts[item["values"]] = tag_counts.get(item["values"], 0) + int(item["counts"])
    reject_paths = [layout.path(REJECTS, n) for m in committed.values() for n in m["reject_files"]]
    reject_paths += [i.path for i in layout.list(layout.path(REJECTS)) if i.path.rsplit("/", 1)[-1].startswith("dup-")]
    reasons = count_reasons(layout, reject_paths)
    rows_rejected = sum(reasons.values())
    rows_read = sum(int(committed[u.name]["records"]) for u in units)
    if rows_scored + rows_rejected != rows_read:
        raise ScoreError(f"accounting mismatch in {layout.dir}: {rows_scored} scored + {rows_rejected} rejected "
                         f"!= {rows_read} records read; not writing _SUCCESS")
    # characters read / out of the vocabulary: per unit, before the duplicate pass (a share, not a count of rows)
    chars = sum(int(committed[u.name].get("chars") or 0) for u in units)
    oov = sum(int(committed[u.name].get("oov_chars") or 0) for u in units)
    previous = previous_summaries(opts.output, opts.date, PREVIOUS_NIGHTS)
    return {
        "date": opts.date,
        "input": list(opts.inputs),
        "output": layout.uri_of(layout.dir),
        "model": {"path": str(art.path), "version": art.version, "artifact_version": art.model_version, "sha": art.sha,
                  "precision": opts.precision, "max_length": art.max_length, "registry": art.registry},
        "code": code_version(),
        "rows_read": rows_read,
        "rows_scored": rows_scored,
        "rows_rejected": rows_rejected,
        "rejects_by_reason": reasons,
        "rows_truncated": truncated,
        "tags": {t: {"count": c, "rate": round(c / rows_scored, 6) if rows_scored else 0.0} for t, c in tag_counts.items()},
        "files": {"parts": len(files), "rejects": len(reject_paths)},
        "drift": night_drift(tag_counts, rows_scored, truncated, chars, oov, art.manifest.get("drift_reference"), previous),
    }
