"""Shared fixtures and the tiers. Ray is never imported here: unit tests must run without it.

A test's tier is its directory: tests/unit, tests/integration, tests/e2e, tests/model. The hook
below gives every test the marker of its tier (registered in pyproject.toml, --strict-markers),
so `pytest -m unit` selects exactly tests/unit and no file repeats it in a `pytestmark`.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

import pytest

os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")

TESTS = Path(__file__).resolve().parent
TIERS = ("unit", "integration", "e2e", "model")


def pytest_addoption(parser):
    parser.addoption("--model", action="store", default=None,
                     help="artifact directory for the behavioral tests (tests/model); without it they run on a model the suite trains")


def pytest_collection_modifyitems(config, items):
    for item in items:
        try:
            tier = Path(item.fspath).resolve().relative_to(TESTS).parts[0]
        except ValueError:  # a test outside tests/ (given by path): no tier
            continue
        if tier not in TIERS:
            raise pytest.UsageError(f"{item.nodeid}: tests live in tests/<tier>/ with tier one of {', '.join(TIERS)}")
        item.add_marker(tier)


@pytest.fixture(scope="session")
def tiny_config():
    """A small, fast model config for tests (the product defaults are sized for real data)."""
    from tagging.config import load_config

    return load_config(None, {"model.num_filters": 24, "model.filter_widths": [1, 2, 3, 4], "model.embedding_dim": 24,
                              "model.hidden_dim": 32, "model.ensemble": 1, "max_epochs": 3, "batch_size": 32, "learning_rate": 3e-3,
                              "data.min_tag_freq": 5})


@pytest.fixture(scope="session")
def synth_parquet(tmp_path_factory):
    from tagging.synth import generate_corpus, write_corpus

    path = tmp_path_factory.mktemp("synth") / "corpus.parquet"
    write_corpus(generate_corpus(600, seed=1), str(path))
    return str(path)


@pytest.fixture(scope="session")
def local_artifact(tmp_path_factory, synth_parquet, tiny_config):
    """A real artifact (ONNX included) trained in-process on generated data."""
    from tagging.local import train_local

    out = tmp_path_factory.mktemp("art") / "model"
    return train_local([synth_parquet], str(out), tiny_config, model_version="test-local")


class S3Server:
    """A running local S3 API: ``endpoint`` and ``bucket()`` (a new, empty bucket as an s3:// URI)."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1")

    def bucket(self) -> str:
        import uuid

        name = f"t-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return f"s3://{name}"


def _serve(args: list[str], what: str, log=None):
    """Start ``python -m ARGS <free port>`` bound to 127.0.0.1 (output to the file ``log``, else
    dropped); (process, port) once it listens."""
    import socket
    import subprocess
    import sys
    import time

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115 - the child keeps it
    proc = subprocess.Popen([sys.executable, "-m", *args, str(port)], stdout=out, stderr=subprocess.STDOUT)
    t0 = time.time()
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return proc, port
        except OSError:
            if proc.poll() is not None or time.time() - t0 > 30:
                proc.kill()
                pytest.fail(f"{what} did not start on 127.0.0.1:{port}")
            time.sleep(0.1)


@contextmanager
def _environ(env: dict, proc):
    """Set ``env`` for the session (Rays started later and subprocesses inherit it); restore it and
    stop ``proc`` at the end."""
    import subprocess

    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="session")
def s3_server():
    """moto's standalone S3 server on 127.0.0.1 (a free port) for the whole session.

    Points pyarrow's S3FileSystem and boto3 at it through the environment (AWS_ENDPOINT_URL and
    dummy credentials), so a Ray started after this fixture passes them on to its workers, and
    subprocesses inherit them. Restored at the end."""
    pytest.importorskip("moto.server")
    pytest.importorskip("boto3")
    proc, port = _serve(["moto.server", "-H", "127.0.0.1", "-p"], "moto server")
    endpoint = f"http://127.0.0.1:{port}"
    env = {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}
    with _environ(env, proc):
        yield S3Server(endpoint)


class GcsServer:
    """A running GCS emulator: ``bucket()`` (a new, empty bucket as a gs:// URI), ``client()``,
    ``requests()`` (the request lines it logged, queries included), and ``honours_preconditions``:
    whether a second create with ifGenerationMatch=0 is refused there."""

    def __init__(self, endpoint: str, log: Path) -> None:
        self.endpoint, self.log = endpoint, log
        self.honours_preconditions = self._probe()

    def requests(self) -> list[str]:
        return [line for line in self.log.read_text(errors="replace").splitlines() if " HTTP/1.1" in line]

    def client(self):
        from google.cloud import storage

        return storage.Client()  # STORAGE_EMULATOR_HOST: the emulator, anonymous

    def bucket(self) -> str:
        import uuid

        name = f"t-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(name)
        return f"gs://{name}"

    def _probe(self) -> bool:
        from google.api_core.exceptions import PreconditionFailed

        blob = self.client().bucket(self.bucket()[5:]).blob("probe")
        blob.upload_from_string(b"1", if_generation_match=0)
        try:
            blob.upload_from_string(b"2", if_generation_match=0)
            return False
        except PreconditionFailed:
            return True


@pytest.fixture(scope="session")
def gcs_server(tmp_path_factory):
    """gcp-storage-emulator (in memory) on 127.0.0.1 for the whole session, named by
    STORAGE_EMULATOR_HOST: google-cloud-storage reads it, and tagging.readers.resolve_filesystem
    points pyarrow's GcsFileSystem at it. It ignores ifGenerationMatch (see GcsServer.honours_preconditions)."""
    pytest.importorskip("gcp_storage_emulator")
    pytest.importorskip("google.cloud.storage")
    log = tmp_path_factory.mktemp("gcs") / "emulator.log"
    proc, port = _serve(["gcp_storage_emulator", "start", "-M", "--host", "127.0.0.1", "--port"], "GCS emulator", log)
    endpoint = f"http://127.0.0.1:{port}"
    with _environ({"STORAGE_EMULATOR_HOST": endpoint}, proc):
        yield GcsServer(endpoint, log)
