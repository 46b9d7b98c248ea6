"""S3 (``s3://``, ``s3a://``) through s3fs: HEAD for existence, ages renewed in place, stale uploads aborted, size known from the GET."""

from __future__ import annotations

import logging
import os
import re
import time
from typing import Any

from ...errors import StoreError
from .base import too_large
from .generic import FsspecBackend, _transient

# ``touch`` renews an object's age (a copy onto itself) once it is older than this; gc's
# grace period must exceed it for concurrent writers to be safe (the default is 1 h).
RENEW_AFTER = 300.0
_CONTENT_RANGE = re.compile(r"bytes \d+-\d+/(\d+)")
_log = logging.getLogger(__name__)


class S3Backend(FsspecBackend):
    """An S3 bucket and prefix. Endpoint, region and credentials come from the usual
    places (``AWS_ENDPOINT_URL``, ``AWS_PROFILE``, ``~/.aws``, ``FSSPEC_S3_*``); none of
    them is ever written into the store.

    Reads are one ranged GET each: the object's whole size comes back in its
    ``Content-Range``, and an object over the reader's cap is refused there, before its
    body is read.
    """

    @classmethod
    def default_options(cls) -> dict[str, Any]:
        import fsspec.config

        options = super().default_options()
        conf = fsspec.config.conf.get("s3", {})
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        if endpoint and "endpoint_url" not in {**conf, **conf.get("client_kwargs", {})}:
            # botocore reads these too; naming it also keys fsspec's instance cache, so a
            # process whose endpoint changes does not reuse a client of the old one.
            options["endpoint_url"] = endpoint
        configured = "config_kwargs" in conf
        from_env = os.environ.get("AWS_MAX_ATTEMPTS") or os.environ.get("AWS_RETRY_MODE")
        if not configured and not from_env:
            # This backend retries by itself, knowing which calls are safe to repeat;
            # botocore's own retries (5 attempts with backoff) would multiply with ours and
            # block a cell for a minute while the store is down.
            options["config_kwargs"] = {"retries": {"max_attempts": 1, "mode": "standard"}}
        return options

    def _exists(self, final: str) -> bool:
        # One HEAD; s3fs's exists() also lists, to find "directories", which we never use.
        bucket, key, _ = self.fs.split_path(final)
        try:
            self.fs.call_s3("head_object", Bucket=bucket, Key=key)
        except FileNotFoundError:
            return False
        return True

    def _get_range(
        self, path: str, start: int, end: int, limit: int | None
    ) -> tuple[bytes, int | None]:
        from fsspec.asyn import sync

        bucket, key, _ = self.fs.split_path(self._abs(path))

        async def fetch() -> tuple[bytes | None, int | None]:
            resp = await self.fs._call_s3(
                "get_object", Bucket=bucket, Key=key, Range=f"bytes={start}-{end - 1}"
            )
            body = resp["Body"]
            try:
                found = _CONTENT_RANGE.fullmatch(str(resp.get("ContentRange") or ""))
                total = int(found.group(1)) if found else None
                if limit is not None and total is not None and total > limit:
                    return None, total  # closed unread: nothing more is downloaded
                return bytes(await body.read()), total
            finally:
                body.close()

        data, total = self._call("read", path, sync, self.fs.loop, fetch)
        if data is None:
            assert total is not None and limit is not None
            raise self._refused(path, too_large(total, limit))
        # Without a Content-Range the size stays unknown; the range asked for still bounds
        # what was fetched, and the caller sees when more came than the cap allows.
        return data, total

    def touch(self, path: str) -> None:
        """Renew an object's age, so that gc's grace period covers a blob being reused.

        The object is copied onto itself (server side, no data through this machine), at
        most once per ``RENEW_AFTER`` seconds per object.
        """
        final = self._abs(path)
        with self._lock:
            if time.time() - self._renewed.get(final, 0.0) < RENEW_AFTER:
                return
        try:
            if time.time() - self.mtime(path) >= RENEW_AFTER:
                bucket, key, _ = self.fs.split_path(final)
                self._call(
                    "renew",
                    path,
                    self.fs.call_s3,
                    "copy_object",
                    Bucket=bucket,
                    Key=key,
                    CopySource={"Bucket": bucket, "Key": key},
                    MetadataDirective="REPLACE",
                )
        except FileNotFoundError:
            return
        except StoreError as e:
            # A store that is down fails the next call anyway, which reports it. Objects
            # over 5 GB cannot be copied in one request; the store's re-check after
            # publishing still puts back a blob that gc removed meanwhile.
            level = logging.DEBUG if e.__cause__ and _transient(e.__cause__) else logging.WARNING
            _log.log(level, "Could not renew the age of %s: %s", self._where(path), e)
            return
        self._remember(final)

    def _abort_stale_uploads(self, now: float, max_age: float) -> int:
        bucket, prefix, _ = self.fs.split_path(self.root)
        prefix = f"{prefix}/" if prefix else ""
        listing = self._call(
            "list uploads in",
            "",
            self.fs.call_s3,
            "list_multipart_uploads",
            Bucket=bucket,
            Prefix=prefix,
        )
        aborted = 0
        for upload in listing.get("Uploads", []):
            started = upload.get("Initiated")
            if started is None or now - started.timestamp() < max_age:
                continue  # perhaps a live writer's: spare it for the grace period
            try:
                self._call(
                    "abort an upload in",
                    "",
                    self.fs.call_s3,
                    "abort_multipart_upload",
                    Bucket=bucket,
                    Key=upload["Key"],
                    UploadId=upload["UploadId"],
                )
            except FileNotFoundError:
                pass
            aborted += 1
        return aborted
