"""The `tagging distill` job: a teacher artifact's soft targets (Ray Data + ONNX Runtime) -> one
student trained by Ray Train (the same worker, ``WorkerInputs.student``) -> artifact.

The teacher scores the student's rows in a Ray Data actor pool (one ONNX Runtime session per
actor, as batch scoring does): the training split, a pool of concatenations of training rows,
the input rows without a label-space tag and any ``--unlabeled`` texts. The scored rows go from
Ray Data straight into Ray Train as the training dataset; the driver never collects them. The
split, validation and test rows are the teacher's own (its data hash and splits.json must
match the data), and unlabeled texts whose id or text is in the teacher's validation or test
split are dropped, so nothing of them reaches the student.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
import time
from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from tagging.artifact import Artifact, ArtifactError, load_artifact, update_manifest
from tagging.config import TrainConfig, to_dict
from tagging.dataset import Prepared
from tagging.distill import (LinearTeacher, blend, concat_pool, filter_ranking, pack, pruned_state, starts_from_teacher,
                             student_config)
from tagging.training import WorkerInputs

logger = logging.getLogger(__name__)

SCORE_BATCH = 256


class TeacherTargets:
    """map_batches UDF (actor): the pinned teacher's probabilities (optionally blended with the
    calibrated linear teacher) -> the packed targets column ``y``."""

    def __init__(self, teacher_dir: str, teacher_sha: str, linear: bytes | None, weight: float, threads: int = 1) -> None:
        from tagging.onnx_scoring import OnnxScorer

        art = load_artifact(teacher_dir)
        if art.sha != teacher_sha:
            raise ArtifactError(f"{teacher_dir}: the teacher changed since distillation was planned; refusing to score with it")
        self.scorer = OnnxScorer(art, "fp32", threads=threads)
        self.linear = pickle.loads(linear) if linear else None
        self.weight = weight

    def __call__(self, batch: dict) -> dict:
        texts = batch["text"].tolist()
        soft = blend(self.scorer.probs(texts), self.linear.probs(texts) if self.linear else None, self.weight)
        y = pack(np.asarray(batch["hard"], np.float32), soft, batch["has_hard"], batch["in_pool"])
        return {"text": batch["text"], "length": batch["length"], "y": y}


def _text_key(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()


class _UnlabeledRows:
    """map_batches UDF: valid ``--unlabeled`` records -> student rows (soft targets only), without
    ids the data already holds and without the texts of the teacher's validation and test rows."""

    def __init__(self, held_out_ids: frozenset, held_out_texts: frozenset, num_labels: int) -> None:
        self.ids, self.texts, self.num_labels = held_out_ids, held_out_texts, num_labels

    def __call__(self, df) -> dict:
        keep = df["ok"].astype(bool) & ~df["id"].isin(self.ids) & ~df["text"].map(lambda t: isinstance(t, str) and _text_key(t) in self.texts)
        df = df[keep]
        n = len(df)
        return {"text": df["text"].astype(str).to_numpy(object), "length": df["length"].to_numpy(np.int64),
                "hard": np.zeros((n, self.num_labels), np.float32), "has_hard": np.zeros(n, np.float32), "in_pool": np.zeros(n, np.float32)}


def check_teacher_data(teacher: Artifact, prepared: Prepared) -> None:
    """The student learns on the teacher's split: same rows (data hash), labels and split by id."""
    if list(prepared.labels.labels) != list(teacher.labels.labels):
        raise ValueError(f"--data gives other labels than the teacher {teacher.path} was trained with")
    if prepared.data_hash != teacher.manifest["data_hash"]:
        raise ValueError(f"--data is not the data the teacher {teacher.path} was trained on (data hash "
                         f"{prepared.data_hash[:12]}..., the teacher's {teacher.manifest['data_hash'][:12]}...): distill with its "
                         "own training data (and its labels, tags file and data settings)")
    splits = teacher.splits
    if any(splits.get(i) != s for i, s in zip(prepared.rows["id"], prepared.rows["split"])):
        raise ValueError(f"the split of --data differs from the teacher's splits.json ({teacher.path}); distill with the teacher's seed")


def student_rows(cfg: TrainConfig, prepared: Prepared) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray, dict]:
    """The driver-side rows to score: training split, concatenation pool, unlabeled input rows;
    (texts, hard [rows, labels], has_hard, in_pool, counts), shuffled by seed (so each Ray Train
    worker's shard is a random mix of the kinds)."""
    d = cfg.distill
    texts, y = prepared.texts_and_targets("train")
    pool_t, pool_y = concat_pool(texts, y, d.concat_pool, cfg.seed)
    unl = prepared.unlabeled_texts() if d.unlabeled else []
    all_texts = texts + pool_t + unl
    hard = np.concatenate([y, pool_y, np.zeros((len(unl), y.shape[1]), np.float32)])
    has_hard = np.r_[np.ones(len(texts) + len(pool_t)), np.zeros(len(unl))].astype(np.float32)
    in_pool = np.r_[np.zeros(len(texts)), np.ones(len(pool_t)), np.zeros(len(unl))].astype(np.float32)
    order = np.random.default_rng([cfg.seed, 11]).permutation(len(all_texts))
    counts = {"train": len(texts), "concat_pool": len(pool_t), "unlabeled_in_data": len(unl)}
    return [all_texts[i] for i in order], hard[order], has_hard[order], in_pool[order], counts


