"""One run per date: a lease on ``OUTPUT/date=D/_lease``, taken before anything of the date is
read or changed, renewed while the run lives, checked before every commit (fencing).

Backends, by the output's filesystem:

- **local disk** (``LocalLease``): an exclusive ``flock`` on ``_lease`` for the life of the run;
  the file also holds the holder's JSON (run id, host:pid) for the refusal message. The kernel
  drops the lock when the process dies, so there is no expiry to wait for. (Not for NFS
  mounts without working ``flock``.)
- **object stores** (``ObjectLease``): ``_lease`` is created only if absent (exactly one creator
  wins) and holds the run id and an expiry (wall clock, epoch seconds). A background thread
  renews it every ``ttl/4``, only if it is still at the version we wrote; a renewal that fails
  its condition means another run took the lease over, and this run stops at its next fence
  check. A lease past its expiry (a crashed holder) is taken over only if still at the version
  read (one taker wins); so is, at once, the lease of a holder that ran on this machine (same
  boot id and pid namespace) and whose process is gone: a retry after a kill need not wait. ``check()`` (before each commit marker and before ``_SUCCESS``)
  requires the object to still be at our version and at least ``ttl/2`` left on our expiry, so
  a write made right after a check lands inside the lease. The conditions:
  S3 and S3-compatible stores (``S3Lease``, boto3): ``PutObject If-None-Match: *`` /
  ``If-Match: <ETag>``; GCS (``GcsLease``, google-cloud-storage): ``ifGenerationMatch=0`` /
  ``ifGenerationMatch=<generation>`` (pyarrow exposes neither).
- **other filesystems**: refused with a message; ``--no-lease`` opts out when the scheduler
  itself guarantees one run per date.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time

import pyarrow.fs as pafs

from serve_batch.layout import LEASE, OutputLayout, ScoreError
from tagging.stores import gcs_client, s3_client


class LeaseHeld(ScoreError):
    """Another run holds this date's lease."""


def _now() -> float:
    return time.time()


def _iso(ts: float | None) -> str | None:
    import datetime as dt

    return None if ts is None else dt.datetime.fromtimestamp(ts, dt.timezone.utc).isoformat(timespec="seconds")


def _describe(info: dict | None) -> str:
    if not info:
        return "another run (holder not recorded yet)"
    exp = f", lease expires {_iso(info['expires_at'])}" if info.get("expires_at") else ""
    return f"run {info.get('run_id')} on {info.get('holder')} (since {info.get('acquired_at')}{exp})"


