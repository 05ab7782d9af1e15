"""MLflow tracking and model registry: the one module of the core that talks to MLflow.

Tracking is on when a tracking URI is given (``--tracking-uri``, else ``MLFLOW_TRACKING_URI``):
``sqlite:///mlflow.db`` (what ``mlflow ui --backend-store-uri sqlite:///mlflow.db`` opens), an
``http(s)://`` tracking server, or anything else MLflow accepts. Without one nothing is logged
and nothing imports MLflow. The artifact folder stays the source of truth: MLflow gets copies
and pointers (params, metrics, the artifact's JSON files and path).

**Logging never fails a command**: ``start_run`` returns a ``Run`` whose every call is guarded;
the first error (a server that is down, a locked or unwritable store) logs one warning line and
turns the rest of that run tree into no-ops. Any command gets tracking in a few lines::

    with start_run("distill", uri, run_name, tags={...}) as run:   # FINISHED, or FAILED on an exception
        run.log_params(config_dict)
        run.log_metrics({"val_f1": 0.7}, step=epoch)
        member = run.child("member-1")                               # a nested run (mlflow.parentRunId)

``Run.ref`` (a picklable ``RunRef``) lets another process log to the same run (the Ray Train
controller's per-epoch callback, tagging.dist.tracking).

**Registry** (these do fail the command: registering or resolving a model is the command's job):
``register_model`` uploads an artifact directory as it is (every file byte for byte, so the
manifest's checksums still hold) and creates a model version, optionally moving an alias to it;
``resolve_model`` turns ``models:/NAME@alias`` or ``models:/NAME/VERSION`` into one immutable
version, downloads it once into a local cache and verifies it (checksums, manifest sha256).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)

ENV_URI = "MLFLOW_TRACKING_URI"
ENV_EXPERIMENT = "MLFLOW_EXPERIMENT_NAME"  # one experiment for every command, when set
ENV_CACHE = "TAGGING_MODEL_CACHE"
EXPERIMENTS = {"train": "tagging-train", "tune": "tagging-train", "distill": "tagging-train",
               "evaluate": "tagging-evaluate", "score": "tagging-nightly", "register": "tagging-registry"}
"""Default experiment of each command (trainings of every kind side by side; nightly runs apart)."""
RUN_NAME_TAG = "tagging.run_name"  # a rerun with the same run name continues the same MLflow run
SHA_TAG = "tagging.manifest_sha256"  # on model versions: the registered artifact's manifest sha256
MODEL_DIR = "model"  # where an artifact's files go in the registering run
_BAD_KEY = re.compile(r"[^\w\-. /]")  # MLflow keys: alphanumerics, _ - . space /


class RegistryError(ValueError):
    """A model could not be registered or resolved; the message says why (one line)."""


def tracking_uri(given: str | None = None) -> str | None:
    """The tracking URI in force: ``given``, else MLFLOW_TRACKING_URI, else None (no tracking).
    Local stores are made absolute (other processes, e.g. the Ray Train controller, start elsewhere)."""
    uri = given or os.environ.get(ENV_URI) or None
    return absolute_uri(uri) if uri else None


def absolute_uri(uri: str) -> str:
    """``sqlite:///rel.db`` -> ``sqlite:////abs/rel.db``; a plain path -> its absolute path; others as they are."""
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return "sqlite:///" + os.path.abspath(uri[len("sqlite:///"):])
    if "://" not in uri and ":" not in uri[:2]:
        return os.path.abspath(uri)
    return uri


def experiment_name(command: str) -> str:
    return os.environ.get(ENV_EXPERIMENT) or EXPERIMENTS.get(command, f"tagging-{command}")


def metric_key(key: str) -> str:
    """A tag or metric name as MLflow accepts it (``rate/c++`` -> ``rate/c__``)."""
    return _BAD_KEY.sub("_", str(key))[:250]


