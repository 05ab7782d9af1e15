"""The `tagging train` job: Ray Data read -> core prepare -> Ray Train DDP -> artifact."""

from __future__ import annotations

import logging
import datetime as dt
import json
import os
import secrets
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from tagging.artifact import Artifact, ArtifactError, code_version, load_artifact, update_manifest
from tagging.config import TrainConfig, absolute_paths, to_dict
from tagging.dataset import Prepared, prepare, summary_line
from tagging.readers import check_columns, load_label_inputs, plan_units
from tagging.training import WorkerInputs, finalize_artifact, member_run_name, split_inputs
from tagging.vocab import CharVocab

logger = logging.getLogger(__name__)


def new_run_name(prefix: str = "train") -> str:
    """Unique per run (a reused name silently resumes that run in Ray Train V2)."""
    return f"{prefix}-{dt.datetime.now():%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"


def check_inputs(cfg: TrainConfig, data: Sequence[str]) -> list:
    """Fail before any work (no Ray started) on a missing file, column, labels or tags file."""
    units = plan_units(data)
    check_columns(units, cfg.data, need_tags=True)
    load_label_inputs(cfg.data)
    return units


def prepare_with_ray(cfg: TrainConfig, data: Sequence[str], units: list | None = None) -> Prepared:
    from tagging.dist.data import collect_training_rows

    units = units if units is not None else check_inputs(cfg, data)
    tag_index, fixed = load_label_inputs(cfg.data)
    rows, rejects = collect_training_rows(units, cfg.data)
    prepared = prepare(rows, rejects, cfg.data, cfg.seed, tag_index, fixed)
    logger.info(f"{summary_line(prepared.counts)}")
    return prepared


def _with_tensor(table: pd.DataFrame, y: np.ndarray):
    import pyarrow as pa
    import ray
    from ray.data.extensions import ArrowTensorArray

    arrow = pa.table({"text": pa.array(table["text"].tolist(), pa.string()),
                      "length": pa.array(table["length"].to_numpy(), pa.int64()),
                      "y": ArrowTensorArray.from_numpy(y)})
    # from_blocks computes block metadata here; from_arrow runs a remote task for it that asks
    # for a whole CPU, which a trial on a 1-CPU node (0.01 CPU held by the trial) never gets.
    return ray.data.from_blocks([arrow])


def training_inputs(cfg: TrainConfig, prepared: Prepared) -> tuple[CharVocab, WorkerInputs, dict, dict]:
    """Vocabulary (train split only), the workers' inputs, Ray datasets (train, val) and truncation counts."""
    vocab, inputs, truncated = split_inputs(cfg, prepared)
    datasets = {name: _with_tensor(prepared.split(name), prepared.texts_and_targets(name)[1]) for name in ("train", "val")}
    return vocab, inputs, datasets, truncated


def run_training(
    cfg: TrainConfig,
    data: Sequence[str],
    out: str,
    *,
    run_name: str | None = None,
    storage: str = "runs",
    address: str | None = None,
    fresh: bool = False,
    tracking_uri: str | None = None,
) -> Artifact:
    """Train end to end and write the artifact to ``out``; returns the loaded artifact.

    A run whose ``run_name`` already has checkpoints in ``storage`` resumes from them if it was
    started with the same data, config, labels and vocabulary (``check_resume``), unless
    ``fresh``: then those checkpoints are deleted first and the run starts over.

    With ``distill.enabled`` the ensemble is the teacher: it is saved first, one student is
    distilled from it (tagging.dist.distill, run ``RUN-student``) into ``out``, and the teacher's
    artifact is kept inside the student's as ``out/teacher``.
    With ``tracking_uri`` the run is an MLflow run (``track_training``; a resumed run continues it;
    a student is its child run).
    """
    from tagging.dist.runtime import init_ray
    from tagging.tracking import start_run

    t_start = time.perf_counter()
    if Path(out).exists() and any(Path(out).iterdir()):
        raise FileExistsError(f"{out}: exists and is not empty; choose a new --out")
    run_name = run_name or new_run_name()
    storage = os.path.abspath(storage) if "://" not in storage else storage
    cfg = absolute_paths(cfg)  # the artifact's config names the files it was trained with, from anywhere
    units = check_inputs(cfg, data)
    distill = cfg.distill.enabled and cfg.model.ensemble > 1  # a one-model run has no ensemble to distill
    if fresh:
        discard_runs(storage, [member_run_name(run_name, k) for k in range(cfg.model.ensemble)] + [f"{run_name}-student"] * distill)
    with start_run("train", tracking_uri, run_name, resume=not fresh) as tracked:
        tracked.log_params({**to_dict(cfg), "inputs": list(data), "storage": storage})
        init_ray(address)
        prepared = prepare_with_ray(cfg, data, units)
        teacher_out = str(Path(out).parent / f".{Path(out).name}.teacher-{run_name}") if distill else out
        if distill and _finished_teacher(teacher_out, run_name):
            logger.info(f"teacher {teacher_out} of run {run_name} is already trained")
        else:
            if distill:
                shutil.rmtree(teacher_out, ignore_errors=True)  # a teacher cut off while it was written
            vocab, inputs, datasets, truncated = training_inputs(cfg, prepared)
            logger.info(f"labels {len(prepared.labels)}, vocabulary {vocab.size}, texts over max_length {cfg.model.max_length}: {truncated}")
            check_resume(storage, run_name, cfg.model.ensemble, run_record(cfg, prepared, vocab))
            states = [train_member(inputs, datasets, run_name, k, storage, tracked) for k in range(cfg.model.ensemble)]
            art = finalize_artifact(cfg, prepared, vocab, states, teacher_out, run_name, list(data), truncated,
                                    {"name": run_name, "storage": storage, "seconds": round(time.perf_counter() - t_start, 1)})
            art = with_rejects(art, prepared)
            logger.info(f"{'teacher ' if distill else ''}artifact {art.path} (model_version {art.model_version}); "
                        f"rejects: {art.path / 'rejects.parquet'}")
        if distill:
            from tagging.dist.distill import keep_teacher, run_distillation

            student = run_distillation(cfg, teacher_out, data, out, run_name=f"{run_name}-student", storage=storage, address=address,
                                       prepared=prepared, tracked=tracked.child(f"{run_name}-student", {"student": "true"}))
            art = keep_teacher(student, teacher_out)
        art = update_manifest(art, {}, tracking_record(tracked))
        track_artifact(tracked, art)
    return art


