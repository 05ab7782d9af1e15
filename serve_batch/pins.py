"""Pinned inputs: what each input file *was* when the run planned it (Ray-free).

A file's identity is its size and modification time, plus the object's ETag and version id on
S3 (a rewrite within the same second with the same size still changes the ETag). It is recorded
in ``_run.json`` at plan time and compared again before ``_SUCCESS``; the input listing is
compared too, so a file that landed after the plan is noticed instead of silently left out.
"""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow.fs as pafs

from tagging.readers import ReadUnit, list_files, resolve_filesystem


def file_identity(uri: str) -> dict:
    """{size, mtime_ns[, etag, version_id]} of one input file (a local path or a URI)."""
    fs, path = resolve_filesystem(uri)
    info = fs.get_file_info(path)
    if info.type != pafs.FileType.File:
        return {"missing": True}
    out = {"size": info.size, "mtime_ns": info.mtime_ns}
    if isinstance(fs, pafs.S3FileSystem):
        out.update(_s3_identity(uri, fs, path))
    return out


def _s3_identity(uri: str, fs: pafs.FileSystem, path: str) -> dict:
    try:
        from serve_batch.lease import s3_client
        client = s3_client(uri, fs)
    except Exception:  # noqa: BLE001 - without boto3: size + mtime only
        return {}
    bucket, key = path.split("/", 1)
    head = client.head_object(Bucket=bucket, Key=key)
    out = {"etag": head.get("ETag")}
    if head.get("VersionId"):
        out["version_id"] = head["VersionId"]
    return out


def identities(units: Sequence[ReadUnit]) -> dict[str, dict]:
    """Identity of every input file of the plan, by its path as planned."""
    out: dict[str, dict] = {}
    for u in units:
        if u.path not in out:
            out[u.path] = file_identity(u.path)
    return out


def changes(inputs: Sequence[str], planned: dict[str, dict]) -> list[str]:
    """What differs now from the planned identities: one line per changed, missing or new file."""
    out = []
    for path, ident in planned.items():
        now = file_identity(path)
        if now != ident:
            what = "is gone" if now.get("missing") else "changed (" + ", ".join(
                f"{k} {ident.get(k)} -> {now.get(k)}" for k in sorted(set(now) | set(ident)) if now.get(k) != ident.get(k)) + ")"
            out.append(f"{path} {what}")
    try:
        listed = list_files(list(inputs))
    except Exception:  # noqa: BLE001 - a vanished input folder is reported by the loop above
        listed = []
    known = {p.split("://", 1)[-1] for p in planned}
    out += [f"{path} is new (not in the plan)" for _, path in listed if path not in known]
    return out