def flatten(d: Mapping, prefix: str = "") -> dict[str, object]:
    """Nested dict -> {"model.num_filters": 64, ...} (lists stay values)."""
    out: dict[str, object] = {}
    for key, value in d.items():
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _client(uri: str):
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    if uri.startswith(("http://", "https://")):  # a server that is down: fail in seconds, not minutes of retries
        for name, value in (("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1"), ("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1"),
                            ("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")):
            os.environ.setdefault(name, value)
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _experiment_id(client, uri: str, name: str) -> str:
    """The experiment's id, created if new; a SQLite store keeps its artifacts beside the database
    (``<db folder>/mlartifacts``) instead of in ``./mlruns`` of whatever directory a command ran in."""
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    location = None
    if uri.startswith("sqlite:///"):
        location = (Path(uri[len("sqlite:///"):]).parent / "mlartifacts").as_uri()
    try:
        return client.create_experiment(name, artifact_location=location)
    except Exception:  # noqa: BLE001 - created meanwhile by another process
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


@dataclass(frozen=True)
class RunRef:
    """An MLflow run another process can log to (picklable)."""

    uri: str
    run_id: str
    experiment_id: str
    experiment_name: str


@dataclass
class _Health:
    """Shared by a run and its children: after the first failure, one warning, then silence."""

    ok: bool = True

    def fail(self, what: str, exc: BaseException) -> None:
        if self.ok:
            logger.warning(f"MLflow tracking off for the rest of this run ({what} failed: {_first_line(exc)[:300]}); the run goes on")
        self.ok = False


@dataclass
class Run:
    """One MLflow run; every method is a no-op when tracking is off or has failed once (see module doc)."""

    client: object = None
    ref: RunRef | None = None
    health: _Health = field(default_factory=_Health)

    @property
    def active(self) -> bool:
        return self.ref is not None and self.health.ok

    @property
    def run_id(self) -> str | None:
        return self.ref.run_id if self.active else None

    def _guard(self, what: str, fn, *args, **kwargs):
        if not self.active:
            return None
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - tracking never fails the run
            self.health.fail(what, exc)
            return None

    def log_params(self, params: Mapping) -> None:
        """Params (nested dicts flattened; values as strings, cut to MLflow's 6000 characters)."""
        if not self.active:
            return
        from mlflow.entities import Param

        items = [Param(metric_key(k), (json.dumps(v) if isinstance(v, (list, tuple, dict)) else str(v))[:6000])
                 for k, v in sorted(flatten(params).items())]
        for i in range(0, len(items), 100):
            self._guard("log_params", self.client.log_batch, self.ref.run_id, params=items[i:i + 100])

    def log_metrics(self, metrics: Mapping, step: int | None = None) -> None:
        """Numeric, finite values only (nested dicts flattened, others skipped)."""
        if not self.active:
            return
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(metric_key(k), float(v), now, int(step or 0)) for k, v in sorted(flatten(metrics).items())
                 if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)]
        for i in range(0, len(items), 1000):
            self._guard("log_metrics", self.client.log_batch, self.ref.run_id, metrics=items[i:i + 1000])

    def log_epochs(self, history: list[dict], keys: tuple[str, ...]) -> None:
        """Epoch records (``history.json``'s) not yet logged, step = epoch: a backfill for epochs whose
        live report never reached the logger (a worker group that died right after reporting)."""
        if not self.active or not history:
            return
        seen = self._guard("metric history", self.client.get_metric_history, self.ref.run_id, keys[0])
        done = {m.step for m in seen or []}
        for record in history:
            if int(record["epoch"]) not in done and seen is not None:
                self.log_metrics({k: record[k] for k in keys if k in record}, step=int(record["epoch"]))

    def set_tags(self, tags: Mapping) -> None:
        if not self.active:
            return
        from mlflow.entities import RunTag

        items = [RunTag(metric_key(k), str(v)[:8000]) for k, v in sorted(tags.items()) if v is not None]
        self._guard("set_tags", self.client.log_batch, self.ref.run_id, tags=items)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        """A file, or a directory's files, as run artifacts."""
        if self.active:
            fn = self.client.log_artifacts if Path(path).is_dir() else self.client.log_artifact
            self._guard("log_artifact", fn, self.ref.run_id, str(path), artifact_path)

    def child(self, run_name: str, tags: Mapping | None = None) -> "Run":
        """A nested run (``mlflow.parentRunId``); an unfinished child of the same name is continued."""
        if not self.active:
            return Run(health=self.health)
        from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

        tags = {MLFLOW_PARENT_RUN_ID: self.ref.run_id, RUN_NAME_TAG: run_name, **(tags or {})}
        run_id = self._guard("child run", _open_run, self.client, self.ref.experiment_id, run_name, tags,
                             {MLFLOW_PARENT_RUN_ID: self.ref.run_id, RUN_NAME_TAG: run_name})
        if run_id is None:
            return Run(health=self.health)
        return Run(self.client, RunRef(self.ref.uri, run_id, self.ref.experiment_id, self.ref.experiment_name), self.health)

    def end(self, status: str = "FINISHED") -> None:
        if self.active:
            self._guard("end run", self.client.set_terminated, self.ref.run_id, status)

    def __enter__(self) -> "Run":
        return self

    def __exit__(self, kind, exc, tb) -> None:
        self.end("FINISHED" if kind is None else "KILLED" if issubclass(kind, KeyboardInterrupt) else "FAILED")