class Lease:
    """The date's lease: ``acquire(wait_s)`` then ``check()`` before each commit, ``release()``.

    Also a context manager (acquire on enter, release on exit)."""

    def __init__(self, layout: OutputLayout, run_id: str, ttl_s: float = 120.0, wait_s: float = 0.0,
                 poll_s: float = 1.0) -> None:
        self.layout, self.run_id, self.ttl_s, self.wait_s, self.poll_s = layout, run_id, float(ttl_s), float(wait_s), poll_s
        self.path = layout.path(LEASE)
        self.info: dict = {}
        self.lost: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ----------------------------------------------------------------- protocol
    def _body(self) -> dict:
        now = _now()
        return {"run_id": self.run_id, "holder": f"{socket.gethostname()}:{os.getpid()}", "pid_space": _pid_space(),
                "acquired_at": self.info.get("acquired_at") or _iso(now),
                "expires_at": now + self.ttl_s if self.ttl_s else None, "date": self.layout.date}

    def _try_acquire(self) -> dict | None:
        """Take the lease (returns None) or return the holder's record."""
        raise NotImplementedError

    def _renew(self) -> None:
        """Extend the expiry; set ``self.lost`` if the lease is no longer ours."""

    def _still_ours(self) -> str | None:
        """None if the lease is ours now, else why not."""
        return None

    def _release(self) -> None:
        raise NotImplementedError

    # ----------------------------------------------------------------- public
    def acquire(self) -> "Lease":
        deadline = _now() + self.wait_s
        waited = False
        while True:
            holder = self._try_acquire()
            if holder is None:
                break
            if _now() >= deadline:
                raise LeaseHeld(f"{self.layout.dir} is being scored by {_describe(holder)}; "
                                + ("gave up waiting" if waited else "not starting a second run (--wait SECONDS to wait for it)"))
            waited = True
            time.sleep(min(self.poll_s, max(0.05, deadline - _now())))
        if self.ttl_s:
            self._thread = threading.Thread(target=self._renew_loop, name=f"lease-{self.layout.date}", daemon=True)
            self._thread.start()
        return self

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.ttl_s / 4):
            try:
                self._renew()
            except Exception as exc:  # noqa: BLE001 - a network error: retried until the expiry says lost
                if self.info.get("expires_at") and _now() > self.info["expires_at"]:
                    self.lost = f"lease not renewed before it expired ({exc})"
            if self.lost:
                return

    def check(self) -> None:
        """Fence: raise unless this run still holds the lease with time to spare."""
        if self.lost is None:
            exp = self.info.get("expires_at")
            if exp is not None and _now() > exp - self.ttl_s / 2:
                self.lost = "lease not renewed in time"
            else:
                self.lost = self._still_ours()
        if self.lost:
            raise ScoreError(f"{self.layout.dir}: this run ({self.run_id}) lost its lease: {self.lost}; "
                             "not committing (another run may own the date now)")

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        try:
            self._release()
        except Exception:  # noqa: BLE001 - an unreleased lease expires (S3) or dies with us (local)
            pass

    def __enter__(self) -> "Lease":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _pid_space() -> str | None:
    """This kernel's boot id and pid namespace: processes that share them see each other's pids."""
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
            return f"{f.read().strip()}/{os.stat('/proc/self/ns/pid').st_ino}"
    except OSError:
        return None


def _holder_is_gone(holder: dict) -> bool:
    """The holder ran in this pid space and its process no longer exists (a run killed on this
    machine): its lease need not be waited out. Any doubt (another machine or container, a pid
    reused, an unreaped process) counts as alive, and the lease is taken over at its expiry."""
    if _pid_space() is None or holder.get("pid_space") != _pid_space():
        return False
    try:
        os.kill(int(str(holder.get("holder")).rsplit(":", 1)[1]), 0)
    except ProcessLookupError:
        return True
    except (OSError, ValueError, IndexError):
        return False
    return False


class NoLease(Lease):
    """--no-lease: the scheduler promises one run per date."""

    def __init__(self, layout: OutputLayout, run_id: str, **_: object) -> None:
        super().__init__(layout, run_id, ttl_s=0)

    def _try_acquire(self) -> dict | None:
        return None

    def _release(self) -> None:
        pass


class LocalLease(Lease):
    """flock on OUTPUT/date=D/_lease (released by the kernel if the process dies)."""

    def __init__(self, layout: OutputLayout, run_id: str, ttl_s: float = 0.0, wait_s: float = 0.0, poll_s: float = 0.5) -> None:
        super().__init__(layout, run_id, ttl_s=0, wait_s=wait_s, poll_s=poll_s)
        self.fd: int | None = None

    def _try_acquire(self) -> dict | None:
        import fcntl

        self.layout.mkdirs()
        fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            for _ in range(20):  # the holder writes its record right after locking
                try:
                    with open(self.path, encoding="utf-8") as f:
                        holder = json.loads(f.read() or "null")
                except (OSError, ValueError):
                    holder = None
                if holder:
                    return holder
                time.sleep(0.05)
            return {}
        self.fd = fd
        self.info = self._body()
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(self.info) + "\n").encode("utf-8"), 0)
        return None

    def _still_ours(self) -> str | None:
        try:
            same = os.fstat(self.fd).st_ino == os.stat(self.path).st_ino
        except OSError:
            same = False
        return None if same else f"{self.path} was deleted or replaced"

    def _release(self) -> None:
        if self.fd is not None:
            os.ftruncate(self.fd, 0)
            os.close(self.fd)
            self.fd = None


