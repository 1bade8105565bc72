"""A real HTTP server on 127.0.0.1 that misbehaves on request, for download tests and benchmarks.

Each path has a list of behaviours; the n-th request to a path gets the n-th behaviour (the
last one repeats). Every request is recorded with its headers and the body bytes sent.
Range and If-Range are honoured as RFC 9110 says (If-Range compared with the behaviour's
ETag or Last-Modified header) unless a behaviour says otherwise.
"""

from __future__ import annotations

import re
import ssl
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


@dataclass
class Behaviour:
    body: bytes = b""
    file: Path | None = None
    """Serve this file (with sendfile) instead of `body`."""
    status: int = 200
    content_type: str = "application/zip"
    honour_range: bool = True
    drop_after: int | None = None
    """Close the connection after this many body bytes, Content-Length notwithstanding."""
    stall_after: int | None = None
    """Stop sending for `stall_seconds` after this many body bytes."""
    stall_seconds: float = 0.0
    gate: threading.Event | None = None
    """With `stall_after`: stop sending until this is set (at most 60 s), not for a time."""
    headers: dict[str, str] = field(default_factory=dict)
    """Extra headers; an ETag or Last-Modified here is what If-Range is compared with."""
    honour_if_range: bool = True
    """False: serve the Range even when If-Range does not match (a server that ignores it)."""
    max_range: int | None = None
    """A 206 carries at most this many bytes, its Content-Range ending short of the file."""
    length_delta: int = 0
    """Announce a Content-Length this much off the bytes sent (then close the connection)."""
    no_length: bool = False
    """Send no Content-Length: the body ends when the connection closes."""


@dataclass
class Record:
    path: str
    headers: dict[str, str]
    status: int = 0
    sent: int = 0
    done: threading.Event = field(default_factory=threading.Event)
    """Set when the server has finished answering (so `sent` is final)."""


class Server:
    """`with Server() as s: s.route("/x.zip", Behaviour(...)); s.url("/x.zip")`; HTTPS with
    `Server(tls=context)`."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.routes: dict[str, list[Behaviour]] = {}
        self.counts: dict[str, int] = {}
        self.records: list[Record] = []
        self.lock = threading.Lock()
        self.httpd = _QuietServer(("127.0.0.1", 0), _make_handler(self))
        self.scheme = "http"
        if tls is not None:  # HTTPS: each connection's handshake runs as it is accepted
            self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True)
            self.scheme = "https"
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    def __enter__(self) -> Server:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def route(self, path: str, *behaviours: Behaviour) -> str:
        self.routes[path] = list(behaviours)
        self.counts[path] = 0
        return self.url(path)

    def url(self, path: str) -> str:
        host, port = self.httpd.server_address[:2]
        return f"{self.scheme}://{host}:{port}{path}"

    def requests_to(self, path: str, wait: float = 5.0) -> list[Record]:
        """The requests to `path`, after waiting up to `wait` s for each to be answered."""
        found = [r for r in self.records if r.path == path]
        for r in found:
            r.done.wait(wait)
        return found

    def _next(self, path: str) -> Behaviour | None:
        with self.lock:
            options = self.routes.get(path)
            if not options:
                return None
            n = self.counts[path]
            self.counts[path] = n + 1
            return options[min(n, len(options) - 1)]


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        # Clients that hang up mid-response, or refuse our certificate, are what the tests
        # are about, not news.
        if not isinstance(sys.exc_info()[1], (ConnectionError, ssl.SSLError)):
            super().handle_error(request, client_address)  # type: ignore[arg-type]


_RANGE = re.compile(r"^bytes=(\d+)-$")


def _make_handler(server: Server) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            record = Record(path, dict(self.headers.items()))
            with server.lock:
                server.records.append(record)
            b = server._next(path)
            if b is None:
                b = Behaviour(status=404, body=b"not found", content_type="text/plain")
            size = b.file.stat().st_size if b.file else len(b.body)
            start, end, status = 0, size, b.status
            headers = {"Content-Type": b.content_type, **b.headers}
            m = _RANGE.match(self.headers.get("Range", ""))
            if_range = self.headers.get("If-Range")
            validators = {b.headers.get("ETag"), b.headers.get("Last-Modified")} - {None}
            if if_range is not None and b.honour_if_range and if_range not in validators:
                m = None  # the file changed: the whole of it, 200
            if status == 200 and b.honour_range and m:
                start = int(m[1])
                if start >= size:
                    status, start, end = 416, 0, 0
                    headers["Content-Range"] = f"bytes */{size}"
                else:
                    status = 206
                    if b.max_range is not None:
                        end = min(size, start + b.max_range)
                    headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
            record.status = status
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            if b.no_length:
                self.close_connection = True
            else:
                self.send_header("Content-Length", str(end - start + b.length_delta))
            self.end_headers()
            self.wfile.flush()
            try:
                record.sent = self._body(b, start, end)
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True
            finally:
                record.done.set()

        def _body(self, b: Behaviour, start: int, end: int) -> int:
            limit = end
            if b.drop_after is not None:
                limit = min(end, start + b.drop_after)
            if b.stall_after is not None:
                sent = self._send(b, start, min(limit, start + b.stall_after))
                if b.gate is not None:
                    b.gate.wait(60)
                else:
                    time.sleep(b.stall_seconds)
                sent += self._send(b, start + sent, limit)
            else:
                sent = self._send(b, start, limit)
            if limit < end or b.length_delta > 0:
                self.close_connection = True
            return sent

        def _send(self, b: Behaviour, start: int, end: int) -> int:
            if end <= start:
                return 0
            if b.file is not None:
                with open(b.file, "rb") as f:
                    return self.connection.sendfile(f, start, end - start)
            self.wfile.write(b.body[start:end])
            self.wfile.flush()
            return end - start

    return Handler
