"""Shared fixtures and the tiers. Ray is never imported here: unit tests must run without it.

A test's tier is its directory: tests/unit, tests/integration, tests/e2e, tests/model. The hook
below gives every test the marker of its tier (registered in pyproject.toml, --strict-markers),
so `pytest -m unit` selects exactly tests/unit and no file repeats it in a `pytestmark`.
"""

from __future__ import annotations

import os
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


@pytest.fixture(scope="session")
def s3_server():
    """moto's standalone S3 server on 127.0.0.1 (a free port) for the whole session.

    Points pyarrow's S3FileSystem and boto3 at it through the environment (AWS_ENDPOINT_URL and
    dummy credentials), so a Ray started after this fixture passes them on to its workers, and
    subprocesses inherit them. Restored at the end."""
    import socket
    import subprocess
    import sys
    import time

    pytest.importorskip("moto.server")
    pytest.importorskip("boto3")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    t0 = time.time()
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if proc.poll() is not None or time.time() - t0 > 30:
                proc.kill()
                pytest.fail(f"moto server did not start on {endpoint}")
            time.sleep(0.1)
    env = {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield S3Server(endpoint)
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
