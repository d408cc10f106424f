"""
A server that sends an event about a path no client may act on (C{../../x})
in its plan, between two good downloads, to a real client process: that event
alone is refused and reported, nothing is written outside the folder, and
the good downloads around it are applied.
"""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator

import pytest

from boxsync.testing import Client, Server, tree
from boxsync.wire import SEQ_HEADER, Download, Hello, Ready, encode_event

GOOD = {f"good{n}.bin": bytes([n]) * (2 * 1024 * 1024) for n in (1, 2)}


def plan() -> bytes:
    good = [
        Download(path, hashlib.sha256(data).hexdigest(), len(data), 1_700_000_000_000_000_000, n)
        for n, (path, data) in enumerate(GOOD.items(), start=1)
    ]
    bad = encode_event(good[0]).replace(b"good1.bin", b"../../x")
    return (
        encode_event(Hello(stream="hostile", seq=0))
        + encode_event(good[0])
        + bad
        + encode_event(good[1])
        + encode_event(Ready(seq=3))
    )


class Hostile(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass

    def _answer(self, status: int, body: bytes, content_type: str, **headers: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path == "/healthz":
            self._answer(200, json.dumps({"status": "ok", "features": []}).encode(), "application/json")
            return
        name = self.path.rsplit("/", 1)[-1]
        data = GOOD.get(name)
        if data is None:
            self._answer(404, b'{"error": "no such file"}', "application/json")
            return
        n = list(GOOD).index(name) + 1
        etag = '"' + hashlib.sha256(data).hexdigest() + '"'
        self._answer(200, data, "application/octet-stream", **{SEQ_HEADER: str(n), "ETag": etag})

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = plan()
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()
        # The stream stays open until the client goes.
        self.rfile.read(1)


@pytest.fixture
def hostile(tmp_path: Path) -> Iterator[Server]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Hostile)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield Server(tmp_path / "no-box", port=httpd.server_address[1])
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.mark.slow
def test_a_bad_path_in_a_plan_is_refused_alone(tmp_path: Path, hostile: Server) -> None:
    folder = tmp_path / "deep" / "folder"
    folder.parent.mkdir()
    client = Client(hostile, folder, "c", rescan=None)
    result = client.once(timeout=60)
    assert tree(folder) == {path: hashlib.sha256(data).hexdigest() for path, data in GOOD.items()}
    assert "refused the server's download of '../../x'" in result.stdout + result.stderr
    assert not (tmp_path / "x").exists() and not (tmp_path / "deep" / "x").exists()