def _finished_teacher(path: str, run_name: str) -> bool:
    """A teacher artifact of ``run_name`` already written (a rerun after the student was cut off)."""
    try:
        return load_artifact(path).model_version == run_name
    except ArtifactError:
        return False


def with_rejects(art: Artifact, prepared: Prepared) -> Artifact:
    """The artifact with its training rejects (rejects.parquet: id, reason, source, raw) added."""
    path = art.path / "rejects.parquet"
    prepared.rejects.astype({"id": "string", "reason": "string", "source": "string", "raw": "string"}).to_parquet(path, index=False)
    return update_manifest(art, {"rejects.parquet": path}, {})


def tracking_record(run) -> dict:
    """The manifest's ``tracking`` entry (which MLflow run trained it; `tagging register` logs the
    model to that run) or nothing when the run is not tracked."""
    return {"tracking": {"uri": run.ref.uri, "run_id": run.ref.run_id, "experiment": run.ref.experiment_name}} if run.active else {}


def track_artifact(run, art: Artifact) -> None:
    """What a finished training logs: test metrics, the artifact's directory and its JSON files."""
    metrics = art.manifest["metrics"]
    run.log_metrics({f"test_{k}": v for k, v in metrics["overall"].items()} | {
        "test_global_threshold_f1": metrics.get("global_threshold_f1"), "parameters": art.manifest.get("parameters"),
        **{f"rows_{k}": v for k, v in art.manifest.get("data", {}).items() if isinstance(v, int)}})
    run.log_metrics({f"test_f1/{tag}": v["f1"] for tag, v in metrics.get("per_class", {}).items() if isinstance(v, dict)})
    run.set_tags({"artifact_dir": str(art.path), "model_version": art.model_version, "manifest_sha256": art.sha,
                  "data_hash": art.manifest.get("data_hash")})
    for name in ("manifest.json", "metrics.json", "history.json", "thresholds.json", "labels.json"):
        run.log_artifact(art.path / name, "artifact")


def _storage_fs(storage: str):
    """(pyarrow filesystem, root path) of a local path or any pyarrow URI."""
    import pyarrow.fs as pafs

    fs, root = pafs.FileSystem.from_uri(storage) if "://" in storage else (pafs.LocalFileSystem(), storage)
    return fs, root.rstrip("/")


def discard_runs(storage: str, names: Sequence[str]) -> None:
    """Delete the Ray Train run folders ``storage/<name>`` that exist (local path or any pyarrow URI)."""
    import pyarrow.fs as pafs

    fs, root = _storage_fs(storage)
    for name in names:
        path = f"{root}/{name}"
        if fs.get_file_info(path).type == pafs.FileType.Directory:
            fs.delete_dir(path)
            logger.info(f"--fresh: deleted the checkpoints of run {name} in {storage}")


RUN_RECORD = "tagging_run.json"
# Settings a resumed run may change: they decide where and how fast it runs, not what it learns.
RESUME_NEUTRAL = ("max_failures", "cache_shards", "cpus_per_worker", "threads_per_worker")


class RunMismatch(ValueError):
    """A reused run name whose checkpoints were trained on other inputs."""


