"""
A server told to stop (SIGTERM: a restart, a rolling upgrade) answers the
requests under way before it goes, and cuts only its event streams: a client
whose answer was cut could not know whether its commit was made.
"""

from __future__ import annotations

import http.client
import json
import signal
from pathlib import Path

from boxsync.testing import Server, wait_until
from tests.faults import get


def test_an_upload_under_way_is_answered_before_the_server_stops(tmp_path: Path) -> None:
    server = Server(tmp_path / "box").start()
    try:
        data = bytes(range(256)) * 4096  # 1 MiB
        half = len(data) // 2
        upload = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        upload.putrequest("PUT", "/files/under-way.bin")
        for name, value in [
            ("Authorization", f"Bearer {server.key}"),
            ("Content-Length", str(len(data))),
            ("X-Boxsync-Base", "0"),
        ]:
            upload.putheader(name, value)
        upload.endheaders()
        upload.send(data[:half])
        # An event stream is open too: it is cut, not waited for.
        stream = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        stream.request(
            "POST",
            "/sync",
            body=json.dumps({"client": "watcher", "files": [], "deleted": []}),
            headers={"Authorization": f"Bearer {server.key}", "Accept": "text/event-stream"},
        )
        assert stream.getresponse().status == 200
        assert server.process is not None and server.process.popen is not None
        server.process.popen.send_signal(signal.SIGTERM)
        wait_until(lambda: "Received SIGTERM" in server.process.output(), what="the server to hear SIGTERM")  # type: ignore[union-attr]
        upload.send(data[half:])
        answer = upload.getresponse()
        assert answer.status == 201, answer.read()
        assert json.loads(answer.read())["size"] == len(data)
        # It then stops by itself (twist ends by the signal it got).
        assert server.process.popen.wait(30) in (0, -signal.SIGTERM)
    finally:
        server.kill()
    # Started again, the box has it.
    server.start()
    try:
        status, _, body = get(server, "under-way.bin")
        assert status == 200 and body == data
    finally:
        server.kill()
