"""
Symbolic links swapped into the box while a real server serves it: a thread
swaps a file and a folder of the box with links to the outside, atomically
and as fast as it can, while downloads (boxsync's and the legacy route) and
uploads go on. Nothing outside the box is ever read or written.
"""

from __future__ import annotations

import http.client
import threading
from pathlib import Path

from boxsync.fs import exchange as _exchange
from boxsync.testing import Server
from tests.faults import _url, put, record
from tests.faults import server  # noqa: F401 (the fixture)

#: Requests of each kind made while the links are swapped in and out.
ROUNDS = 300

INSIDE = b"inside the box\n"
SECRET = b"outside the box: never to be served\n"


def fetch(server: Server, url: str) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        connection.request("GET", url, headers={"Authorization": f"Bearer {server.key}"})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def test_links_swapped_in_mid_request_are_never_followed(server: Server, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "x.txt").write_bytes(SECRET)
    (outside / "f.txt").write_bytes(SECRET)
    assert put(server, "f.txt", INSIDE)[0] == 201
    assert put(server, "d/x.txt", INSIDE)[0] == 201
    # The links wait beside the box (on its file system) to be swapped in.
    hold = tmp_path / "hold"
    hold.mkdir()
    (hold / "f.txt").symlink_to(outside / "f.txt")
    (hold / "d").symlink_to(outside)
    box = server.box

    stop = threading.Event()
    swaps = [0]
    errors: list[BaseException] = []

    def swap() -> None:
        try:
            while not stop.is_set():
                for name in ("f.txt", "d"):
                    _exchange(box / name, hold / name)
                    _exchange(box / name, hold / name)
                swaps[0] += 4
        except BaseException as e:
            errors.append(e)

    swapper = threading.Thread(target=swap, daemon=True)
    swapper.start()
    answers: dict[str, list[int]] = {}
    try:
        for n in range(ROUNDS):
            for url in (_url("f.txt"), _url("d/x.txt"), "/download/f.txt", "/download/d/x.txt"):
                status, body = fetch(server, url)
                answers.setdefault(url, []).append(status)
                assert body != SECRET, f"{url} served a file outside the box"
                assert status in (200, 404), (url, status, body)
                if status == 200:
                    assert body == INSIDE
            status, _ = put(server, f"d/new-{n}.txt", b"new %d\n" % n)
            answers.setdefault("PUT", []).append(status)
            assert status in (201, 400), status
    finally:
        stop.set()
        swapper.join(10)
    assert not errors, errors
    assert sorted(p.name for p in outside.iterdir()) == ["f.txt", "x.txt"], "a PUT wrote outside the box"
    assert (outside / "x.txt").read_bytes() == SECRET and (outside / "f.txt").read_bytes() == SECRET
    # Both kinds of answer came: the swaps really raced the requests.
    counts = {kind: {s: statuses.count(s) for s in set(statuses)} for kind, statuses in answers.items()}
    assert all(404 in statuses and 200 in statuses for kind, statuses in answers.items() if kind != "PUT"), counts
    assert 201 in answers["PUT"] and 400 in answers["PUT"], counts
    assert swaps[0] > ROUNDS
    record("links swapped into the box", faults=swaps[0], files=ROUNDS * 5)