def run_record(cfg: TrainConfig, prepared: Prepared, vocab: CharVocab) -> dict:
    """What a run is started with; kept as ``storage/<run_name>/tagging_run.json``."""
    return {"data_hash": prepared.data_hash, "config": to_dict(cfg), "labels": list(prepared.labels.labels),
            "vocabulary": list(vocab.chars), "code": code_version()}


def _flat(d: dict, prefix: str = "") -> dict:
    """Nested config dict -> {"model.num_filters": 64, ...}."""
    out = {}
    for key, value in d.items():
        out.update(_flat(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value})
    return out


def record_differences(old: dict, new: dict) -> list[str]:
    """What differs between two run records, in words (the code aside: it only warns)."""
    out = []
    if old.get("data_hash") != new["data_hash"]:
        out.append(f"data (hash {str(old.get('data_hash'))[:12]}, now {new['data_hash'][:12]})")
    a, b = _flat(old.get("config", {})), _flat(new["config"])
    keys = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k) and k not in RESUME_NEUTRAL)
    if keys:
        out.append(f"config ({', '.join(keys)})")
    out += [name for name in ("labels", "vocabulary") if old.get(name) != new[name]]
    return out


def check_resume(storage: str, run_name: str, members: int, record: dict) -> None:
    """Before any Ray Train work: a run whose member folders hold checkpoints may resume only with
    the inputs its record names (else RunMismatch, one line); other code only warns. A run without
    checkpoints (re)writes its record."""
    import pyarrow.fs as pafs

    record = json.loads(json.dumps(record))  # compared as it reads back (tuples as lists)
    fs, root = _storage_fs(storage)
    path = f"{root}/{run_name}/{RUN_RECORD}"
    started = any(info.base_name.startswith("epoch-") for k in range(members)
                  for info in fs.get_file_info(pafs.FileSelector(f"{root}/{member_run_name(run_name, k)}", allow_not_found=True)))
    if not started:
        fs.create_dir(f"{root}/{run_name}", recursive=True)
        with fs.open_output_stream(path) as f:
            f.write((json.dumps(record, indent=1) + "\n").encode())
        return
    try:
        with fs.open_input_stream(path) as f:
            old = json.loads(f.read())
    except (FileNotFoundError, OSError, ValueError):
        old = None
    retry = "choose a new --run-name, or pass --fresh to discard its checkpoints"
    if old is None:
        raise RunMismatch(f"run {run_name} in {storage} has checkpoints but no readable {RUN_RECORD} saying what it was started with: {retry}")
    diffs = record_differences(old, record)
    if diffs:
        raise RunMismatch(f"run {run_name} in {storage} was started with other {'; '.join(diffs)}: resuming it would mix them; {retry}")
    if old.get("code") != record["code"]:
        logger.warning(f"run {run_name} was started with other code ({old.get('code')}), resuming it with {record['code']}")


def train_member(inputs: WorkerInputs, datasets: dict, run_name: str, k: int, storage: str,
                 tracked=None) -> dict:
    """One Ray Train run: ensemble member ``k`` of ``inputs.config`` (seed + k), resumed if its
    run already has checkpoints; returns its final checkpoint state.

    ``tracked`` (a tagging.tracking.Run): rank 0's epochs go to it, or to a child run per member
    when the config is an ensemble."""
    from tagging.dist.worker import build_trainer, load_checkpoint_state

    cfg, name = inputs.config, member_run_name(run_name, k)
    member = f" (ensemble member {k + 1} of {cfg.model.ensemble}, seed {cfg.seed + k})" if cfg.model.ensemble > 1 else ""
    logger.info(f"run {name}{member}: {cfg.workers} workers x {cfg.cpus_per_worker} CPU, checkpoints in {storage}/{name}")
    target = None
    if tracked is not None and tracked.active:
        target = tracked.child(f"{run_name}-m{k}", {"member": str(k), "seed": str(cfg.seed + k)}) if cfg.model.ensemble > 1 else tracked
    callbacks = None
    if target is not None and target.active:
        from tagging.dist.tracking import EpochMetrics

        callbacks = [EpochMetrics(target.ref)]
    try:
        result = build_trainer(inputs.member(k, os.path.join(storage, name)), datasets, name, storage, callbacks=callbacks).fit()
        if result.checkpoint is None:
            raise RuntimeError(f"run {name} finished without a checkpoint")
        state = load_checkpoint_state(result.checkpoint)
    except BaseException:
        if target is not None and target is not tracked:
            target.end("FAILED")
        raise
    if target is not None:
        from tagging.dist.tracking import EPOCH_METRICS

        target.log_epochs(state["history"], EPOCH_METRICS)
    if target is not None and target is not tracked:
        stop = state["early_stopping"]
        target.log_metrics({"best_val_f1": stop["best_score"], "best_epoch": stop["best_epoch"], "epochs": len(state["history"])})
        target.end()
    return state
