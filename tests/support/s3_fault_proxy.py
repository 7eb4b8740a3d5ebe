"""A fault-injecting HTTP proxy in front of the moto S3 server, on 127.0.0.1: S3 that misbehaves.

It forwards every request to moto and, on a seeded fraction of the requests of chosen kinds (PUT, GET, LIST, HEAD),
injects one fault instead:

- ``slowdown``: 503 with S3's ``SlowDown`` XML error body (throttling);
- ``internal``: 500 with S3's ``InternalError`` XML error body;
- ``reset_before``: the connection is reset (RST) without a response and the request never reaches moto;
- ``reset_after``: the request is forwarded to moto (the write happens) and then the connection is reset without a
  response: the client never hears that its request succeeded;
- ``slow``: the response is delayed by ``delay_s``, then sent.

``unreachable()`` (a context manager) or ``down``/``up`` make S3 unreachable for a while: every connection and
every request on a kept-alive connection is reset at once. ``script`` injects a given fault into the next matching
requests (the lost response of one exclusive create; ``down_after``: serve this request, then go down).
``counts`` says what was injected, per (kind, method).
The moto server is the edge of the world (AWS itself); this proxy is test-only.
"""

from __future__ import annotations

import collections
import contextlib
import http.client
import random
import socket
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

KINDS = ("slowdown", "internal", "reset_before", "reset_after", "slow")
METHODS = ("PUT", "GET", "LIST", "HEAD")
_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade"}
_ERRORS = {
    "slowdown": (503, "SlowDown", "Please reduce your request rate."),
    "internal": (500, "InternalError", "We encountered an internal error. Please try again."),
}


def s3_error_body(code: str, message: str, resource: str, request_id: str) -> bytes:
    """S3's XML error document (what botocore parses into ``Error.Code``)."""
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}</Message>'
            f"<Resource>{resource}</Resource><RequestId>{request_id}</RequestId></Error>").encode()


def request_kind(method: str, path: str) -> str:
    """PUT, GET, HEAD, DELETE, POST, or LIST: a GET of a bucket (path-style ``/bucket`` or ``/bucket/``, with or
    without ``list-type``) lists it."""
    if method != "GET":
        return method
    parts = urlsplit(path)
    key = parts.path.lstrip("/").partition("/")[2]
    query = parse_qs(parts.query, keep_blank_values=True)
    return "LIST" if not key or "list-type" in query or "delimiter" in query else "GET"