def _open_run(client, experiment_id: str, run_name: str, tags: Mapping, match: Mapping) -> str:
    """A new run, or the unfinished run whose tags equal ``match`` (a resumed run goes on where it was)."""
    if match:
        query = " and ".join(f"tags.`{k}` = '{v}'" for k, v in sorted(match.items()))
        for old in client.search_runs([experiment_id], query, max_results=5, order_by=["attributes.start_time DESC"]):
            if old.info.status != "FINISHED":
                client.update_run(old.info.run_id, status="RUNNING")
                return old.info.run_id
    return client.create_run(experiment_id, run_name=run_name, tags=dict(tags)).info.run_id


def start_run(command: str, uri: str | None, run_name: str, tags: Mapping | None = None, resume: bool = False) -> Run:
    """The run of one command in its experiment (``EXPERIMENTS``, or MLFLOW_EXPERIMENT_NAME); a
    no-op Run when ``uri`` is None or the store cannot be reached (one warning line). ``resume``:
    an unfinished run with this run name (a killed `tagging train --run-name X`) is continued."""
    if not uri:
        return Run()
    health = _Health()
    try:
        client = _client(uri)
        name = experiment_name(command)
        exp_id = _experiment_id(client, uri, name)
        tags = {RUN_NAME_TAG: run_name, "tagging.command": command, **(tags or {})}
        run_id = _open_run(client, exp_id, run_name, tags, {RUN_NAME_TAG: run_name} if resume else {})
    except Exception as exc:  # noqa: BLE001 - tracking never fails the run
        health.fail(f"starting an MLflow run at {uri}", exc)
        return Run(health=health)
    logger.info(f"MLflow: run {run_name} ({run_id}) in experiment {name} at {uri}")
    return Run(client, RunRef(uri, run_id, exp_id, name), health)


def attach(ref: RunRef | None) -> Run:
    """The run ``ref`` from another process (never raises; a no-op Run on failure)."""
    if ref is None:
        return Run()
    health = _Health()
    try:
        return Run(_client(ref.uri), ref, health)
    except Exception as exc:  # noqa: BLE001
        health.fail("attaching to an MLflow run", exc)
        return Run(health=health)


# ----------------------------------------------------------------------------- what commands log


def log_night(uri: str | None, summary: dict, summary_path: str | None = None) -> None:
    """One scored date as a run of the nightly experiment: rows read/scored/rejected, rejects by
    reason, throughput, per-tag rates, drift; summary.json as an artifact."""
    if not uri:
        return
    model = summary.get("model", {})
    drift = summary.get("drift") or {}
    with start_run("score", uri, f"nightly-{summary['date']}", tags={
            "date": summary["date"], "model_version": model.get("version"), "model_sha256": model.get("sha"),
            "precision": model.get("precision"), "output": summary.get("output"),
            "drift_flagged": ",".join(drift.get("flagged", [])) or "none"}) as run:
        metrics = {k: summary.get(k) for k in ("rows_read", "rows_scored", "rows_rejected", "rows_truncated",
                                               "throughput_docs_per_s", "elapsed_s")}
        metrics.update({f"rejects/{k}": v for k, v in summary.get("rejects_by_reason", {}).items()})
        metrics.update({f"rate/{t}": v["rate"] for t, v in summary.get("tags", {}).items()})
        for part in ("truncated", "oov_chars"):
            if drift.get(part):
                metrics[f"drift/{part}_share"] = drift[part]["share"]
        for part in ("vs_training", "vs_previous"):
            if drift.get(part):
                metrics.update({f"drift/{part}/psi/{t}": v["psi"] for t, v in drift[part]["tags"].items()})
                metrics[f"drift/{part}/flagged"] = len(drift[part]["flagged"])
        run.log_metrics(metrics)
        if summary_path and "://" not in summary_path and Path(summary_path).is_file():
            run.log_artifact(summary_path)
        else:
            with tempfile.TemporaryDirectory() as d:
                (Path(d) / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
                run.log_artifact(Path(d) / "summary.json")


# ----------------------------------------------------------------------------- registry

_MODEL_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))$")


def is_registry_uri(model: str) -> bool:
    return str(model).startswith("models:/")


def parse_model_uri(model: str) -> tuple[str, str | None, str | None]:
    """``models:/NAME@ALIAS`` -> (NAME, ALIAS, None); ``models:/NAME/3`` -> (NAME, None, "3")."""
    m = _MODEL_URI.match(model)
    if not m:
        raise RegistryError(f"{model!r}: expected models:/NAME@ALIAS or models:/NAME/VERSION")
    return m["name"], m["alias"], m["version"]


def register_model(uri: str | None, model_dir: str | Path, name: str, alias: str | None = None) -> dict:
    """Register the artifact ``model_dir`` as a new version of ``name`` (and point ``alias`` at it).

    The artifact is verified first; its files go up as they are under the run's ``model/``: the
    run of its training when the manifest names one in this store, else a new run in the
    registry experiment. Returns {name, version, alias, uri, source, run_id, sha256}."""
    from tagging.artifact import load_artifact

    if not uri:
        raise RegistryError("no tracking URI: pass --tracking-uri or set MLFLOW_TRACKING_URI")
    art = load_artifact(model_dir)
    sha = art.sha
    try:
        client = _client(uri)
        tracked = art.manifest.get("tracking") or {}
        run_id = tracked.get("run_id") if tracked.get("uri") == uri else None
        if run_id:
            try:
                client.get_run(run_id)
            except Exception:  # noqa: BLE001 - the training run is gone: a registry run instead
                run_id = None
        if run_id is None:
            exp_id = _experiment_id(client, uri, experiment_name("register"))
            run = client.create_run(exp_id, run_name=f"register-{name}-{art.model_version}",
                                    tags={RUN_NAME_TAG: art.model_version, "tagging.command": "register"})
            run_id = run.info.run_id
            client.log_param(run_id, "artifact_dir", str(art.path))
            client.set_terminated(run_id)
        client.log_artifacts(run_id, str(art.path), MODEL_DIR)
        source = f"{client.get_run(run_id).info.artifact_uri.rstrip('/')}/{MODEL_DIR}"
        try:
            client.get_registered_model(name)
        except Exception:  # noqa: BLE001 - not registered yet
            client.create_registered_model(name, tags={"tagging.kind": art.manifest.get("kind", "")})
        version = client.create_model_version(name, source, run_id=run_id, tags={
            SHA_TAG: sha, "tagging.model_version": art.model_version, "tagging.artifact_dir": str(art.path),
            "test_f1": str(art.manifest.get("metrics", {}).get("overall", {}).get("f1"))},
            description=f"tagging artifact {art.model_version} (manifest sha256 {sha})")
        if alias:
            client.set_registered_model_alias(name, alias, version.version)
    except RegistryError:
        raise
    except Exception as exc:  # noqa: BLE001 - one line for the CLI
        raise RegistryError(f"registering {model_dir} as {name} at {uri} failed: {_first_line(exc)}") from exc
    return {"name": name, "version": int(version.version), "alias": alias, "uri": f"models:/{name}/{version.version}",
            "source": source, "run_id": run_id, "sha256": sha}