def teacher_dataset(teacher: Artifact, cfg: TrainConfig, prepared: Prepared, unlabeled_units: Sequence = (),
                    linear: LinearTeacher | None = None, actors: int = 2, cpus_per_actor: float = 0.75):
    """A materialized Ray Dataset (text, length, y packed) of every student row scored by the teacher;
    and the row counts by kind."""
    import pyarrow as pa
    import ray
    from ray.data.extensions import ArrowTensorArray

    from tagging.dist.data import read_dataset

    texts, hard, has_hard, in_pool, counts = student_rows(cfg, prepared)
    block = pa.table({"text": pa.array(texts, pa.string()), "length": pa.array([len(t) for t in texts], pa.int64()),
                      "hard": ArrowTensorArray.from_numpy(hard), "has_hard": pa.array(has_hard), "in_pool": pa.array(in_pool)})
    ds = ray.data.from_blocks([block])
    if unlabeled_units:
        held = prepared.rows[prepared.rows["split"].isin(["val", "test"])]
        known = frozenset(prepared.rows["id"]) | frozenset([] if prepared.unlabeled is None else prepared.unlabeled["id"])
        extra = read_dataset(unlabeled_units, cfg.data, need_tags=False).map_batches(
            _UnlabeledRows(known, frozenset(map(_text_key, held["text"])), len(prepared.labels)), batch_format="pandas", num_cpus=0.25)
        ds = ds.union(extra)
    blob = pickle.dumps(linear) if linear is not None else None
    ds = ds.map_batches(TeacherTargets, fn_constructor_args=(str(teacher.path), teacher.sha, blob, cfg.distill.teacher_linear),
                        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=actors), num_cpus=cpus_per_actor,
                        batch_size=SCORE_BATCH, batch_format="numpy")
    if unlabeled_units:
        ds = ds.random_shuffle(seed=cfg.seed)  # mix the extra texts into every worker's shard
    ds = ds.materialize()
    counts["unlabeled_extra"] = ds.count() - sum(counts.values())
    return ds, counts


def teacher_member(teacher: Artifact):
    """The teacher's member 0 (a CharCNN, eval mode): where a student with ``distill.student_init``
    'teacher' starts."""
    from tagging.model import members

    return members(teacher.load_model())[0]


def student_start(inputs: WorkerInputs, member, teacher_vocab, texts: Sequence[str]) -> WorkerInputs:
    """``inputs`` with the student's first weights cut from the teacher ``member``
    (``tagging.distill.pruned_state``; random weights seeded as usual fill what the teacher lacks).
    A student with fewer filters keeps each width's most useful ones on ``texts`` (the training
    split's; ``tagging.distill.filter_ranking``). Callers decide with ``starts_from_teacher``."""
    import torch

    from tagging.model import CharCNN

    cfg = inputs.config
    torch.manual_seed(cfg.seed)
    fresh = CharCNN(inputs.vocab.size, inputs.num_labels, cfg.model)
    ranking = filter_ranking(member, teacher_vocab, texts) if cfg.model.num_filters < member.cfg.num_filters else None
    return replace(inputs, initial_state=pruned_state(member, teacher_vocab, fresh, inputs.vocab, ranking))


def distillation_record(teacher: Artifact, cfg: TrainConfig, counts: dict, unlabeled: Sequence[str] = ()) -> dict:
    """The student manifest's ``distillation``: its teacher (identity, size, test metrics), the
    settings and the rows it learned from."""
    teacher_info = {"path": str(teacher.path), "sha": teacher.sha, "weights_sha256": teacher.manifest["files"]["model.pt"],
                    "model_version": teacher.model_version, "members": teacher.config.model.ensemble,
                    "test_metrics": teacher.manifest["metrics"]["overall"], "config_model": to_dict(teacher.config.model)}
    return {"teacher": teacher_info, "settings": to_dict(cfg.distill), "rows": counts, "unlabeled_inputs": list(unlabeled)}


