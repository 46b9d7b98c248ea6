"""A local S3 API server (moto) for tests and benchmarks: start, stop, restart on the same port.

Two ways to run it:

- ``S3Server()`` serves from a thread of this process (moto's ``ThreadedMotoServer``).
  moto keeps its buckets in module globals, so a ``stop()`` then ``start()`` on the same
  port brings the same objects back, as a real store that went away and came back would.
- ``S3Server(in_process=False)`` runs ``python -m moto.server`` as a child process, so that
  a benchmark's client and server do not share one GIL; its objects die with it.

Clients find it through the standard AWS environment only (``AWS_ENDPOINT_URL``, dummy
credentials, a region), which :meth:`S3Server.env` returns and :meth:`S3Server.activate`
sets: nbcheckpoint needs no option to use it.

Examples
--------
>>> server = S3Server().start()                      # doctest: +SKIP
>>> url = server.new_store_url()                     # s3://nbcheckpoint-test/<uuid>
>>> with server.activate(): CheckpointStore(url).save({"x": 1}, nb)
>>> server.stop()
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

ACCESS_KEY = "AKIANBCHECKPOINTTEST"
SECRET_KEY = "nbcheckpoint-test-secret-2f9c41d7e0b8a6"
REGION = "us-east-1"
BUCKET = "nbcheckpoint-test"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _answers(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


class S3Server:
    """moto's S3 on 127.0.0.1, started and stopped on demand, always on the same port."""

    def __init__(self, port: int | None = None, *, in_process: bool = True) -> None:
        self.port = port or free_port()
        self.in_process = in_process
        self._thread_server: Any = None
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        """What a client (this process, a kernel, a writer) needs to reach this server."""
        return {
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_ENDPOINT_URL": self.endpoint,
            # Keep the machine's own profiles and config out of the tests.
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        }

    @contextlib.contextmanager
    def activate(self) -> Iterator[S3Server]:
        """Set :meth:`env` in this process for the duration of the block."""
        saved = {k: os.environ.get(k) for k in self.env()}
        os.environ.update(self.env())
        try:
            yield self
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    @property
    def running(self) -> bool:
        return self._thread_server is not None or self._process is not None

    def start(self, timeout: float = 20) -> S3Server:
        if self.running:
            return self
        if self.in_process:
            from moto.server import ThreadedMotoServer

            # werkzeug logs one line per request; a test that uploads parts would drown in them.
            logging.getLogger("werkzeug").setLevel(logging.ERROR)
            self._thread_server = ThreadedMotoServer(
                ip_address="127.0.0.1", port=self.port, verbose=False
            )
            self._thread_server.start()
        else:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + timeout
        while not _answers(self.port):
            if self._process is not None and self._process.poll() is not None:
                raise RuntimeError(f"moto server exited with {self._process.returncode}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"moto did not answer on port {self.port}")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        """Close the port: clients now get "connection refused", as from a store that is down."""
        if self._thread_server is not None:
            self._thread_server.stop()
            self._thread_server = None
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None
        deadline = time.monotonic() + 10
        while _answers(self.port) and time.monotonic() < deadline:
            time.sleep(0.02)

    def client(self) -> Any:
        """A boto3 S3 client for looking at the server behind nbcheckpoint's back."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name=REGION,
        )

    def make_bucket(self, name: str = BUCKET) -> str:
        client = self.client()
        with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
            client.create_bucket(Bucket=name)
        return name

    def new_store_url(self, bucket: str = BUCKET) -> str:
        """A fresh, empty store: a unique prefix in ``bucket`` (created if needed)."""
        self.make_bucket(bucket)
        return f"s3://{bucket}/{uuid.uuid4().hex[:12]}"

    def objects(self, url: str) -> dict[str, bytes]:
        """Every object under a store URL, by key relative to the URL, with its bytes."""
        bucket, _, prefix = url.removeprefix("s3://").partition("/")
        client = self.client()
        found: dict[str, bytes] = {}
        for page in client.get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix=f"{prefix}/"
        ):
            for item in page.get("Contents", []):
                key = item["Key"]
                body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
                found[key[len(prefix) + 1 :]] = body
        return found

    def unfinished_uploads(self, url: str) -> list[dict[str, Any]]:
        bucket, _, prefix = url.removeprefix("s3://").partition("/")
        listing = self.client().list_multipart_uploads(Bucket=bucket, Prefix=f"{prefix}/")
        uploads: list[dict[str, Any]] = listing.get("Uploads", [])
        return uploads


_shared: S3Server | None = None


def shared_server() -> S3Server:
    """One server for the whole test session (tests that stop a server start their own)."""
    global _shared
    if _shared is None:
        _shared = S3Server().start()
        atexit.register(_shared.stop)
    return _shared
