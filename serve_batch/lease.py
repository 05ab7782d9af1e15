"""One run per date: a lease on ``OUTPUT/date=D/_lease``, taken before anything of the date is
read or changed, renewed while the run lives, checked before every commit (fencing).

Backends, by the output's filesystem:

- **local disk** (``LocalLease``): an exclusive ``flock`` on ``_lease`` for the life of the run;
  the file also holds the holder's JSON (run id, host:pid) for the refusal message. The kernel
  drops the lock when the process dies, so there is no expiry to wait for. (Not for NFS
  mounts without working ``flock``.)
- **S3 and S3-compatible stores** (``S3Lease``, boto3): ``_lease`` is created with a conditional
  write (``PutObject If-None-Match: *``: exactly one creator wins) and holds the run id and an
  expiry (wall clock, epoch seconds). A background thread renews it every ``ttl/4`` with
  ``If-Match: <our ETag>``; a renewal that fails its condition means another run took the
  lease over, and this run stops at its next fence check. A lease past its expiry (a crashed
  holder) is taken over with ``If-Match: <its ETag>`` (one taker wins). ``check()`` (before each
  commit marker and before ``_SUCCESS``) requires the object's ETag to still be ours and at
  least ``ttl/2`` left on our expiry, so a write made right after a check lands inside the lease.
- **other stores** (GCS, ...): refused with a message (GCS's ``ifGenerationMatch=0`` would do
  it, but pyarrow's GcsFileSystem does not expose preconditions); ``--no-lease`` opts out when
  the scheduler itself guarantees one run per date.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import urllib.parse

import pyarrow.fs as pafs

from serve_batch.layout import LEASE, OutputLayout, ScoreError


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
        return {"run_id": self.run_id, "holder": f"{socket.gethostname()}:{os.getpid()}",
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


class S3Lease(Lease):
    """Conditional writes on s3://BUCKET/.../date=D/_lease (boto3; any S3-compatible store)."""

    def __init__(self, layout: OutputLayout, run_id: str, ttl_s: float = 120.0, wait_s: float = 0.0, poll_s: float = 1.0) -> None:
        super().__init__(layout, run_id, ttl_s=ttl_s, wait_s=wait_s, poll_s=poll_s)
        self.bucket, self.key = self.path.split("/", 1)
        self.client = s3_client(layout.uri, layout.fs)
        self.etag: str | None = None

    def _put(self, body: dict, **cond) -> str:
        r = self.client.put_object(Bucket=self.bucket, Key=self.key, Body=json.dumps(body).encode("utf-8"),
                                   ContentType="application/json", **cond)
        return r["ETag"]

    def _try_acquire(self) -> dict | None:
        body = self._body()
        try:
            self.etag, self.info = self._put(body, IfNoneMatch="*"), body
            return None
        except Exception as exc:  # noqa: BLE001
            if not _precondition_failed(exc):
                raise
        try:
            cur = self.client.get_object(Bucket=self.bucket, Key=self.key)
        except Exception as exc:  # noqa: BLE001
            if _not_found(exc):
                return self._try_acquire() if self.wait_s == 0 else {}  # released meanwhile: try again
            raise
        holder, etag = json.loads(cur["Body"].read() or b"{}"), cur["ETag"]
        if holder.get("expires_at") is not None and holder["expires_at"] < _now():
            try:  # a crashed holder: take over, if nobody else did since we read it
                self.etag, self.info = self._put(body, IfMatch=etag), body
                return None
            except Exception as exc:  # noqa: BLE001
                if not _precondition_failed(exc) and not _not_found(exc):
                    raise
        return holder

    def _renew(self) -> None:
        body = self._body()
        try:
            self.etag, self.info = self._put(body, IfMatch=self.etag), body
        except Exception as exc:  # noqa: BLE001
            if _precondition_failed(exc) or _not_found(exc):
                self.lost = "the lease object was replaced or deleted"
            else:
                raise

    def _still_ours(self) -> str | None:
        try:
            etag = self.client.head_object(Bucket=self.bucket, Key=self.key)["ETag"]
        except Exception as exc:  # noqa: BLE001
            return "the lease object was deleted" if _not_found(exc) else f"cannot read the lease ({exc})"
        return None if etag == self.etag else "another run replaced the lease"

    def _release(self) -> None:
        if self.etag and self._still_ours() is None:
            self.client.delete_object(Bucket=self.bucket, Key=self.key)
        self.etag = None


def _code(exc: Exception) -> str:
    return str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))


def _precondition_failed(exc: Exception) -> bool:
    return _code(exc) in ("PreconditionFailed", "412", "ConditionalRequestConflict", "409")


def _not_found(exc: Exception) -> bool:
    return _code(exc) in ("NoSuchKey", "404", "NotFound")


def s3_client(uri: str, fs: pafs.FileSystem | None = None):
    """A boto3 S3 client for the store of ``uri``: endpoint from ``?endpoint_override=`` in the
    URI, else AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL (as pyarrow); region likewise."""
    try:
        import boto3
    except ImportError:
        raise ScoreError("s3:// output needs boto3 for its lease (pip install 'tagging[s3]'), or pass --no-lease") from None
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(uri).query)
    endpoint = (query.get("endpoint_override") or [None])[0]
    if endpoint and "://" not in endpoint:
        endpoint = f"{(query.get('scheme') or ['https'])[0]}://{endpoint}"
    endpoint = endpoint or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    region = (query.get("region") or [None])[0] or getattr(fs, "region", None) or None
    return boto3.session.Session().client("s3", endpoint_url=endpoint, region_name=region)  # a session per client: thread-safe


def open_lease(layout: OutputLayout, run_id: str, ttl_s: float = 120.0, wait_s: float = 0.0,
               enabled: bool = True) -> Lease:
    """The lease for this output's filesystem (not yet acquired)."""
    if not enabled:
        return NoLease(layout, run_id)
    if layout.local:
        return LocalLease(layout, run_id, wait_s=wait_s)
    if isinstance(layout.fs, pafs.S3FileSystem):
        return S3Lease(layout, run_id, ttl_s=ttl_s, wait_s=wait_s)
    scheme = layout.uri.split("://", 1)[0] if "://" in layout.uri else type(layout.fs).__name__
    raise ScoreError(f"{scheme} output: no lease support yet, so one run per date cannot be guaranteed "
                     "(GCS needs ifGenerationMatch, which pyarrow does not expose); pass --no-lease "
                     "if your scheduler never starts two runs of one date")