class LeaseConflict(Exception):
    """A conditional write or delete of the lease object failed its condition (or the object is gone)."""


class ObjectLease(Lease):
    """The lease as an object with a version ``token`` (S3 ETag, GCS generation): created only if
    absent, renewed or taken over only if still at the token read (compare-and-swap)."""

    def __init__(self, layout: OutputLayout, run_id: str, ttl_s: float = 120.0, wait_s: float = 0.0, poll_s: float = 1.0) -> None:
        super().__init__(layout, run_id, ttl_s=ttl_s, wait_s=wait_s, poll_s=poll_s)
        self.bucket, self.key = self.path.split("/", 1)
        self.token: str | None = None

    # The store's operations; each raises LeaseConflict when its condition fails.
    def _create(self, body: dict) -> str:
        """Write ``body`` only if no lease object exists; returns its token."""
        raise NotImplementedError

    def _replace(self, body: dict, token: str) -> str:
        """Write ``body`` only if the object is still at ``token``; returns the new token."""
        raise NotImplementedError

    def _read(self) -> tuple[dict, str] | None:
        """(holder record, token) of the lease object, None if there is none."""
        raise NotImplementedError

    def _delete(self, token: str) -> None:
        """Delete the object (only if still at ``token`` where the store can say so)."""
        raise NotImplementedError

    def _try_acquire(self) -> dict | None:
        body = self._body()
        try:
            self.token, self.info = self._create(body), body
            return None
        except LeaseConflict:
            pass
        current = self._read()
        if current is None:  # released meanwhile: try again
            return self._try_acquire() if self.wait_s == 0 else {}
        holder, token = current
        if self._applied(body, current):
            return None
        if (holder.get("expires_at") is not None and holder["expires_at"] < _now()) or _holder_is_gone(holder):
            try:  # a crashed holder: take over, if nobody else did since we read it
                self.token, self.info = self._replace(body, token), body
                return None
            except LeaseConflict:
                pass
        return holder

    def _renew(self) -> None:
        body = self._body()
        try:
            self.token, self.info = self._replace(body, self.token), body
        except LeaseConflict:
            if not self._applied(body, self._read()):
                self.lost = "the lease object was replaced or deleted"

    def _applied(self, body: dict, current: tuple[dict, str] | None) -> bool:
        """Whether the object holds exactly our ``body`` (a write the SDK retried after the store had
        applied it fails its condition the second time): then it is ours, at its current token."""
        if current is None or current[0] != body:
            return False
        self.token, self.info = current[1], body
        return True

    def _still_ours(self) -> str | None:
        try:
            current = self._read()
        except Exception as exc:  # noqa: BLE001
            return f"cannot read the lease ({exc})"
        if current is None:
            return "the lease object was deleted"
        return None if current[1] == self.token else "another run replaced the lease"

    def _release(self) -> None:
        if self.token and self._still_ours() is None:
            try:
                self._delete(self.token)
            except LeaseConflict:
                pass
        self.token = None


