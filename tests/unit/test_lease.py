"""The date's lease (serve_batch.lease): local flock, S3 conditional writes (on moto's server) and GCS
generation preconditions (on gcp-storage-emulator, which ignores them: see the GCS tests)."""

from __future__ import annotations

import json
import os
import threading
import time

import pytest

from serve_batch.layout import OutputLayout, ScoreError
from serve_batch.lease import GcsLease, LeaseHeld, LocalLease, NoLease, S3Lease, open_lease

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
    lay = OutputLayout("memory://bucket/scores", DATE, filesystem=fs)
    with pytest.raises(ScoreError, match="memory output .PyFileSystem.: no lease for this filesystem.*--no-lease"):
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
    first = a.token
    time.sleep(1.2)  # renewed every ttl/4
    assert a.token != first
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


@pytest.fixture
def gcs_out(gcs_server):
    return gcs_server.bucket() + "/scores"


def _gcs_lease_body(gcs_server, lease):
    blob = gcs_server.client().bucket(lease.bucket).get_blob(lease.key)
    return None if blob is None else (str(blob.generation), json.loads(blob.download_as_bytes()))[::-1]


def test_gcs_lease_sends_generation_preconditions_is_renewed_fenced_and_taken_over(gcs_out, gcs_server):
    """What the emulator can show (it ignores preconditions, so not that a second creator is refused):
    the lease is created with ifGenerationMatch=0 and renewed, taken over and deleted with
    ifGenerationMatch=<its generation>; a run whose lease was taken over or replaced fails its fence
    and does not delete the new holder's lease."""
    lay = OutputLayout(gcs_out, DATE)
    a = open_lease(lay, "run-a", ttl_s=2).acquire()
    assert isinstance(a, GcsLease)
    body, generation = _gcs_lease_body(gcs_server, a)
    assert body["run_id"] == "run-a" and body["expires_at"] > time.time() and generation == a.token
    first = a.token
    time.sleep(1.2)  # renewed every ttl/4, at our generation
    assert a.token != first and _gcs_lease_body(gcs_server, a)[1] == a.token
    a.check()
    a._stop.set()  # a crashed holder: no more renewals
    a._thread.join()
    time.sleep(2.2)
    # Taken over at a's generation (on this emulator the create itself already goes through).
    b = open_lease(OutputLayout(gcs_out, DATE), "run-b", ttl_s=30).acquire()
    with pytest.raises(ScoreError, match="run-a.*lost its lease"):
        a.check()
    a.release()  # not ours any more: must not delete run-b's lease
    assert _gcs_lease_body(gcs_server, b)[0]["run_id"] == "run-b"
    b.check()
    token = b.token
    b.release()
    assert _gcs_lease_body(gcs_server, b) is None
    sent = [r for r in gcs_server.requests() if b.bucket in r]
    writes = [r.split("ifGenerationMatch=")[1].split("&")[0].split()[0] for r in sent if "POST /upload/" in r]
    assert writes[0] == "0" and first in writes[1:] and len(writes) >= 3  # create, renewals, takeover: all conditional
    assert any(r.startswith('"DELETE') and f"ifGenerationMatch={token}" in r for r in sent)
    c = open_lease(OutputLayout(gcs_out, DATE), "run-c", ttl_s=30).acquire()
    gcs_server.client().bucket(c.bucket).blob(c.key).upload_from_string(b'{"run_id": "intruder"}')
    with pytest.raises(ScoreError, match="another run replaced the lease"):
        c.check()
    c.release()
    assert _gcs_lease_body(gcs_server, c)[0]["run_id"] == "intruder"

def test_gcs_lease_conditional_create_refuses_a_second_run(gcs_out, gcs_server):
    """Needs a store that honours ifGenerationMatch (real GCS, or an emulator that does, named by
    STORAGE_EMULATOR_HOST). gcp-storage-emulator does not: a second upload with ifGenerationMatch=0
    succeeds there, so mutual exclusion on GCS is not tested by the default suite."""
    if not gcs_server.honours_preconditions:
        pytest.skip("gcp-storage-emulator ignores ifGenerationMatch (a second create with ifGenerationMatch=0 "
                    "overwrote the object): GCS mutual exclusion is untestable on it")
    lay = OutputLayout(gcs_out, DATE)
    with open_lease(lay, "run-a", ttl_s=60) as lease:
        with pytest.raises(LeaseHeld, match="run run-a"):
            open_lease(OutputLayout(gcs_out, DATE), "run-b", ttl_s=60).acquire()
        lease.check()
    with open_lease(lay, "run-b", ttl_s=60):  # released: deleted
        pass


def test_a_lease_whose_holder_died_on_this_machine_is_taken_over_at_once(s3_out, s3_server):
    """A scheduler's retry on the machine where the run was killed need not wait out its lease;
    a holder that may be alive (this process, another pid space) is waited for."""
    import socket
    import subprocess
    import sys

    from serve_batch.lease import _pid_space

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    lay = OutputLayout(s3_out, DATE)
    bucket, key = lay.path("_lease").split("/", 1)

    def held_by(pid, space):
        body = {"run_id": "run-x", "holder": f"{socket.gethostname()}:{pid}", "pid_space": space,
                "expires_at": time.time() + 600}
        s3_server.client().put_object(Bucket=bucket, Key=key, Body=json.dumps(body).encode())

    for alive in [(os.getpid(), _pid_space()), (int(gone.stdout), "another-machine/1")]:
        held_by(*alive)
        with pytest.raises(LeaseHeld, match="run run-x"):
            open_lease(lay, "run-b", ttl_s=60).acquire()
    held_by(int(gone.stdout), _pid_space())
    with open_lease(lay, "run-b", ttl_s=60) as lease:
        assert json.loads(s3_server.client().get_object(Bucket=bucket, Key=key)["Body"].read())["run_id"] == "run-b"
        lease.check()


def test_a_lease_write_applied_but_reported_failed_is_ours(s3_out, s3_server):
    """An SDK that retries a conditional write the store had already applied sees the retry fail
    its condition (412): the object then holds exactly our record, and the lease is ours."""
    from serve_batch.lease import LeaseConflict

    class RetriedWrites(S3Lease):
        def _put(self, body, **cond):
            super()._put(body, **cond)  # applied by the store...
            raise LeaseConflict()  # ...but the retried request failed its condition

    lease = RetriedWrites(OutputLayout(s3_out, DATE), "run-a", ttl_s=60).acquire()
    lease._stop.set()
    head = s3_server.client().head_object(Bucket=lease.bucket, Key=lease.key)
    assert lease.token == head["ETag"] and lease.info["run_id"] == "run-a"
    lease._renew()
    assert lease.lost is None and lease.token == s3_server.client().head_object(Bucket=lease.bucket, Key=lease.key)["ETag"] != head["ETag"]
    lease.check()
    lease.release()
