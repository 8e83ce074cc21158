"""A real S3 server on loopback for the tests: `moto_server` on a free 127.0.0.1 port.

Started once per session, as s3fs's own test suite does. The `s3` fixture points the
standard AWS variables at it (endpoint, fake credentials), so the CLI, `pipeline.run`
and the Ray workers they start all reach it through botocore's ordinary configuration.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

# Fake, but unique per session, so a test can grep outputs for them.
ACCESS_KEY_ID = "AKIATEST" + secrets.token_hex(6).upper()
SECRET_ACCESS_KEY = "secret-" + secrets.token_urlsafe(24)
SESSION_TOKEN = "token-" + secrets.token_urlsafe(24)


@dataclass
class S3:
    """One fresh bucket on the loopback server, with the environment set to reach it."""

    endpoint: str
    bucket: str
    log: Path
    secrets: tuple[str, ...] = (ACCESS_KEY_ID, SECRET_ACCESS_KEY, SESSION_TOKEN)

    def uri(self, key: str = "") -> str:
        return f"s3://{self.bucket}/{key}".rstrip("/")

    def endpoint_option(self, endpoint: str | None = None) -> str:
        """`--storage-options` naming the endpoint (this server's, or a proxy of it): how a
        run on the session's Ray (the `local_ray` fixture) reaches the bucket."""
        return json.dumps({"endpoint_url": endpoint or self.endpoint})

    def filesystem(self):
        import s3fs

        return s3fs.S3FileSystem(endpoint_url=self.endpoint, skip_instance_cache=True)

    def requests(self) -> list[str]:
        """Request lines the server has logged so far, e.g. 'GET /bucket?list-type=2...'.

        The server logs a request just after answering it, so wait until the log is quiet.
        """
        size, deadline = -1, time.monotonic() + 5
        while size != self.log.stat().st_size and time.monotonic() < deadline:
            size = self.log.stat().st_size
            time.sleep(0.3)
        lines = self.log.read_text(errors="replace").splitlines()
        return [line.split('"')[1] for line in lines if line.count('"') >= 2]


CREDENTIALS = {"AWS_ACCESS_KEY_ID": ACCESS_KEY_ID, "AWS_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY,
               "AWS_SESSION_TOKEN": SESSION_TOKEN, "AWS_DEFAULT_REGION": "us-east-1"}


@contextlib.contextmanager
def credentials_in_environment():
    """The fake credentials (not the endpoint) in this process's environment, then as before:
    what the session's Ray starts inside inherits them."""
    before = dict(os.environ)
    os.environ.update(CREDENTIALS)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(before)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until_up(endpoint: str, process: subprocess.Popen, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"moto_server exited with status {process.returncode}")
        try:
            urllib.request.urlopen(endpoint + "/moto-api/", timeout=1)
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"moto_server did not answer on {endpoint} within {seconds}s")


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """Start `moto_server -H 127.0.0.1 -p PORT`; yield `(endpoint, log path)`."""
    executable = shutil.which("moto_server")
    if executable is None:
        pytest.fail("moto_server not found: install the dev extra (pip install -e .[dev])")
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    log = tmp_path_factory.mktemp("moto") / "requests.log"
    with log.open("wb") as sink:
        process = subprocess.Popen([executable, "-H", "127.0.0.1", "-p", str(port)],
                                   stdout=sink, stderr=subprocess.STDOUT)
    try:
        wait_until_up(endpoint, process)
        yield endpoint, log
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture
def s3(s3_server, monkeypatch) -> S3:
    """A fresh bucket, with AWS_ENDPOINT_URL and fake credentials in the environment."""
    import s3fs

    endpoint, log = s3_server
    for name in ("AWS_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    # fsspec caches filesystem instances by their arguments, not by the environment.
    s3fs.S3FileSystem.clear_instance_cache()
    server = S3(endpoint, f"test-{uuid.uuid4().hex[:12]}", log)
    server.filesystem().mkdir(server.bucket)
    yield server
    s3fs.S3FileSystem.clear_instance_cache()



class FaultyProxy:
    """A loopback HTTP proxy in front of the S3 server that answers some requests itself
    with an S3 error (`503 SlowDown`, `500 InternalError`, ...), as a busy bucket does, and
    forwards the rest. `fail(method, key, times, code, status, message)` plans failures;
    `seen` counts the requests per (method, key) that reached the proxy. With `latency`
    (seconds), every request waits that long before it is answered, as a distant bucket's
    round trip does (requests are served on threads, so they wait side by side);
    `most_at_once` is the most requests the proxy was answering at one time."""

    def __init__(self, upstream: str, latency: float = 0.0):
        import http.client
        import threading
        from collections import Counter
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        from urllib.parse import urlsplit

        target = urlsplit(upstream)
        proxy = self
        self.plans: dict[tuple[str, str], list] = {}
        self.seen: Counter = Counter()
        self.lock = threading.Lock()
        self.latency = latency
        self.at_once = self.most_at_once = 0

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # the test's output stays quiet
                pass

            def relay(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                key = (self.command, urlsplit(self.path).path)
                with proxy.lock:
                    proxy.seen[key] += 1
                    plan = proxy.plans.get(key)
                    failing = plan is not None and plan[0] != 0
                    if failing and plan[0] > 0:
                        plan[0] -= 1
                if proxy.latency:
                    with proxy.lock:
                        proxy.at_once += 1
                        proxy.most_at_once = max(proxy.most_at_once, proxy.at_once)
                    time.sleep(proxy.latency)
                    with proxy.lock:
                        proxy.at_once -= 1
                if failing:
                    _, code, status, message = plan
                    self.answer(status, {"Content-Type": "application/xml"}, (
                        f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
                        f"<Message>{message}</Message><RequestId>proxy</RequestId></Error>"
                    ).encode())
                    return
                connection = http.client.HTTPConnection(target.hostname, target.port,
                                                        timeout=30)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "expect"}
                connection.request(self.command, self.path, body, headers)
                response = connection.getresponse()
                data = response.read()
                connection.close()
                dropped = ("transfer-encoding", "connection") + (
                    () if self.command == "HEAD" else ("content-length",))
                passed = {k: v for k, v in response.getheaders() if k.lower() not in dropped}
                self.answer(response.status, passed, data)

            def answer(self, status, headers, data):
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                if self.command != "HEAD":
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = relay

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def fail(self, method: str, path: str, times: int, code: str, status: int,
             message: str) -> None:
        """Answer the next `times` requests (-1: all) for `path` ('/bucket/key') with this
        S3 error."""
        with self.lock:
            self.plans[(method, path)] = [times, code, status, message]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
