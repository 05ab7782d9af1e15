"""Helpers shared by the scoring tests (tests/integration/test_score*.py, tests/e2e).

Not a conftest.py (those belong to the whole suite): test modules ``import conftest_score as cs``
(tests/ is on pytest's ``pythonpath``, pyproject.toml). The trained artifact is built once per pytest process, however many
modules ask for it: a small char-CNN (max_length 128, so truncation happens) trained in-process
on synthetic data, then quantized to int8.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]
SMALL_MODEL = {  # trains in well under a minute; a 30% validation split keeps the int8 gate's F1 stable
    "model.num_filters": 32, "model.filter_widths": [1, 2, 3, 4], "model.embedding_dim": 32, "model.hidden_dim": 32, "model.ensemble": 1,
    "model.max_length": 128, "max_epochs": 3, "batch_size": 32, "learning_rate": 0.003, "data.val_fraction": 0.3,
}
DATE = "2026-11-21"

_cache: dict[str, Path] = {}


def trained_artifact(base: Path) -> Path:
    """A real artifact (ONNX + int8), trained once per process under ``base``."""
    if "artifact" in _cache:
        return _cache["artifact"]
    from tagging.quantize import quantize_artifact
    from tagging.config import load_config
    from tagging.local import train_local
    from tagging.synth import generate_corpus, write_corpus

    base.mkdir(parents=True, exist_ok=True)
    data = base / "train.parquet"
    write_corpus(generate_corpus(1200, seed=0), str(data))
    art = train_local([str(data)], str(base / "model"), load_config(None, SMALL_MODEL), model_version="test-1")
    quantize_artifact(str(art.path), [str(data)], calibration_rows=128)
    _cache["artifact"] = art.path
    _cache["train_data"] = data
    return art.path


def train_data() -> Path:
    return _cache["train_data"]


def write_bad_inputs(folder: Path, rows: int = 600, seed: int = 11) -> Path:
    """Parquet (3 row groups), JSON Lines (+2 raw corrupt lines) and CSV, with every kind of bad row."""
    from tagging.synth import generate_corpus, write_corpus

    df = generate_corpus(rows, seed=seed, bad_fraction=0.08)
    folder.mkdir(parents=True, exist_ok=True)
    third = rows // 3
    write_corpus(df.iloc[:third].reset_index(drop=True), str(folder / "a.parquet"))
    pq.write_table(pq.read_table(folder / "a.parquet"), folder / "a.parquet", row_group_size=third // 3 + 1)
    write_corpus(df.iloc[third : 2 * third].reset_index(drop=True), str(folder / "b.jsonl"))
    write_corpus(df.iloc[2 * third :].reset_index(drop=True), str(folder / "c.csv"))
    return folder


def expected_outcome(inputs: list[str], cfg) -> dict:
    """The sequential reference: core readers in plan order, first valid occurrence of an id wins."""
    from tagging.readers import DUPLICATE_ID, Reject, plan_units, read_unit, reason_kind

    valid: dict[str, str] = {}
    reasons: Counter = Counter()
    records = 0
    for unit in plan_units(inputs):
        for item in read_unit(unit, cfg, need_tags=False):
            records += 1
            if isinstance(item, Reject):
                reasons[reason_kind(item.reason)] += 1
            elif item.id in valid:
                reasons[DUPLICATE_ID] += 1
            else:
                valid[item.id] = item.text
    return {"records": records, "valid": valid, "reasons": dict(reasons)}


def read_output(date_dir: Path):
    """(scored rows, rejects) of a finished date as pyarrow tables."""
    import pyarrow as pa

    parts = sorted(date_dir.glob("part-*.parquet"))
    rejects = sorted((date_dir / "_rejects").glob("*.parquet"))
    scored = pa.concat_tables([pq.read_table(p) for p in parts]) if parts else None
    rej = pa.concat_tables([pq.read_table(p) for p in rejects]) if rejects else None
    return scored, rej


@contextmanager
def on_log(fn, names=("serve_batch", "tagging")):
    """Call ``fn(record)`` for every INFO-or-higher log record of our packages while inside: how a
    test reads a run's log lines, or acts at a moment of the run (an exception in ``fn`` reaches
    the code that logged)."""
    import logging

    class Hook(logging.Handler):
        def emit(self, record):
            fn(record)

    hook, loggers = Hook(), [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.addHandler(hook)
        lg.setLevel(logging.INFO)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.removeHandler(hook)
            lg.setLevel(level)


def run_cli(args: list[str], env_extra: dict | None = None, timeout: float = 240, module: str = "tagging.cli"):
    """Run ``python -m <module> ARGS`` in a fresh process (its own local Ray); returns CompletedProcess."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SERVE_BATCH_FAULT", "RAY_ADDRESS"))}
    env.update({"TAGGING_DATA_NO_PROGRESS_TIMEOUT_S": "120", "PYTHONPATH": str(REPO)})
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", module, *args], env=env, capture_output=True, text=True,
                          timeout=timeout, cwd=str(REPO))