class S3FaultProxy:
    """``S3FaultProxy(upstream).start()``; ``endpoint`` is its URL. Faults are off until ``configure(rate=...)``."""

    def __init__(self, upstream: str, seed: int = 0):
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname, parts.port)
        self.rate = 0.0
        self.kinds: tuple[str, ...] = KINDS
        self.methods: tuple[str, ...] = METHODS
        self.delay_s = 0.2
        self.is_down = False
        self.down_since: float | None = None  # time.monotonic() when it last went down
        self.counts: collections.Counter = collections.Counter()  # (kind, method) -> injected
        self.requests: collections.Counter = collections.Counter()  # method kind -> seen
        self._rng = random.Random(seed)
        self._script: list[list] = []  # [fault, method, path substring, times left]
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- control ----------------------------------------------------------------------------------------------
    def configure(self, rate: float = 0.0, kinds: tuple[str, ...] = KINDS, methods: tuple[str, ...] = METHODS,
                  delay_s: float = 0.2, seed: int | None = None) -> "S3FaultProxy":
        """Inject a fault into ``rate`` of the requests of ``methods``, its kind drawn uniformly from ``kinds``."""
        unknown = set(kinds) - set(KINDS)
        if unknown:
            raise ValueError(f"unknown fault kinds {sorted(unknown)}; kinds are {KINDS}")
        with self._lock:
            self.rate, self.kinds, self.methods, self.delay_s = rate, tuple(kinds), tuple(methods), delay_s
            if seed is not None:
                self._rng = random.Random(seed)
        return self

    def script(self, fault: str, method: str, path_contains: str = "", times: int = 1) -> "S3FaultProxy":
        """Inject ``fault`` (a kind, or ``down_after``) into the next ``times`` requests of ``method`` whose path
        contains ``path_contains``, whatever the rate."""
        if fault not in (*KINDS, "down_after"):
            raise ValueError(f"unknown fault {fault!r}")
        with self._lock:
            self._script.append([fault, method, path_contains, times])
        return self

    def reset_counts(self) -> None:
        with self._lock:
            self.counts.clear()
            self.requests.clear()

    def reset(self) -> "S3FaultProxy":
        """No faults, S3 reachable, nothing scripted, counters at zero."""
        self.configure(rate=0.0)
        self.up()
        self.reset_counts()
        with self._lock:
            self._script.clear()
        return self

    def injected(self, kind: str | None = None, method: str | None = None) -> int:
        """How many faults were injected (of a kind, into a method; None: all)."""
        with self._lock:
            return sum(n for (k, m), n in self.counts.items()
                       if (kind is None or k == kind) and (method is None or m == method))

    def down(self) -> None:
        if not self.is_down:
            self.down_since = time.monotonic()
        self.is_down = True

    def up(self) -> None:
        self.is_down = False

    @contextlib.contextmanager
    def unreachable(self):
        """S3 is unreachable inside the block: every connection is reset."""
        self.down()
        try:
            yield self
        finally:
            self.up()

    def _draw(self, kind: str, path: str) -> str | None:
        with self._lock:
            self.requests[kind] += 1
            if self.is_down:
                self.counts[("down", kind)] += 1
                return "down"
            for entry in self._script:
                if entry[1] == kind and entry[2] in path and entry[3] > 0:
                    entry[3] -= 1
                    self.counts[(entry[0], kind)] += 1
                    return entry[0]
            if kind not in self.methods or self._rng.random() >= self.rate:
                return None
            fault = self._rng.choice(self.kinds)
            self.counts[(fault, kind)] += 1
            return fault

    # -- lifecycle --------------------------------------------------------------------------------------------
    def start(self) -> "S3FaultProxy":
        proxy = self

        class Handler(_Handler):
            owner = proxy

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="s3-fault-proxy", daemon=True)
        self._thread.start()
        return self

    @property
    def endpoint(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


class _Handler(BaseHTTPRequestHandler):
    owner: S3FaultProxy
    protocol_version = "HTTP/1.1"  # keep-alive, as botocore's connection pool expects

    def log_message(self, *args) -> None:  # quiet: the counters say what happened
        pass

    def _reset(self) -> None:
        """Close the connection with a TCP RST and no response."""
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
        self.close_connection = True

    def _body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            out = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return bytes(out)
                out += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _forward(self, body: bytes) -> tuple[int, str, list[tuple[str, str]], bytes]:
        conn = http.client.HTTPConnection(*self.owner.upstream, timeout=60)
        try:
            conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
            for name, value in self.headers.items():
                if name.lower() not in _HOP and name.lower() not in ("content-length", "expect"):
                    conn.putheader(name, value)
            if body or self.command in ("PUT", "POST"):
                conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body or None)
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, resp.reason, resp.getheaders(), data
        finally:
            conn.close()

    def _handle(self) -> None:
        kind = request_kind(self.command, self.path)
        if self.path.startswith("/moto-api"):
            fault = None  # the test's own control calls
        else:
            fault = self.owner._draw(kind, self.path)
        if fault == "down":
            self._reset()
            return
        body = self._body()
        if fault == "reset_before":
            self._reset()
            return
        if fault in _ERRORS:
            status, code, message = _ERRORS[fault]
            request_id = f"fault-{time.monotonic_ns()}"
            payload = s3_error_body(code, message, urlsplit(self.path).path, request_id)
            self.send_response(status)
            self.send_header("Content-Type", "application/xml")
            self.send_header("x-amz-request-id", request_id)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)
            return
        status, reason, headers, data = self._forward(body)
        if fault == "reset_after":
            self._reset()  # moto did the work; the client never hears of it
            return
        if fault == "slow":
            time.sleep(self.owner.delay_s)
        self.send_response_only(status, reason)
        for name, value in headers:
            if name.lower() not in _HOP and not (name.lower() == "content-length" and self.command != "HEAD"):
                self.send_header(name, value)
        if self.command != "HEAD":
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        if fault == "down_after":
            self.owner.down()

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle
