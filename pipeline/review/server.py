"""The review web app's HTTP side: the standard library's threading server on loopback.

Safety, as Jupyter does it: the server binds 127.0.0.1 only and answers nothing but its
own static files without the random token it printed (`?token=` on the page's URL, the
`X-Review-Token` header on every call the page makes; a save takes the header only, which
a cross-site form cannot send). The Host header must name the loopback, which stops DNS
rebinding. Saves go only to the hand-masks folder, for photos the manifest lists.
"""

from __future__ import annotations

import json
import logging
import posixpath
import re
import secrets
import threading
from collections import OrderedDict
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, urlsplit

from pipeline import storage
from pipeline.discover import list_masks
from pipeline.review import items
from pipeline.review.items import Entry, ReviewError, View

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
MAX_BODY = 32 * 1024 * 1024
VIEWS_CACHED = 4
STATIC_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml"}
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
                               "img-src 'self' blob:; connect-src 'self'; base-uri 'none'; "
                               "form-action 'none'; frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}
TOKEN_IN_URL = re.compile(r"token=[^&\s]*")
ITEM_ROUTE = re.compile(r"^/api/items/([0-9a-f]{1,64})(?:/(photo|output|labels|mask))?$")


class NotFound(LookupError):
    """No such page, file or photo of this run: a 404."""


class Review:
    """The state behind the pages: the run's entries, recent views, the hand-masks folder."""

    def __init__(self, out: str, hand_masks: str, manifest_uri: str | None = None,
                 storage_options: dict | None = None):
        self.out = out
        self.hand_masks = hand_masks
        self.manifest_uri = manifest_uri or storage.join(out, "_manifest")
        self.storage_options = storage_options or {}
        self.entries = items.entries(self.manifest_uri, self.storage_options)
        self.by_id = {entry.item_id: entry for entry in self.entries}
        self._views: OrderedDict[str, View] = OrderedDict()
        self._lock = threading.Lock()

    def listing(self) -> dict[str, Any]:
        saved = self._saved_stems()
        return {"out": self.out, "hand_masks": self.hand_masks,
                "items": [entry.summary(_stem(entry) in saved) for entry in self.entries]}

    def _saved_stems(self) -> set[str]:
        fs, path = storage.filesystem(self.hand_masks, self.storage_options)
        if not storage.with_retries(lambda: fs.exists(path), f"stat {self.hand_masks}"):
            return set()
        return set(list_masks(self.hand_masks, self.storage_options))

    def entry(self, item_id: str) -> Entry:
        if item_id not in self.by_id:
            raise NotFound(item_id)
        return self.by_id[item_id]

    def view(self, item_id: str) -> View:
        with self._lock:
            if item_id in self._views:
                self._views.move_to_end(item_id)
                return self._views[item_id]
        built = items.build_view(self.entry(item_id), self.hand_masks, self.storage_options)
        with self._lock:
            self._views[item_id] = built
            while len(self._views) > VIEWS_CACHED:
                self._views.popitem(last=False)
        return built

    def save(self, item_id: str, edits: Any) -> dict[str, Any]:
        entry = self.entry(item_id)
        mask, _ = items.current_mask(entry, self.hand_masks, self.storage_options)
        corrected = items.apply_edits(mask, edits)
        uri = items.save_mask(entry, corrected, self.hand_masks, self.storage_options)
        with self._lock:
            self._views.pop(item_id, None)  # the next view starts from the saved mask
        return {"saved": uri, "hole_fraction": float(corrected.mean())}


def _stem(entry: Entry) -> str:
    return posixpath.splitext(entry.relative_path)[0]


