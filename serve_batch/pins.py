"""Pinned inputs: what each input file *was* when the run planned it (Ray-free).

A file's identity is its size and modification time, plus the object's ETag and version id on
S3 and its generation on GCS (a rewrite within the same second with the same size still
changes them). It is recorded in ``_run.json`` at plan time and used three times:

- **while reading**: an S3 unit is read at its planned ETag (``If-Match`` on every GET,
  ``tagging.stores.open_version``); pyarrow reads one GCS generation per open file;
- **right after reading a unit**, before it can be committed (``changed_since_plan``, in the
  scoring actor): a unit whose file is no longer as planned is not committed and fails the run;
- **before ``_SUCCESS``** (``changes``), with the input listing: a file that landed after the
  plan is noticed instead of silently left out.

``--require-upstream-success`` (``wait_for_upstream``): each input folder's own ``_SUCCESS``
(written last by the upstream job) must exist before the run plans.
"""

from __future__ import annotations

import itertools
import json
import logging
import posixpath
import time
from collections.abc import Sequence

import pyarrow.fs as pafs

from serve_batch.layout import ScoreError
from tagging.readers import ReadUnit, list_files, resolve_filesystem
from tagging.stores import StoreError, gcs_client, s3_client

logger = logging.getLogger(__name__)

UPSTREAM_SUCCESS = "_SUCCESS"


def file_identity(uri: str) -> dict:
    """{size, mtime_ns[, etag, version_id | generation]} of one input file (a local path or a URI)."""
    fs, path = resolve_filesystem(uri)
    info = fs.get_file_info(path)
    if info.type != pafs.FileType.File:
        return {"missing": True}
    out = {"size": info.size, "mtime_ns": info.mtime_ns}
    try:
        if isinstance(fs, pafs.S3FileSystem):
            bucket, key = path.split("/", 1)
            head = s3_client(uri, fs).head_object(Bucket=bucket, Key=key)
            out.update({"etag": head.get("ETag")}, **({"version_id": head["VersionId"]} if head.get("VersionId") else {}))
        elif isinstance(fs, pafs.GcsFileSystem):
            bucket, key = path.split("/", 1)
            blob = gcs_client().bucket(bucket).get_blob(key)
            out.update({"generation": str(blob.generation)} if blob is not None else {"missing": True})
    except StoreError:  # without the store's client library (tagging[s3] / tagging[gcs]): size + mtime only
        pass
    return out


def identities(units: Sequence[ReadUnit]) -> dict[str, dict]:
    """Identity of every input file of the plan, by its path as planned."""
    out: dict[str, dict] = {}
    for u in units:
        if u.path not in out:
            out[u.path] = file_identity(u.path)
    return out


def describe(path: str, was: dict, now: dict) -> str:
    """One line: how a file differs from its planned identity."""
    if now.get("missing"):
        return f"{path} is gone"
    return f"{path} changed (" + ", ".join(
        f"{k} {was.get(k)} -> {now.get(k)}" for k in sorted(set(now) | set(was)) if now.get(k) != was.get(k)) + ")"


def changed_since_plan(item: dict) -> str | None:
    """For a work item carrying its file's planned ``identity`` (JSON): None if the file is still
    as planned, else how it changed (checked right after the unit is read, before its commit).
    Only what both sides know is compared (a worker without the store's client library sees size
    and mtime only, and its pinned read fails on the missing library instead)."""
    planned = json.loads(item.get("identity") or "null")
    if planned is None:
        return None
    now = file_identity(item["path"])
    if not now.get("missing") and all(now[k] == planned[k] for k in set(now) & set(planned)):
        return None
    return describe(item["path"], planned, now)


def changes(inputs: Sequence[str], planned: dict[str, dict]) -> list[str]:
    """What differs now from the planned identities: one line per changed, missing or new file."""
    out = []
    for path, ident in planned.items():
        now = file_identity(path)
        if now != ident:
            out.append(describe(path, ident, now))
    try:
        listed = list_files(list(inputs))
    except Exception:  # noqa: BLE001 - a vanished input folder is reported by the loop above
        listed = []
    known = {p.split("://", 1)[-1] for p in planned}
    out += [f"{path} is new (not in the plan)" for _, path in listed if path not in known]
    return out


def upstream_folders(inputs: Sequence[str]) -> list[str]:
    """The folder each input lives in, as a URI: a directory itself; a file's or a glob's folder."""
    out = []
    for uri in inputs:
        fs, path = resolve_filesystem(uri)
        base = path
        while any(ch in base for ch in "*?["):
            base = posixpath.dirname(base)
        if base == path and fs.get_file_info(path).type != pafs.FileType.Directory:
            base = posixpath.dirname(path)
        scheme = uri.split("://", 1)[0] + "://" if "://" in uri else ""
        out.append(scheme + base)
    return sorted(set(out))


def wait_for_upstream(inputs: Sequence[str], wait_s: float = 0.0, poll_s: float = 2.0) -> None:
    """Return once every input folder holds its own ``_SUCCESS``; waits up to ``wait_s`` seconds,
    then raises ScoreError naming the first folder without one."""
    deadline = time.time() + wait_s
    folders = upstream_folders(inputs)
    for polls in itertools.count():
        missing = [f for f in folders if not _exists(posixpath.join(f, UPSTREAM_SUCCESS))]
        if not missing:
            return
        if time.time() >= deadline:
            waited = f" after waiting {wait_s:g} s" if wait_s else ""
            raise ScoreError(f"upstream not finished: {missing[0]} has no {UPSTREAM_SUCCESS}{waited}"
                             + (f" (and {len(missing) - 1} more folders)" if len(missing) > 1 else "")
                             + "; --require-upstream-success scores a folder only once its writer has finished"
                             + ("" if wait_s else " (--upstream-wait SECONDS to wait for it)"))
        if polls == 0:
            logger.info(f"waiting up to {wait_s:g} s for {UPSTREAM_SUCCESS} in {', '.join(missing)}")
        time.sleep(max(0.05, min(poll_s, deadline - time.time())))


def _exists(uri: str) -> bool:
    fs, path = resolve_filesystem(uri)
    return fs.get_file_info(path).type == pafs.FileType.File