def run_distillation(
    cfg: TrainConfig,
    teacher_dir: str,
    data: Sequence[str],
    out: str,
    *,
    unlabeled: Sequence[str] = (),
    run_name: str | None = None,
    storage: str = "runs",
    address: str | None = None,
    prepared: Prepared | None = None,
    fresh: bool = False,
    tracking_uri: str | None = None,
    tracked=None,
) -> Artifact:
    """Distill the teacher artifact into one student trained on ``data`` (the teacher's training
    data) and write the student's artifact to ``out``. ``cfg`` is the teacher's config with the
    student's settings (``distill.*``) on top; ``prepared`` skips reading ``data`` again
    (`tagging train` passes the rows it trained the teacher on). MLflow: the student is the run
    ``tracked`` (`tagging train` passes a child of its run), else a run of its own when
    ``tracking_uri`` is given."""
    from pathlib import Path

    from tagging.dist.runtime import init_ray
    from tagging.dist.training import (_with_tensor, check_inputs, check_resume, discard_runs, new_run_name, prepare_with_ray,
                                       run_record, track_artifact, tracking_record, train_member, with_rejects)
    from tagging.readers import check_columns, plan_units
    from tagging.tracking import start_run
    from tagging.training import finalize_artifact, split_inputs

    t_start = time.perf_counter()
    if Path(out).exists() and any(Path(out).iterdir()):
        raise FileExistsError(f"{out}: exists and is not empty; choose a new --out")
    teacher = load_artifact(teacher_dir)
    from_teacher = starts_from_teacher(cfg.distill.student_init, teacher.config.model, student_config(cfg).model)
    run_name = run_name or new_run_name("distill")
    storage = os.path.abspath(storage) if "://" not in storage else storage
    units = check_inputs(cfg, data) if prepared is None else None
    unlabeled_units = plan_units(list(unlabeled)) if unlabeled else []
    if unlabeled_units:
        check_columns(unlabeled_units, cfg.data, need_tags=False)
    if fresh:
        discard_runs(storage, [run_name])
    with tracked if tracked is not None else start_run("distill", tracking_uri, run_name, resume=not fresh) as tracked:
        tracked.log_params({**to_dict(cfg), "teacher": str(teacher.path), "teacher_sha": teacher.sha, "inputs": list(data),
                            "unlabeled": list(unlabeled)})
        init_ray(address)
        prepared = prepared if prepared is not None else prepare_with_ray(cfg, data, units)
        check_teacher_data(teacher, prepared)
        scfg = student_config(cfg)
        vocab, inputs, truncated = split_inputs(scfg, prepared)
        inputs = replace(inputs, student=True)
        if from_teacher:  # the teacher's weights are loaded only then
            inputs = student_start(inputs, teacher_member(teacher), teacher.vocab, prepared.texts_and_targets("train")[0])
        logger.info(f"the student starts {'as a cut of the teacher member 0' if from_teacher else 'from random weights'} "
                    f"(distill.student_init {cfg.distill.student_init})")
        record = {**run_record(scfg, prepared, vocab), "teacher_weights": teacher.manifest["files"]["model.pt"],
                  "unlabeled": sorted(unlabeled)}
        check_resume(storage, run_name, 1, record)
        linear = None
        if cfg.distill.teacher_linear > 0:
            (tt, yt), (vt, yv) = prepared.texts_and_targets("train"), prepared.texts_and_targets("val")
            linear = LinearTeacher(cfg.seed).fit(tt, yt, vt, yv, prepared.labels)
        t0 = time.perf_counter()
        train_ds, counts = teacher_dataset(teacher, cfg, prepared, unlabeled_units, linear)
        logger.info(f"teacher {teacher.model_version} scored {sum(counts.values())} student rows in "
                    f"{time.perf_counter() - t0:.1f} s: {counts}")
        datasets = {"train": train_ds, "val": _with_tensor(prepared.split("val"), prepared.texts_and_targets("val")[1])}
        state = train_member(inputs, datasets, run_name, 0, storage, tracked)
        art = finalize_artifact(scfg, prepared, vocab, [state], out, run_name, list(data), truncated,
                                {"name": run_name, "storage": storage, "seconds": round(time.perf_counter() - t_start, 1)},
                                extra={"distillation": {**distillation_record(teacher, cfg, counts, unlabeled),
                                                        "student_start": "teacher member 0" if from_teacher else "random"}})
        art = update_manifest(with_rejects(art, prepared), {}, tracking_record(tracked))
        track_artifact(tracked, art)
    t = teacher.manifest["metrics"]["overall"]["f1"]
    logger.info(f"student {art.path}: test weighted F1 {art.manifest['metrics']['overall']['f1']:.4f} (teacher {t:.4f})")
    return art


def keep_teacher(student: Artifact, teacher_dir: str) -> Artifact:
    """Move the teacher's artifact into the student's (``STUDENT/teacher``) and point the student's
    manifest at it; the student's own files and checksums are unchanged."""
    import shutil

    shutil.move(teacher_dir, student.path / "teacher")
    distillation = student.manifest["distillation"]
    return update_manifest(student, {}, {"distillation": {**distillation, "teacher": {**distillation["teacher"], "path": "teacher"}}})
