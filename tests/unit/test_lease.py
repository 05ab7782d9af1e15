"""The date's lease (serve_batch.lease): local flock and S3 conditional writes (on moto's server)."""

from __future__ import annotations

import json
import os
import threading
import time

import pytest

from serve_batch.layout import OutputLayout, ScoreError
from serve_batch.lease import LeaseHeld, LocalLease, NoLease, S3Lease, open_lease

DATE = "2026-01-02"


def test_local_lease_is_exclusive_names_its_holder_and_clear_keeps_it(tmp_path):
    lay = OutputLayout(str(tmp_path), DATE)
    with open_lease(lay, "run-a") as lease:
        assert isinstance(lease, LocalLease)
        with pytest.raises(LeaseHeld, match="run run-a on .*not starting a second run"):
            open_lease(OutputLayout(str(tmp_path), DATE), "run-b").acquire()
        lease.check()
        lay.write_json(lay.path("_run.json"), {"a": 1})
        lay.clear()
        assert sorted(os.listdir(lay.dir)) == ["_lease"]
        lease.check()
    with open_lease(lay, "run-c"):  # released
        pass


def test_local_lease_waits_for_the_holder(tmp_path):
    lay = OutputLayout(str(tmp_path), DATE)
    holder = open_lease(lay, "run-a").acquire()
    threading.Timer(1.0, holder.release).start()
    t0 = time.time()
    with open_lease(OutputLayout(str(tmp_path), DATE), "run-b", wait_s=30):
        assert time.time() - t0 >= 0.9
    with pytest.raises(LeaseHeld, match="gave up waiting"):
        with open_lease(lay, "run-c"):
            open_lease(lay, "run-d", wait_s=0.3).acquire()


def test_local_lease_deleted_under_a_run_fails_its_fence(tmp_path):
    lay = OutputLayout(str(tmp_path), DATE)
    with open_lease(lay, "run-a") as lease:
        os.remove(lay.path("_lease"))
        with pytest.raises(ScoreError, match="lost its lease"):
            lease.check()


def test_other_stores_are_refused_unless_no_lease():
    import fsspec
    import pyarrow.fs as pafs

    fs = pafs.PyFileSystem(pafs.FSSpecHandler(fsspec.filesystem("memory")))
    lay = OutputLayout("gs://bucket/scores", DATE, filesystem=fs)
    with pytest.raises(ScoreError, match="gs output: no lease support yet.*--no-lease"):
        open_lease(lay, "run-a")
    with open_lease(lay, "run-a", enabled=False) as lease:
        assert isinstance(lease, NoLease)
        lease.check()


@pytest.fixture
def s3_out(s3_server):
    return s3_server.bucket() + "/scores"


def test_s3_lease_conditional_create_refuses_a_second_run(s3_out, s3_server):
    lay = OutputLayout(s3_out, DATE)
    with open_lease(lay, "run-a", ttl_s=60) as lease:
        assert isinstance(lease, S3Lease)
        with pytest.raises(LeaseHeld, match="run run-a"):
            open_lease(OutputLayout(s3_out, DATE), "run-b", ttl_s=60).acquire()
        lease.check()
        body = json.loads(s3_server.client().get_object(Bucket=lease.bucket, Key=lease.key)["Body"].read())
        assert body["run_id"] == "run-a" and body["expires_at"] > time.time() + 30
    with open_lease(lay, "run-b", ttl_s=60):  # released: deleted
        pass


def test_s3_lease_is_renewed_and_an_expired_one_taken_over(s3_out):
    lay = OutputLayout(s3_out, DATE)
    a = open_lease(lay, "run-a", ttl_s=2).acquire()
    first = a.etag
    time.sleep(1.2)  # renewed every ttl/4
    assert a.etag != first
    a.check()
    a._stop.set()  # a crashed holder: no more renewals
    a._thread.join()
    time.sleep(2.2)
    b = open_lease(OutputLayout(s3_out, DATE), "run-b", ttl_s=30).acquire()  # taken over (If-Match its ETag)
    with pytest.raises(ScoreError, match="run-a.*lost its lease"):
        a.check()
    b.check()
    a.release()  # not ours any more: must not delete run-b's lease
    b.check()
    b.release()


def test_s3_lease_lost_when_another_run_replaced_it(s3_out, s3_server):
    lay = OutputLayout(s3_out, DATE)
    with open_lease(lay, "run-a", ttl_s=60) as lease:
        s3_server.client().put_object(Bucket=lease.bucket, Key=lease.key, Body=b'{"run_id": "intruder"}')
        with pytest.raises(ScoreError, match="another run replaced the lease"):
            lease.check()
