"""Object stores beside pyarrow's filesystems: the clients for what pyarrow does not expose
(conditional writes and reads, object versions). Ray-free; the clients are optional
dependencies, imported when first used: boto3 + smart_open for S3 (``tagging[s3]``),
google-cloud-storage for GCS (``tagging[gcs]``).

Endpoints follow each SDK's own convention, so one set of variables points everything at a
store: ``AWS_ENDPOINT_URL`` (or ``AWS_ENDPOINT_URL_S3``) for S3-compatible stores (pyarrow and
boto3 both read it), ``STORAGE_EMULATOR_HOST`` for a GCS emulator (google-cloud-storage reads it;
``tagging.readers.resolve_filesystem`` points pyarrow's GcsFileSystem at it too).
"""

from __future__ import annotations

import functools
import os
import urllib.parse

import pyarrow.fs as pafs


class StoreError(ValueError):
    """A store cannot be used as asked (a missing client library); the message says what to install."""


def s3_client(uri: str, fs: pafs.FileSystem | None = None):
    """A boto3 S3 client for the store of ``uri``: endpoint from ``?endpoint_override=`` in the
    URI, else AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL (as pyarrow); region likewise. One client per
    (endpoint, region) and process (boto3 clients are thread-safe)."""
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(uri).query)
    endpoint = (query.get("endpoint_override") or [None])[0]
    if endpoint and "://" not in endpoint:
        endpoint = f"{(query.get('scheme') or ['https'])[0]}://{endpoint}"
    endpoint = endpoint or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    region = (query.get("region") or [None])[0] or getattr(fs, "region", None) or None
    return _s3_client(endpoint, region)


@functools.lru_cache(maxsize=8)
def _s3_client(endpoint: str | None, region: str | None):
    try:
        import boto3
    except ImportError:
        raise StoreError("s3:// needs boto3 for conditional writes and reads (pip install 'tagging[s3]')") from None
    return boto3.session.Session().client("s3", endpoint_url=endpoint, region_name=region)


@functools.lru_cache(maxsize=1)
def gcs_client():
    """The process's google-cloud-storage client (default credentials; STORAGE_EMULATOR_HOST: the
    emulator, anonymous)."""
    try:
        from google.cloud import storage
    except ImportError:
        raise StoreError("gs:// needs google-cloud-storage for generation preconditions "
                         "(pip install 'tagging[gcs]')") from None
    return storage.Client()


def emulated_gcs() -> pafs.FileSystem | None:
    """pyarrow's GcsFileSystem on the emulator named by STORAGE_EMULATOR_HOST (anonymous), or None.
    pyarrow ignores that variable (and a gs:// URI cannot ask for anonymous access)."""
    host = os.environ.get("STORAGE_EMULATOR_HOST")
    if not host:
        return None
    scheme, _, endpoint = host.rpartition("://")
    return pafs.GcsFileSystem(anonymous=True, endpoint_override=endpoint.rstrip("/"), scheme=scheme or "http")


def open_version(fs: pafs.FileSystem, path: str, version: str):
    """A random-access file of ``path`` that reads only the object version ``version`` (an S3
    ETag: every GET carries ``If-Match``, through smart_open's seekable reader on boto3), or None
    where this is not how the store pins a version. A replaced object fails the next read
    (PreconditionFailed) instead of returning bytes of two versions: pyarrow's own S3 reads are
    unconditional ranged GETs. GCS needs nothing here: pyarrow reads one generation per open file."""
    if not isinstance(fs, pafs.S3FileSystem):
        return None
    import pyarrow as pa
    import smart_open

    bucket, key = path.split("/", 1)
    f = smart_open.s3.open(bucket, key, "rb", client=s3_client(f"s3://{path}", fs),
                           client_kwargs={"S3.Client.get_object": {"IfMatch": version}})
    return pa.PythonFile(f, mode="r")