def _first_line(exc: BaseException) -> str:
    return next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)


def cache_root() -> Path:
    return Path(os.environ.get(ENV_CACHE) or Path.home() / ".cache" / "tagging" / "models")


def resolve_model(model: str, uri: str | None) -> tuple[Path, dict]:
    """``models:/NAME@ALIAS`` or ``models:/NAME/VERSION`` -> (local verified artifact directory, registry record).

    The alias is read once, here: the returned version is immutable, so moving the alias later
    changes nothing for the caller. The version's files are downloaded once into
    ``$TAGGING_MODEL_CACHE`` (default ~/.cache/tagging/models) and reused while they verify
    (``load_artifact``'s checksums) and match the manifest sha256 recorded at registration."""
    from tagging.artifact import ArtifactError, load_artifact

    name, alias, version = parse_model_uri(model)
    if not uri:
        raise RegistryError(f"{model}: no tracking URI to resolve it: pass --tracking-uri or set MLFLOW_TRACKING_URI")
    try:
        client = _client(uri)
        mv = client.get_model_version_by_alias(name, alias) if alias else client.get_model_version(name, version)
        download_uri = client.get_model_version_download_uri(name, mv.version)
    except Exception as exc:  # noqa: BLE001
        raise RegistryError(f"{model}: cannot resolve it at {uri}: {_first_line(exc)}") from exc
    sha = (mv.tags or {}).get(SHA_TAG)
    record = {"uri": f"models:/{name}/{mv.version}", "name": name, "version": int(mv.version), "alias": alias,
              "requested": model, "source": download_uri, "run_id": mv.run_id, "sha256": sha, "tracking_uri": uri}
    dest = cache_root() / hashlib.sha256(uri.encode()).hexdigest()[:12] / name / str(mv.version)

    def verified(path: Path) -> bool:
        try:
            art = load_artifact(path)
        except ArtifactError:
            return False
        return sha is None or art.sha == sha

    if dest.is_dir() and verified(dest):
        logger.info(f"{model} -> {record['uri']} (cached in {dest})")
        return dest, record
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{mv.version}.download-", dir=dest.parent))
    try:
        import mlflow.artifacts

        got = Path(mlflow.artifacts.download_artifacts(artifact_uri=download_uri, dst_path=str(tmp), tracking_uri=uri))
        try:
            art = load_artifact(got)
        except ArtifactError as exc:
            raise RegistryError(f"{record['uri']}: the downloaded model does not verify: {exc}") from None
        if sha is not None and art.sha != sha:
            raise RegistryError(f"{record['uri']}: manifest sha256 {art.sha[:12]}... differs from the one registered ({sha[:12]}...)")
        shutil.rmtree(dest, ignore_errors=True)
        os.replace(got, dest)
    except RegistryError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise RegistryError(f"{record['uri']}: download from {download_uri} failed: {_first_line(exc)}") from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    logger.info(f"{model} -> {record['uri']}, downloaded to {dest} and verified")
    return dest, record
