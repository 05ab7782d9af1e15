"""`tagging tune`: Ray Tune over Ray Train trials, then a threshold-policy stage, then the artifact.

Stage 1 (hyperparameters): each trial is a Tune function trainable that launches a
TorchTrainer with TuneReportCallback (the Train V2 pattern); every epoch's rank-0 report is a
Tune iteration and ASHA stops weak trials on validation F1.
Stage 2 (thresholds): over the best model's saved validation scores, a Tune grid over the
threshold policy (per-class F1-optimal thresholds shrunk toward the global one, with a
minimum-support fallback), each policy scored by K-fold cross-validation over validation rows.
The best trial is member 0 of the tuned model; with ``model.ensemble`` K > 1 (the default),
K-1 more Ray Train runs of its config (seeds seed+1..) complete the ensemble, exactly as
`tagging train` builds it. The threshold stage runs on that model's validation scores, and
its weights + the chosen thresholds become the artifact.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from tagging.config import TrainConfig, absolute_paths, from_dict, merge, to_dict
from tune.space import NEEDS_TAGS_FILE, THRESHOLD_SPACE, base_point, check_space, load_space, to_tune

logger = logging.getLogger(__name__)
SEARCHES = ("random", "optuna")

STUDENT_ROWS_KEYS = ("distill.concat_pool", "distill.unlabeled", "distill.teacher_linear")
# what a student started from the teacher (distill.student_init 'teacher') keeps as the teacher has it
# ('auto' starts each trial's student from the teacher where it is a cut, else from random weights)
STUDENT_INIT_KEPT = ("model.embedding_dim", "model.hidden_dim", "model.batch_norm")
RESULT_COLUMNS = ["trial", "val_f1", "epochs", "seconds", "parameters", "docs_per_s_fp32", "docs_per_s_int8", "stopped_early",
                  "base", "params"]


def _trial(params: dict, *, prepared, base: dict, storage: str, experiment: str, student_rows=None, teacher=None) -> None:
    """One Tune trial = one Ray Train run (reported to Tune by TuneReportCallback). With
    ``student_rows`` (the teacher-scored rows of tagging.dist.distill) the trial trains a student;
    ``teacher`` (its member 0 and vocabulary) is where a student with distill.student_init 'teacher' starts."""
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from tagging.dist.training import training_inputs
    from tagging.dist.worker import build_trainer

    _, inputs, datasets, _ = training_inputs(from_dict(merge(base, params)), prepared)
    if student_rows is not None:
        from tagging.dist.distill import student_start
        from tagging.distill import starts_from_teacher

        inputs, datasets = replace(inputs, student=True), {**datasets, "train": student_rows}
        member, vocab = teacher
        if starts_from_teacher(inputs.config.distill.student_init, member.cfg, inputs.config.model):
            inputs = student_start(inputs, member, vocab, prepared.texts_and_targets("train")[0])
    name = f"{experiment}-{tune.get_context().get_trial_id()}"
    trainer = build_trainer(replace(inputs, run_dir=os.path.join(storage, name)), datasets, name, storage, callbacks=[TuneReportCallback()])
    trainer.fit()


def _threshold_trial(params: dict, *, y_val: np.ndarray, p_val: np.ndarray, folds: int, seed: int) -> None:
    from ray import tune

    from tagging.thresholds import cv_policy_score

    tune.report({"cv_f1": cv_policy_score(y_val, p_val, int(params["min_support"]), float(params["shrink"]), folds, seed)})


def latest_checkpoint(run_dir: Path) -> Path:
    ckpts = sorted(p for p in run_dir.glob("epoch-*") if p.is_dir())
    if not ckpts:
        raise RuntimeError(f"{run_dir}: no checkpoint")
    return ckpts[-1]


def _same(a, b) -> bool:
    return a == b or (isinstance(a, float) and isinstance(b, float) and abs(a - b) < 1e-12)


def _trial_weights(run_dir: Path) -> dict | None:
    """A trial's best weights (its latest checkpoint's early-stopping copy), None if unreadable."""
    import ray.train

    from tagging.dist.worker import load_checkpoint_state

    try:
        state = load_checkpoint_state(ray.train.Checkpoint.from_directory(str(latest_checkpoint(run_dir))))
    except Exception:  # noqa: BLE001 - a trial without a readable checkpoint is timed with random weights
        return None
    return state["early_stopping"].get("best_state") or state["model"]


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of points not dominated in (quality, speed), both to maximize."""
    front = []
    for i, (q, s) in enumerate(points):
        if not any((q2 >= q and s2 >= s) and (q2 > q or s2 > s) for j, (q2, s2) in enumerate(points) if j != i):
            front.append(i)
    return sorted(front, key=lambda i: points[i][1])