class Store:
    """Where a test's inputs and outputs live: a local folder or an object-store prefix
    (``s3://bucket``, ``gs://bucket``), with the few reads the tests need, through pyarrow's
    filesystem either way."""

    def __init__(self, root: str) -> None:
        from tagging.readers import resolve_filesystem

        self.root = root.rstrip("/")
        self.remote = "://" in root
        self.fs, self.base = resolve_filesystem(self.root)

    def uri(self, *parts: str) -> str:
        return "/".join([self.root, *parts])

    def path(self, uri: str) -> str:
        """The filesystem path of one of this store's URIs."""
        return uri.split("://", 1)[1] if self.remote else uri

    def put(self, local: Path, name: str) -> str:
        """Copy a local file or folder here; returns its URI (a local store uses it where it is)."""
        if not self.remote:
            return str(local)
        import pyarrow.fs as pafs

        dest = self.uri(name)
        pafs.copy_files(str(local), self.path(dest), source_filesystem=pafs.LocalFileSystem(), destination_filesystem=self.fs)
        return dest

    def date_dir(self, out: str, date: str = DATE) -> str:
        return f"{self.path(out).rstrip('/')}/date={date}"

    def names(self, folder: str, prefix: str = "", suffix: str = "") -> list[str]:
        import pyarrow.fs as pafs

        infos = self.fs.get_file_info(pafs.FileSelector(folder, allow_not_found=True))
        return sorted(i.base_name for i in infos if i.type == pafs.FileType.File
                      and i.base_name.startswith(prefix) and i.base_name.endswith(suffix))

    def exists(self, path: str) -> bool:
        import pyarrow.fs as pafs

        return self.fs.get_file_info(path).type != pafs.FileType.NotFound

    def read_json(self, path: str):
        import json

        with self.fs.open_input_stream(path) as f:
            return json.loads(f.read())

    def mtimes(self, folder: str) -> dict:
        """{path: (size, mtime)} of every file under a folder (a touched file changes its entry)."""
        import pyarrow.fs as pafs

        infos = self.fs.get_file_info(pafs.FileSelector(folder, recursive=True, allow_not_found=True))
        return {i.path: (i.size, i.mtime_ns) for i in infos if i.type == pafs.FileType.File}

    def read_output(self, date_dir: str):
        """(scored rows, rejects) of a date as pyarrow tables (every part file, committed or not)."""
        import pyarrow as pa

        parts = [f"{date_dir}/{n}" for n in self.names(date_dir, "part-", ".parquet")]
        rejects = [f"{date_dir}/_rejects/{n}" for n in self.names(f"{date_dir}/_rejects", suffix=".parquet")]
        scored = pa.concat_tables([pq.read_table(p, filesystem=self.fs) for p in parts]) if parts else None
        rej = pa.concat_tables([pq.read_table(p, filesystem=self.fs) for p in rejects]) if rejects else None
        return scored, rej


@contextmanager
def local_ray(runtime_env: dict | None = None):
    """A local Ray of 2 CPUs for a test module (unless one is already up) whose Ray Data gives up
    after 120 s without progress instead of hanging; shut down at the end if started here."""
    import ray

    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, runtime_env=runtime_env)
    ctx = ray.data.DataContext.get_current()
    old = ctx.execution_no_progress_timeout_s
    ctx.execution_no_progress_timeout_s = 120
    try:
        yield
    finally:
        ctx.execution_no_progress_timeout_s = old
        if started:
            ray.shutdown()


def ray_pids(ray_tmp: Path, core_only: bool = False) -> list[int]:
    """Processes of the Ray sessions under ``ray_tmp``: by command line (raylet, GCS, monitors) or,
    unless ``core_only``, by an open file there (workers and agents rename their process titles)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if str(ray_tmp) in (entry / "cmdline").read_text(errors="replace") or not core_only and any(
                    str(ray_tmp) in os.readlink(fd) for fd in (entry / "fd").iterdir()):
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


@contextmanager
def private_ray_tmp(prefix: str):
    """A short, private Ray temp dir (AF_UNIX paths are limited to 107 bytes), so a test sees every
    process of its CLI runs and other Ray sessions on the machine are left alone; processes still
    holding files there at the end are killed."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    try:
        yield path
    finally:
        for pid in ray_pids(path):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(path, ignore_errors=True)
