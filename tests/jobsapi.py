"""A loopback HTTP server standing in for (or in front of) a Ray Jobs API, recording what
reaches it: which address a client really talks to, which Authorization header it sends,
and how a head that is still starting answers.

Without `upstream` it answers as an empty cluster (version, no jobs, 404 for any job id);
with `upstream` it forwards each request to a real head. `refuse(method, path, answers)`
queues answers for the next matching requests: `(status, text)` answers instead of the
head, `(status, text, True)` forwards first and then answers so (a reply lost on the way).
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import requests

RAY_VERSION = "2.60.0"


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    authorization: str | None


class JobsApi:
    def __init__(self, upstream: str | None = None, port: int = 0,
                 ray_version: str = RAY_VERSION, jobs: dict[str, dict] | None = None):
        self.upstream, self.ray_version = upstream, ray_version
        self.jobs = jobs or {}  # submission id -> JobDetails fields, for the stub's answers
        self.seen: list[Seen] = []
        self._queued: list[tuple[str, str, list[tuple]]] = []
        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", port), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> JobsApi:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def refuse(self, method: str, path: str, answers: list[tuple]) -> None:
        self._queued.append((method, path, list(answers)))

    def count(self, method: str, path: str) -> int:
        return sum(1 for seen in self.seen if seen.method == method and seen.path == path)

    def _next_answer(self, method: str, path: str) -> tuple | None:
        with self._lock:
            for queued_method, queued_path, answers in self._queued:
                if (queued_method, queued_path) == (method, path) and answers:
                    return answers.pop(0)
        return None

    def _answer(self, method: str, path: str, headers, body: bytes) -> tuple[int, str, bytes]:
        self.seen.append(Seen(method, path, headers.get("Authorization")))
        queued = self._next_answer(method, path)
        if queued is not None and not (len(queued) > 2 and queued[2]):
            return queued[0], "text/plain", queued[1].encode()
        answer = (self._forward(method, path, headers, body) if self.upstream
                  else self._stub(method, path))
        if queued is not None:  # forwarded, then the head's reply is lost
            return queued[0], "text/plain", queued[1].encode()
        return answer

    def _forward(self, method: str, path: str, headers, body: bytes):
        sent = {name: headers[name] for name in ("Authorization", "Content-Type")
                if headers.get(name)}
        reply = requests.request(method, self.upstream + path, headers=sent, data=body,
                                 timeout=120)
        return (reply.status_code, reply.headers.get("Content-Type", "text/plain"),
                reply.content)

    def _stub(self, method: str, path: str) -> tuple[int, str, bytes]:
        if method == "GET" and path == "/api/version":
            return 200, "application/json", json.dumps(
                {"version": "4", "ray_version": self.ray_version, "ray_commit": "stub"}).encode()
        if method == "GET" and path == "/api/jobs/":
            return 200, "application/json", json.dumps(list(self.jobs.values())).encode()
        if method == "GET" and path.startswith("/api/jobs/"):
            job = self.jobs.get(path.removeprefix("/api/jobs/"))
            if job is not None:
                return 200, "application/json", json.dumps(job).encode()
            return 404, "text/plain", b"Job does not exist"
        return 404, "text/plain", b"not found"

    def _handler(self):
        api = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                status, kind, payload = api._answer(self.command, self.path, self.headers, body)
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_DELETE = _serve

            def log_message(self, *args) -> None:  # keep test output clean
                pass

        return Handler


def job_details(submission_id: str, **fields) -> dict:
    """The fields of Ray's JobDetails for a submitted job, as GET /api/jobs/ID returns them."""
    return {"type": "SUBMISSION", "job_id": None, "submission_id": submission_id,
            "driver_info": None, "status": "RUNNING", "entrypoint": "python -m jobs.restore",
            "message": "Job is currently running.", "error_type": None,
            "start_time": 1764558000000, "end_time": None, "metadata": {},
            "runtime_env": {}, "driver_agent_http_address": None, "driver_node_id": None,
            "driver_exit_code": None, **fields}
