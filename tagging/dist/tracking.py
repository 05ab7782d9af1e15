"""MLflow from Ray: per-epoch metrics of a Ray Train run, and one child run per Ray Tune trial.

Both run where Ray runs callbacks, not in the workers: the Train controller (an actor on the
driver's node) and the Tune driver, so a local SQLite store works as well as a server. Both
log through tagging.tracking and never fail the run (one warning line, then silence).
"""

from __future__ import annotations

import logging

from ray.air.integrations.mlflow import MLflowLoggerCallback
from ray.train import UserCallback

from tagging.tracking import RunRef, attach

logger = logging.getLogger(__name__)

EPOCH_METRICS = ("train_loss", "val_loss", "val_f1", "lr", "samples_per_s", "train_seconds", "best_val_f1")
"""What rank 0 reports every epoch (tagging.dist.worker) that goes to MLflow, with the epoch as step."""


class EpochMetrics(UserCallback):
    """Ray Train callback: rank 0's report of every epoch -> the metrics of the MLflow run ``ref``."""

    def __init__(self, ref: RunRef) -> None:
        self.ref = ref
        self._run = None

    def after_report(self, run_context, metrics, checkpoint) -> None:
        if self._run is None:
            self._run = attach(self.ref)
        record = metrics[0] if metrics else {}
        self._run.log_metrics({k: record[k] for k in EPOCH_METRICS if k in record}, step=int(record.get("epoch", 0)))


class TrialRuns(MLflowLoggerCallback):
    """Ray's MLflow logger for Tune, each trial a child run of the tuning run ``ref`` (its sampled
    config as params, every rank-0 epoch report as metrics), guarded: an MLflow failure logs one
    warning and stops logging; the search goes on."""

    def __init__(self, ref: RunRef) -> None:
        from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

        super().__init__(tracking_uri=ref.uri, registry_uri=ref.uri, experiment_name=ref.experiment_name,
                         tags={MLFLOW_PARENT_RUN_ID: ref.run_id})
        self.ok = True

    def _guarded(self, what: str, fn, *args) -> None:
        if not self.ok:
            return
        try:
            fn(*args)
        except Exception as exc:  # noqa: BLE001 - tracking never fails the search
            self.ok = False
            logger.warning(f"MLflow logging of Tune trials off ({what} failed: {str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__})")

    def setup(self, *args, **kwargs) -> None:
        self._guarded("setup", super().setup, *args)

    def log_trial_start(self, trial) -> None:
        self._guarded("trial start", super().log_trial_start, trial)

    def log_trial_result(self, iteration, trial, result) -> None:
        self._guarded("trial result", super().log_trial_result, iteration, trial, result)

    def log_trial_end(self, trial, failed: bool = False) -> None:
        self._guarded("trial end", super().log_trial_end, trial, failed)