def asha_grace_period(max_epochs: int, grace_period: int | None = None) -> int:
    """ASHA's grace: epochs a trial runs before it can be stopped. Given, or a quarter of
    ``max_epochs`` between 1 and 10 (past the cosine warm-up, the first tenth, during which a
    trial looks weak)."""
    return min(10, max(1, max_epochs // 4)) if grace_period is None else grace_period


def check_tune_options(*, trials: int, max_epochs: int, workers_per_trial: int, cpus_per_worker: float,
                       max_concurrent: int, search: str, grace_period: int | None) -> None:
    """Refuse impossible option combinations before any Ray work (ValueError naming the option)."""
    checks = [
        ("trials", trials, trials >= 1, "must be >= 1"),
        ("max-epochs", max_epochs, max_epochs >= 1, "must be >= 1"),
        ("workers-per-trial", workers_per_trial, workers_per_trial >= 1, "must be >= 1 (each trial is a Ray Train run with checkpoints)"),
        ("cpus-per-worker", cpus_per_worker, cpus_per_worker > 0, "must be > 0"),
        ("max-concurrent", max_concurrent, max_concurrent >= 1, "must be >= 1"),
        ("search", search, search in SEARCHES, f"must be one of {', '.join(SEARCHES)}"),
        ("grace-period", grace_period, grace_period is None or 1 <= grace_period <= max_epochs,
         f"(ASHA's epochs before it may stop a trial) must be between 1 and --max-epochs ({max_epochs})"),
    ]
    for option, value, ok, rule in checks:
        if not ok:
            raise ValueError(f"--{option} {rule}, got {value!r}")


def run_tune(
    base: TrainConfig,
    data: Sequence[str],
    out: str,
    *,
    trials: int = 12,
    max_epochs: int = 40,
    workers_per_trial: int = 1,
    cpus_per_worker: float = 0.9,
    max_concurrent: int = 2,
    search: str = "random",
    space_path: str | None = None,
    grace_period: int | None = None,
    include_base: bool = True,
    measure_cost: bool = True,
    address: str | None = None,
    teacher: str | None = None,
    tracked=None,
) -> dict:
    """Search, pick the best trial, tune its threshold policy, write leaderboard + artifact to ``out``.

    Options, the search space and the inputs are checked before Ray starts; ``grace_period``
    None derives ASHA's grace from ``max_epochs`` (asha_grace_period). With ``teacher`` (an
    artifact; ``base`` is its config with any changes) every trial is a distillation student of
    it: the teacher scores the student rows once (tagging.dist.distill) and the trials share
    them, so settings that change those rows (distill.concat_pool, unlabeled, teacher_linear)
    stay fixed; the tuned artifact is the best student. ``tracked`` (a tagging.tracking.Run, the
    caller's): every trial becomes a child run of it, and so does every further ensemble member;
    the search settings, the best trial and the test metrics go to it."""
    check_tune_options(trials=trials, max_epochs=max_epochs, workers_per_trial=workers_per_trial, cpus_per_worker=cpus_per_worker,
                       max_concurrent=max_concurrent, search=search, grace_period=grace_period)
    grace = asha_grace_period(max_epochs, grace_period)
    import ray
    import ray.train
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    from tagging.dist.runtime import init_ray
    from tagging.artifact import update_manifest
    from tagging.batching import predict_texts
    from tagging.dist.training import (check_inputs, finalize_artifact, prepare_with_ray, track_artifact, tracking_record, train_member,
                                       training_inputs)
    from tagging.dist.worker import load_checkpoint_state
    from tagging.model import CharCNN, assemble, count_parameters
    from tagging.vocab import CharVocab

    base = absolute_paths(base)  # trials run in their own directories
    fixed = {"workers": workers_per_trial, "cpus_per_worker": cpus_per_worker, "max_epochs": max_epochs,
             "threads_per_worker": max(1, int(cpus_per_worker)), "max_failures": 0}
    # Trials are single models (an ensemble would multiply every trial's cost by K); the tuned
    # artifact below completes the best trial into the ensemble.
    base_dict = merge(to_dict(base), {**fixed, "model.ensemble": 1})
    if teacher:  # trials are students: the distill.student_* settings become the model the space varies
        from tagging.distill import student_config

        student = student_config(from_dict(base_dict))
        base_dict = to_dict(replace(student, distill=replace(student.distill, student_num_filters=None, student_filter_widths=None,
                                                             student_max_width=None, student_max_length=None, student_concat_rate=None,
                                                             student_ema_decay=None)))
    from_dict(base_dict)  # the fixed trial settings must make a valid config
    space = load_space(space_path)
    if not base.data.tags_file:
        for key in NEEDS_TAGS_FILE:
            space.pop(key, None)
    fixed_by_teacher = sorted(k for k in space if k in STUDENT_ROWS_KEYS) if teacher else []
    if fixed_by_teacher:
        raise ValueError(f"with --teacher the teacher scores the student rows once: {', '.join(fixed_by_teacher)} cannot be searched")
    init = space.get("distill.student_init", {}).get("fixed", base_dict.get("distill", {}).get("student_init"))
    kept = sorted(k for k in STUDENT_INIT_KEPT if k in space and "fixed" not in space[k]) if teacher and init == "teacher" else []
    if kept:
        raise ValueError(f"with distill.student_init 'teacher' a student keeps the teacher's {', '.join(kept)}: they cannot "
                         "be searched (fix them to the teacher's, or remove them from the space with null)")
    check_space(space, base_dict)
    outdir = Path(out).absolute()
    if (outdir / "model").exists():
        raise FileExistsError(f"{outdir}/model exists; choose a new --out")
    units = check_inputs(base, data)
    outdir.mkdir(parents=True, exist_ok=True)
    storage = str(outdir / "ray")
    experiment = f"tune-{dt.datetime.now():%Y%m%d-%H%M%S}"
    if tracked is None:
        from tagging.tracking import Run

        tracked = Run()
    tracked.set_tags({"tune_experiment": experiment, "storage": storage, "out": str(outdir)})
    tracked.log_params({**base_dict, "tune.trials": trials, "tune.search": search, "tune.max_epochs": max_epochs,
                        "tune.grace_period": grace, "tune.max_concurrent": max_concurrent, "tune.space": json.dumps(space, default=str),
                        "inputs": list(data)})
    init_ray(address)
    cpus = ray.cluster_resources().get("CPU", 0)
    if workers_per_trial * cpus_per_worker > cpus:
        raise ValueError(f"a trial needs {workers_per_trial} x {cpus_per_worker} CPUs; the cluster has {cpus:g}: "
                         "lower --workers-per-trial or --cpus-per-worker")
    prepared = prepare_with_ray(base, data, units=units)
    student_rows = distillation = teacher_start = None
    if teacher:
        from tagging.artifact import load_artifact
        from tagging.dist.distill import check_teacher_data, distillation_record, teacher_dataset, teacher_member
        from tagging.distill import LinearTeacher

        teacher_art = load_artifact(teacher)
        check_teacher_data(teacher_art, prepared)
        linear = None
        if base.distill.teacher_linear > 0:
            linear = LinearTeacher(base.seed).fit(*prepared.texts_and_targets("train"), *prepared.texts_and_targets("val"), prepared.labels)
        student_rows, counts = teacher_dataset(teacher_art, base, prepared, linear=linear)
        distillation = {"distillation": distillation_record(teacher_art, base, counts)}
        teacher_start = (teacher_member(teacher_art), teacher_art.vocab)
        logger.info(f"trials are students of {teacher_art.path}: {counts}")
    start = base_point(space, base_dict) if include_base else None
    points = [start] if start else None
    search_alg = None
    if search == "optuna":
        from ray.tune.search import ConcurrencyLimiter
        from ray.tune.search.optuna import OptunaSearch

        search_alg = ConcurrencyLimiter(OptunaSearch(seed=base.seed, points_to_evaluate=points), max_concurrent=max_concurrent)
    elif points:
        from ray.tune.search import BasicVariantGenerator

        # explicit generator: it needs max_concurrent itself (Tune ignores max_concurrent_trials then)
        search_alg = BasicVariantGenerator(points_to_evaluate=points, max_concurrent=max_concurrent, random_state=base.seed)
    if start:
        logger.info(f"first trial: the base config {start}")
    logger.info(f"{trials} trials of at most {max_epochs} epochs, ASHA grace {grace} epochs")
    trainable = tune.with_resources(
        tune.with_parameters(_trial, prepared=prepared, base=base_dict, storage=storage, experiment=experiment, student_rows=student_rows,
                             teacher=teacher_start),
        {"CPU": 0.01},
    )
    t0 = time.perf_counter()
    tuner = tune.Tuner(
        trainable,
        param_space=to_tune(space),
        tune_config=tune.TuneConfig(
            metric="val_f1", mode="max", num_samples=trials, max_concurrent_trials=max_concurrent, search_alg=search_alg,
            scheduler=ASHAScheduler(time_attr="training_iteration", max_t=max_epochs, grace_period=grace, reduction_factor=2),
        ),
        run_config=tune.RunConfig(name=experiment, storage_path=storage, verbose=0, callbacks=trial_runs(tracked)),
    )
    grid = tuner.fit()
    logger.info(f"{len(grid)} trials in {time.perf_counter() - t0:.0f} s")

    train_df = prepared.split("train")
    vocab = CharVocab.fit(train_df["text"])
    lengths = prepared.split("val")["length"].to_numpy()
    calibration = train_df["text"].sample(n=min(512, len(train_df)), random_state=base.seed).tolist()
    rows, failed = [], []
    for result in grid:
        if result.error or not result.metrics:
            logger.warning(f"trial {result.path} failed: {result.error}")
            failed.append({"trial": Path(result.path).name, "error": str(result.error).strip().splitlines()[-1][:300] if result.error else "no result"})
            continue
        params = dict(result.config)
        cfg = from_dict(merge(base_dict, params))
        epochs = int(result.metrics.get("training_iteration", 0))
        row = {
            "trial": result.metrics.get("trial_id"), "val_f1": float(result.metrics.get("best_val_f1", np.nan)),
            "epochs": epochs, "seconds": float(result.metrics.get("time_total_s", np.nan)),
            "parameters": count_parameters(CharCNN(vocab.size, len(prepared.labels), cfg.model)),
            "docs_per_s_fp32": np.nan, "docs_per_s_int8": np.nan,
            "stopped_early": bool(epochs < max_epochs and not result.metrics.get("stopped", False)),
            "base": bool(start) and all(_same(params.get(k), v) for k, v in start.items()),
            "params": json.dumps(dict(sorted(params.items()))),
        }
        if measure_cost:
            from tune.cost import onnx_docs_per_s

            weights = _trial_weights(Path(storage) / f"{experiment}-{row['trial']}")
            row["docs_per_s_fp32"] = onnx_docs_per_s(cfg.model, vocab.size, len(prepared.labels), lengths, state_dict=weights)
            row["docs_per_s_int8"] = onnx_docs_per_s(cfg.model, vocab.size, len(prepared.labels), lengths, int8=True,
                                                     state_dict=weights, vocab=vocab, calibration_texts=calibration)
        rows.append(row)
    if not rows:
        raise RuntimeError(f"every tuning trial failed; the first: {failed[0]['error'] if failed else 'no trials'}")
    if failed:
        logger.warning(f"{len(failed)} of {len(failed) + len(rows)} trials failed (not on the leaderboard); first error: {failed[0]['error']}")
    board = pd.DataFrame(rows, columns=RESULT_COLUMNS).sort_values("val_f1", ascending=False).reset_index(drop=True)
    best = board.iloc[0]
    best_params = json.loads(best["params"])
    best_cfg = from_dict(merge(base_dict, best_params))
    logger.info(f"best trial {best['trial']}: val F1 {best['val_f1']:.4f} with {best_params}")

    # The tuned model: the best trial, plus K-1 members of its config for an ensemble.
    state = load_checkpoint_state(ray.train.Checkpoint.from_directory(str(latest_checkpoint(Path(storage) / f"{experiment}-{best['trial']}"))))
    final_cfg = from_dict(merge(to_dict(best_cfg), {"model.ensemble": 1 if teacher else base.model.ensemble}))
    run_name = f"{experiment}-best"
    states = [state]
    if final_cfg.model.ensemble > 1:
        _, inputs, datasets, _ = training_inputs(final_cfg, prepared)
        states += [train_member(inputs, datasets, run_name, k, storage, tracked=tracked) for k in range(1, final_cfg.model.ensemble)]
    model = assemble(vocab.size, len(prepared.labels), final_cfg.model, [s["early_stopping"]["best_state"] for s in states])

    # Stage 2: threshold policy over the tuned model's validation scores.
    val_texts, y_val = prepared.texts_and_targets("val")
    p_val = predict_texts(model, val_texts, vocab, final_cfg.model.max_length)
    th_grid = tune.Tuner(
        tune.with_resources(tune.with_parameters(_threshold_trial, y_val=y_val, p_val=p_val, folds=5, seed=base.seed), {"CPU": 0.01}),
        param_space={k: tune.grid_search(v) for k, v in THRESHOLD_SPACE.items()},
        tune_config=tune.TuneConfig(metric="cv_f1", mode="max", max_concurrent_trials=2, reuse_actors=True),
        run_config=tune.RunConfig(name=f"{experiment}-thresholds", storage_path=storage, verbose=0),
    ).fit()
    th_rows = sorted(({"min_support": r.config["min_support"], "shrink": r.config["shrink"], "cv_f1": r.metrics["cv_f1"]}
                      for r in th_grid if r.metrics), key=lambda r: (-r["cv_f1"], -r["shrink"], r["min_support"]))
    policy = {**th_rows[0], "source": "tune threshold stage", "folds": 5}
    global_only = next(r for r in th_rows if r["shrink"] == 1.0)
    logger.info(f"threshold policy {policy} (global-only CV F1 {global_only['cv_f1']:.4f})")

    art = finalize_artifact(final_cfg, prepared, vocab, states, str(outdir / "model"), run_name, list(data),
                            {}, {"name": f"{experiment}-{best['trial']}", "tune_experiment": experiment}, threshold_policy=policy,
                            extra=distillation)
    test_f1 = art.manifest["metrics"]["overall"]["f1"]
    board.to_csv(outdir / "leaderboard.csv", index=False)
    (outdir / "leaderboard.md").write_text(_markdown(board))
    pd.DataFrame(th_rows).to_csv(outdir / "thresholds_policies.csv", index=False)
    # The trials are single models; the config keeps the ensemble size of the tuned artifact, so
    # `tagging train --config best_config.json` trains the tuned model as that ensemble.
    best_config = merge(to_dict(best_cfg), {"model.ensemble": base.model.ensemble, "workers": base.workers, "cpus_per_worker": base.cpus_per_worker,
                                            "threads_per_worker": base.threads_per_worker, "max_failures": base.max_failures})
    (outdir / "best_config.json").write_text(json.dumps(best_config, indent=1) + "\n")
    _plot_pareto(board, outdir / "pareto.png")
    summary = {
        "experiment": experiment, "trials": len(board), "failed": len(failed), "failures": failed,
        "stopped_early": int(board["stopped_early"].sum()),
        "best_trial": best["trial"], "best_val_f1": float(best["val_f1"]), "best_params": best_params,
        "test_f1": test_f1, "test_f1_global_threshold": art.manifest["metrics"]["global_threshold_f1"],
        "test_macro_f1": art.manifest["metrics"]["overall"]["macro_f1"], "threshold_policy": policy,
        "ensemble": final_cfg.model.ensemble,
        "artifact": str(art.path), "best_docs_per_s_fp32": float(best["docs_per_s_fp32"]),
        "best_docs_per_s_int8": float(best["docs_per_s_int8"]),
        "pareto": [board.iloc[i]["trial"] for i in pareto_front(list(zip(board["val_f1"], board["docs_per_s_fp32"].fillna(0))))],
    }
    (outdir / "tune_summary.json").write_text(json.dumps(summary, indent=1, default=str) + "\n")
    art = update_manifest(art, {}, tracking_record(tracked))
    tracked.log_metrics({"best_trial_val_f1": summary["best_val_f1"], "trials": summary["trials"], "failed_trials": summary["failed"],
                         "stopped_early": summary["stopped_early"], "threshold_cv_f1": policy["cv_f1"]})
    tracked.set_tags({"best_trial": str(summary["best_trial"])})
    track_artifact(tracked, art)
    for name in ("leaderboard.md", "leaderboard.csv", "thresholds_policies.csv", "best_config.json", "tune_summary.json", "pareto.png"):
        tracked.log_artifact(outdir / name, "tune")
    logger.info(f"leaderboard {outdir / 'leaderboard.md'}; best config {outdir / 'best_config.json'}; artifact {art.path}")
    return summary


def trial_runs(tracked) -> list | None:
    """Tune callbacks that make every trial a child run of ``tracked`` (none when it is not tracked)."""
    if not tracked.active:
        return None
    from tagging.dist.tracking import TrialRuns

    return [TrialRuns(tracked.ref)]


def _markdown(board: pd.DataFrame) -> str:
    lines = ["| trial | val F1 | epochs | seconds | parameters | docs/s fp32 | docs/s int8 | stopped early | params |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in board.itertuples():
        name = f"{r.trial} (base config)" if r.base else r.trial
        lines.append(f"| {name} | {r.val_f1:.4f} | {r.epochs} | {r.seconds:.0f} | {r.parameters:,} | {r.docs_per_s_fp32:.0f} | "
                     f"{r.docs_per_s_int8:.0f} | {r.stopped_early} | `{r.params}` |")
    return "\n".join(lines) + "\n"


def _plot_pareto(board: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    speed = board["docs_per_s_fp32"].fillna(0).to_numpy()
    f1 = board["val_f1"].to_numpy()
    front = pareto_front(list(zip(f1, speed)))
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.scatter(speed, f1, color="#999", label="trials")
    ax.plot(speed[front], f1[front], "o-", color="#d62728", label="Pareto front")
    for i in front:
        ax.annotate(str(board.iloc[i]["trial"])[-5:], (speed[i], f1[i]), fontsize=7)
    ax.set_xlabel("ONNX Runtime docs/s (fp32, this machine)")
    ax.set_ylabel("validation weighted F1")
    ax.set_title("char-CNN trials: quality vs scoring cost")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
