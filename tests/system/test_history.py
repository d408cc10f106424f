"""
History with real processes: a file overwritten and one deleted on A are
brought back from B with the commands a user types (history, trash,
restore), and the restored content reaches A; a folder is restored as it
was at a time.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path

from boxsync.output import CLOSED_PIPE_STATUS
from boxsync.testing import Client, Server
from tests.faults import server  # noqa: F401 (the fixture)


def command(server: Server, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "boxsync.client", *args[:1], "--server", server.url, f"--token={server.key}",
         "--name", "b", *args[1:]],
        capture_output=True, text=True, timeout=60, env=env,
    )


def test_overwritten_and_deleted_files_come_back_from_another_client(tmp_path: Path, server: Server) -> None:
    a = Client(server, tmp_path / "a", "a")
    a.folder.mkdir()
    (a.folder / "docs").mkdir()
    report = a.folder / "docs/report.txt"
    report.write_text("the first draft")
    (a.folder / "docs/old-plan.txt").write_text("the old plan")
    a.once()
    report.write_text("a bad save")
    (a.folder / "docs/old-plan.txt").unlink()
    a.once()
    listed = command(server, "history", "docs/report.txt", "--json")
    assert listed.returncode == 0, listed.stderr
    versions = json.loads(listed.stdout)["versions"]
    assert [v["size"] for v in versions] == [len("a bad save"), len("the first draft")]
    assert {"path", "seq", "time", "size", "sha256", "client"} <= set(versions[1]) and versions[1]["client"] == "a"
    trash = json.loads(command(server, "trash", "docs", "--json").stdout)
    assert [(f["path"], f["deleted_seq"] > f["seq"]) for f in trash] == [("docs/old-plan.txt", True)]
    restored = command(server, "restore", "docs/report.txt", "--seq", str(versions[1]["seq"]))
    assert restored.returncode == 0 and "restored version" in restored.stdout, restored.stderr
    back = command(server, "restore", "docs/old-plan.txt")
    assert back.returncode == 0 and "restored version" in back.stdout, back.stderr
    # The bad save too, beside it (--as).
    beside = command(server, "restore", "docs/report.txt", "--seq", str(versions[0]["seq"]), "--as", "docs/bad.txt")
    assert beside.returncode == 0 and beside.stdout.rstrip().endswith(" at docs/bad.txt"), beside.stderr
    a.once()
    assert report.read_text() == "the first draft" and (a.folder / "docs/bad.txt").read_text() == "a bad save"
    assert (a.folder / "docs/old-plan.txt").read_text() == "the old plan"
    # Misuse gets one line and a non-zero exit.
    for args in (("restore", "docs/report.txt"), ("restore", "docs", "--at", "not a time"),
                 ("restore", "docs", "--exact"), ("history", "nothing.txt"),
                 ("restore", "docs/report.txt", "--seq", "1", "--as", "/")):
        wrong = command(server, *args)
        assert wrong.returncode != 0 and len(wrong.stderr.strip().splitlines()) == 1, (args, wrong.stderr)


def test_a_folder_comes_back_as_it_was(tmp_path: Path, server: Server) -> None:
    a = Client(server, tmp_path / "a", "a")
    (a.folder / "photos").mkdir(parents=True)
    for n in range(5):
        (a.folder / f"photos/{n}.jpg").write_bytes(b"photo %d" % n)
    a.once()
    # Every commit of that sync is before this, every one of the next after.
    then = datetime.now().isoformat()
    for n in range(5):
        (a.folder / f"photos/{n}.jpg").write_bytes(b"encrypted %d" % n)
    (a.folder / "photos/README-ransom.txt").write_text("pay")
    a.once()
    restored = command(server, "restore", "photos", "--at", then, "--exact")
    assert restored.returncode == 0, restored.stderr
    a.once()
    assert sorted(p.name for p in (a.folder / "photos").iterdir()) == [f"{n}.jpg" for n in range(5)]
    assert all((a.folder / f"photos/{n}.jpg").read_bytes() == b"photo %d" % n for n in range(5))


def test_a_name_the_terminal_cannot_show_is_escaped(tmp_path: Path, server: Server) -> None:
    """
    Under a locale that is not UTF-8, the commands that list names write
    what it cannot carry as escapes, as the log does (before: a traceback
    after the first line).
    """
    a = Client(server, tmp_path / "a", "a")
    (a.folder / "café").mkdir(parents=True)
    (a.folder / "café/日本.txt").write_text("x")
    a.once()
    ascii_only = dict(os.environ, PYTHONIOENCODING="ascii")
    for args in (("ls",), ("history", "café/日本.txt"), ("trash", "café")):
        shown = command(server, *args, env=ascii_only)
        assert shown.returncode == 0 and shown.stderr == "", (args, shown.stderr)
    assert "caf\\xe9/\\u65e5\\u672c.txt" in command(server, "ls", env=ascii_only).stdout
    # JSON stays JSON, its escapes JSON's own.
    for args in (("ls", "--json"), ("history", "café/日本.txt", "--json")):
        shown = command(server, *args, env=ascii_only)
        assert shown.returncode == 0, args
        assert "café/日本.txt" in json.dumps(json.loads(shown.stdout), ensure_ascii=False), args


def test_a_listing_whose_reader_went_away_ends_quietly(tmp_path: Path, server: Server) -> None:
    """
    C{boxsync-client ls | head -1}, and the like: the reader of the output
    goes away (here, before the command writes at all); the command stops
    saying nothing, with the status a shell gives a program so stopped.
    Before: "cannot reach" the server, or a traceback.
    """
    a = Client(server, tmp_path / "a", "a")
    a.folder.mkdir()
    (a.folder / "one.txt").write_text("x")
    a.once()
    commands = [
        [sys.executable, "-m", "boxsync.client", "ls", "--server", server.url, f"--token={server.key}"],
        [sys.executable, "-m", "boxsync.client", "history", "one.txt", "--server", server.url, f"--token={server.key}"],
        [sys.executable, "-m", "boxsync.client", "status", str(a.folder)],
        [sys.executable, "-m", "boxsync.admin", "history", "--box", str(server.box)],
    ]
    for args in commands:
        reader, writer = os.pipe()
        os.close(reader)
        try:
            done = subprocess.run(args, stdout=writer, stderr=subprocess.PIPE, text=True, timeout=60)
        finally:
            os.close(writer)
        assert (done.returncode, done.stderr) == (CLOSED_PIPE_STATUS, ""), args