class Handler(BaseHTTPRequestHandler):
    server: ReviewServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base's name)
        # The request line carries the token in the page's URL: never into a log.
        line = TOKEN_IN_URL.sub("token=…", format % args)
        log.debug("%s %s", self.address_string(), line)

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self._answer(self._get)

    def do_POST(self) -> None:  # noqa: N802
        self._answer(self._post)

    def _answer(self, route) -> None:
        try:
            if not self._host_is_loopback():
                return self._send_error(HTTPStatus.FORBIDDEN, "Host must be the loopback")
            route(urlsplit(self.path))
        except NotFound:
            self._send_error(HTTPStatus.NOT_FOUND, "no such page or photo in this run")
        except ReviewError as error:
            self._send_error(HTTPStatus.BAD_REQUEST, str(error))
        except Exception as error:  # one bad photo must not take the server down
            log.exception("review request %s failed", self.path)
            self._send_error(HTTPStatus.INTERNAL_SERVER_ERROR, f"{type(error).__name__}: {error}")

    def _host_is_loopback(self) -> bool:
        port = self.server.server_address[1]
        return self.headers.get("Host", "") in (f"{HOST}:{port}", f"localhost:{port}")

    def _get(self, url) -> None:
        if url.path.startswith("/static/"):
            return self._static(url.path.removeprefix("/static/"))
        if not self._token_ok(url, header_only=False):
            return self._send_error(HTTPStatus.FORBIDDEN, "missing or wrong token")
        if url.path in ("/", "/index.html"):
            return self._static("index.html")
        if url.path == "/api/items":
            return self._send_json(self.server.review.listing())
        match = ITEM_ROUTE.match(url.path)
        if not match or match.group(2) == "mask":
            raise NotFound(url.path)
        item_id, part = match.groups()
        view = self.server.review.view(item_id)
        if part is None:
            entry = self.server.review.entry(item_id)
            return self._send_json(entry.summary(view.source == "saved") | view.meta())
        if part == "labels":
            return self._send(view.labels, "application/octet-stream", {"Content-Encoding": "gzip"})
        return self._send(view.photo if part == "photo" else view.output, "image/jpeg")

    def _post(self, url) -> None:
        if not self._token_ok(url, header_only=True):
            return self._send_error(HTTPStatus.FORBIDDEN, "missing or wrong token")
        match = ITEM_ROUTE.match(url.path)
        if not match or match.group(2) != "mask":
            raise NotFound(url.path)
        if self.headers.get_content_type() != "application/json":
            raise ReviewError("send the edits as application/json")
        length = int(self.headers.get("Content-Length") or 0)
        if not 0 < length <= MAX_BODY:
            raise ReviewError(f"a save carries 1 to {MAX_BODY} bytes of JSON")
        try:
            body = json.loads(self.rfile.read(length))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ReviewError(f"the edits are not JSON: {error}") from None
        edits = body.get("edits") if isinstance(body, dict) else None
        self._send_json(self.server.review.save(match.group(1), edits))

    def _token_ok(self, url, header_only: bool) -> bool:
        given = self.headers.get("X-Review-Token")
        if given is None and not header_only:
            given = (parse_qs(url.query).get("token") or [None])[0]
        expected = self.server.token.encode()
        return given is not None and secrets.compare_digest(given.encode(), expected)

    def _static(self, name: str) -> None:
        suffix = "." + name.rsplit(".", 1)[-1] if "." in name else ""
        folder = resources.files("pipeline.review") / "static"
        # Only the package's own files by exact name: nothing the request spells can climb.
        known = {entry.name for entry in folder.iterdir()}
        if name not in known or suffix not in STATIC_TYPES:
            raise NotFound(name)
        self._send((folder / name).read_bytes(), STATIC_TYPES[suffix])

    def _send_json(self, value: Any) -> None:
        self._send(json.dumps(value).encode(), "application/json")

    def _send_error(self, status: HTTPStatus, message: str) -> None:
        self._send(json.dumps({"error": message}).encode(), "application/json", status=status)

    def _send(self, data: bytes, content_type: str, headers: dict[str, str] | None = None,
              status: HTTPStatus = HTTPStatus.OK) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for key, value in (SECURITY_HEADERS | (headers or {})).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)


class ReviewServer(ThreadingHTTPServer):
    """Serves one `Review` on 127.0.0.1 (never another address) with a fresh token."""

    daemon_threads = True

    def __init__(self, review: Review, port: int = 0):
        self.review = review
        self.token = secrets.token_urlsafe(24)
        super().__init__((HOST, port), Handler)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.server_address[1]}/?token={self.token}"


def serve(out: str, hand_masks: str, port: int = 0, manifest_uri: str | None = None,
          storage_options: dict | None = None) -> ReviewServer:
    """A review server over the run in `out`, bound but not yet serving: call
    `serve_forever()` on it (or run that in a thread) and open its `url`."""
    review = Review(out, hand_masks, manifest_uri, storage_options)
    if not review.entries:
        raise ReviewError(f"nothing to review in {review.manifest_uri}: no photo of a "
                          "`--masks auto` run is ok or skipped there")
    return ReviewServer(review, port)