class S3Lease(ObjectLease):
    """s3://BUCKET/.../date=D/_lease with ``If-None-Match: *`` / ``If-Match: <ETag>`` (boto3; any
    S3-compatible store with conditional writes)."""

    def __init__(self, layout: OutputLayout, run_id: str, **kw) -> None:
        super().__init__(layout, run_id, **kw)
        self.client = s3_client(layout.uri, layout.fs)

    def _put(self, body: dict, **cond) -> str:
        try:
            return self.client.put_object(Bucket=self.bucket, Key=self.key, Body=json.dumps(body).encode("utf-8"),
                                          ContentType="application/json", **cond)["ETag"]
        except Exception as exc:  # noqa: BLE001
            if _precondition_failed(exc) or _not_found(exc):
                raise LeaseConflict() from exc
            raise

    def _create(self, body: dict) -> str:
        return self._put(body, IfNoneMatch="*")

    def _replace(self, body: dict, token: str) -> str:
        return self._put(body, IfMatch=token)

    def _read(self) -> tuple[dict, str] | None:
        try:
            cur = self.client.get_object(Bucket=self.bucket, Key=self.key)
        except Exception as exc:  # noqa: BLE001
            if _not_found(exc):
                return None
            raise
        return json.loads(cur["Body"].read() or b"{}"), cur["ETag"]

    def _delete(self, token: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self.key)  # S3 has no conditional delete: checked just before


class GcsLease(ObjectLease):
    """gs://BUCKET/.../date=D/_lease with ``ifGenerationMatch=0`` to create and
    ``ifGenerationMatch=<generation>`` to renew, take over and delete (google-cloud-storage)."""

    def __init__(self, layout: OutputLayout, run_id: str, **kw) -> None:
        super().__init__(layout, run_id, **kw)
        self.blobs = gcs_client().bucket(self.bucket)

    def _put(self, body: dict, generation: int) -> str:
        from google.api_core import exceptions as gexc

        blob = self.blobs.blob(self.key)
        try:
            blob.upload_from_string(json.dumps(body), content_type="application/json", if_generation_match=generation)
        except (gexc.PreconditionFailed, gexc.NotFound) as exc:
            raise LeaseConflict() from exc
        return str(blob.generation)

    def _create(self, body: dict) -> str:
        return self._put(body, 0)

    def _replace(self, body: dict, token: str) -> str:
        return self._put(body, int(token))

    def _read(self) -> tuple[dict, str] | None:
        from google.api_core import exceptions as gexc

        blob = self.blobs.get_blob(self.key)
        if blob is None:
            return None
        generation = blob.generation  # (a download resets the blob's properties from its response)
        try:
            data = blob.download_as_bytes(if_generation_match=generation)
        except (gexc.PreconditionFailed, gexc.NotFound):  # replaced or deleted between the two calls
            return self._read()
        return json.loads(data or b"{}"), str(generation)

    def _delete(self, token: str) -> None:
        from google.api_core import exceptions as gexc

        try:
            self.blobs.blob(self.key).delete(if_generation_match=int(token))
        except (gexc.PreconditionFailed, gexc.NotFound) as exc:
            raise LeaseConflict() from exc


def _code(exc: Exception) -> str:
    return str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))


def _precondition_failed(exc: Exception) -> bool:
    return _code(exc) in ("PreconditionFailed", "412", "ConditionalRequestConflict", "409")


def _not_found(exc: Exception) -> bool:
    return _code(exc) in ("NoSuchKey", "404", "NotFound")


def open_lease(layout: OutputLayout, run_id: str, ttl_s: float = 120.0, wait_s: float = 0.0,
               enabled: bool = True) -> Lease:
    """The lease for this output's filesystem (not yet acquired)."""
    if not enabled:
        return NoLease(layout, run_id)
    if layout.local:
        return LocalLease(layout, run_id, wait_s=wait_s)
    if isinstance(layout.fs, pafs.S3FileSystem):
        return S3Lease(layout, run_id, ttl_s=ttl_s, wait_s=wait_s)
    if isinstance(layout.fs, pafs.GcsFileSystem):
        return GcsLease(layout, run_id, ttl_s=ttl_s, wait_s=wait_s)
    scheme = layout.uri.split("://", 1)[0] if "://" in layout.uri else type(layout.fs).__name__
    raise ScoreError(f"{scheme} output ({type(layout.fs).__name__}): no lease for this filesystem (local disks, S3 "
                     "and GCS have one), so one run per date cannot be guaranteed; pass --no-lease "
                     "if your scheduler never starts two runs of one date")
