"""
What a new user meets in the first hour, on real processes: one client per
folder, one server per box, a box served the way it always was, and start-up
errors that say in one line what is wrong.
"""

from __future__ import annotations

import io
import json
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path

import jwt
import pytest

from boxsync.admin import run as admin
from boxsync.server.tap import START_FAILED
from boxsync.testing import Client, Server, remove_tree, tree, wait_until
from tests.faults import server  # noqa: F401 (the fixture)


def serve(box: Path, *options: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """
    Run a server that is expected not to start (in C{cwd}, by default the
    box's parent); its output and status.
    """
    return subprocess.run(
        [sys.executable, "-m", "twisted", "--log-format=text", "boxsync", "--box", str(box), *options],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd or box.parent,
    )


def error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if "could not start" in line or "Traceback" in line]


@pytest.mark.slow
def test_one_client_per_folder(tmp_path: Path, server: Server) -> None:
    first = Client(server, tmp_path / "a", "first").start()
    try:
        wait_until(lambda: (first.folder / ".boxsync/client.lock").exists(), what="the first client's lock")
        assert first.process is not None and first.process.popen is not None
        second = subprocess.run(
            Client(server, first.folder, "second").args("--once"), capture_output=True, text=True, timeout=60
        )
        assert second.returncode == 1
        assert second.stderr.strip() == (
            f"boxsync-client: {first.folder} is already synced by another boxsync-client "
            f"(pid {first.process.popen.pid})"
        )
        assert first.process.running
    finally:
        first.stop()
    # Once the first has stopped, the folder is free.
    Client(server, first.folder, "second", rescan=None).once()


@pytest.mark.slow
def test_a_client_whose_output_goes_into_its_folder_says_so_and_does_not_start(tmp_path: Path, server: Server) -> None:
    """
    C{boxsync-client FOLDER >> FOLDER/sync.log}: each line it logged would
    change a file it syncs, to be sent again, and logged, without end (it
    was: one upload of sync.log every 10 s, each a new version for every client).
    It says so in one line and syncs nothing. Into its hidden folder, or
    to a file its rules ignore, it runs.
    """
    client = Client(server, tmp_path / "a", "a")
    client.folder.mkdir()
    (client.folder / "notes.txt").write_text("notes")
    command = shlex.join(client.args("--once"))
    log = client.folder / "sync.log"
    ran = subprocess.run(["sh", "-c", f"exec {command} >> {shlex.quote(str(log))} 2>&1"], timeout=60)
    assert ran.returncode == 1
    assert log.read_text().strip() == (
        f"boxsync-client: this client's output goes to {log}, inside the folder it syncs: each line it wrote "
        f"would be a change to sync, without end; write it outside the folder (or in {client.folder / '.boxsync'}), "
        "or ignore it"
    )
    assert tree(server.box) == {}
    (client.folder / ".boxsyncignore").write_text("*.log\n")
    ran = subprocess.run(["sh", "-c", f"exec {command} >> {shlex.quote(str(log))} 2>&1"], timeout=60)
    assert ran.returncode == 0
    hidden = client.folder / ".boxsync" / "sync.log"
    ran = subprocess.run(["sh", "-c", f"exec {command} > {shlex.quote(str(hidden))} 2>&1"], timeout=60)
    assert ran.returncode == 0
    assert set(tree(server.box)) == {"notes.txt", ".boxsyncignore"}


@pytest.mark.slow
def test_a_client_keeps_out_of_a_servers_box(server: Server) -> None:
    ran = subprocess.run(Client(server, server.box, "c").args("--once"), capture_output=True, text=True, timeout=60)
    assert ran.returncode == 1
    assert ran.stderr.strip() == f"boxsync-client: {server.box} is a boxsync server's box, not a folder to sync: give another folder"
    assert not (server.box / ".boxsync/client.lock").exists()
    # Nor into a folder inside it, which the server would take for files of
    # the box, and the client would fill with the box again, deeper.
    inside = server.box / "sub" / "folder"
    inside.mkdir(parents=True)
    ran = subprocess.run(Client(server, inside, "c").args("--once"), capture_output=True, text=True, timeout=60)
    assert ran.returncode == 1
    assert ran.stderr.strip() == (
        f"boxsync-client: {inside} is inside the boxsync server's box {server.box}: give a folder outside it"
    )
    assert not (inside / ".boxsync").exists()


@pytest.mark.slow
def test_a_box_inside_a_running_client_s_folder_is_not_synced_back_into_itself(tmp_path: Path) -> None:
    """
    A server started on a box inside a folder a client then syncs: what
    the box gets is not sent up again from the client's folder (it would
    come back one level deeper, and again, without end); the client lists
    the box as skipped and is in sync.
    """
    home = tmp_path / "home"
    home.mkdir()
    (home / ".boxsyncignore").write_text("*.log\n")
    (home / "mine.txt").write_text("mine")
    (home / "srv").mkdir()
    server = Server(home / "srv" / "box").start()
    a = Client(server, home, "a").start()
    b = Client(server, tmp_path / "b", "b").start()
    try:
        wait_until(lambda: (b.folder / "mine.txt").is_file(), what="a's file on b")
        (b.folder / "from-b.txt").write_text("from b")
        wait_until(lambda: (home / "from-b.txt").is_file(), what="b's file on a")
        (home / "last.txt").write_text("last")
        wait_until(lambda: (b.folder / "last.txt").is_file(), what="a's last file on b")
        wait_until(lambda: "in sync:    yes" in status(home), what="a in sync")
        assert sorted(tree(server.box)) == sorted(tree(b.folder)) == [".boxsyncignore", "from-b.txt", "last.txt", "mine.txt"]
        assert "  srv/box: a boxsync server's box" in status(home)
    finally:
        a.kill()
        b.kill()
        server.kill()


@pytest.mark.slow
def test_folders_synced_with_one_box_one_inside_the_other_do_not_feed_each_other(
    tmp_path: Path, server: Server
) -> None:
    """
    A client started on a folder inside one synced with the same box stops
    at once, in one line: each would send the other's files up and get them
    back a level deeper, again and again. It leaves no hidden folder behind. A folder synced with that box and
    moved into another one is left to its own client: the outer one sends
    none of its files up, writes none of the box's into it, and lists it as
    skipped. (One synced with another box is the outer folder's too:
    test_what_is_synced.py.)
    """
    a = Client(server, tmp_path / "a", "a", rescan=None)
    a.folder.mkdir()
    (a.folder / "x.txt").write_text("x")
    a.once()
    inner = a.folder / "inner"
    ran = subprocess.run(Client(server, inner, "d").args("--once"), capture_output=True, text=True, timeout=60)
    assert ran.returncode == 1
    assert ran.stderr.strip().splitlines()[-1] == (
        f"boxsync-client: {inner} is inside {a.folder}, a folder synced with the same box: each client would send "
        "the other's files up and get them back a level deeper, again and again; sync a folder outside it"
    )
    # Refused before it synced anything, it leaves nothing behind: its
    # hidden folder would be taken for a folder synced on its own.
    assert not (inner / ".boxsync").exists() and tree(inner) == {}
    a.once()
    assert sorted(tree(server.box)) == ["x.txt"]
    assert "inner/.boxsync" not in status(a.folder)
    remove_tree(inner)
    d = Client(server, tmp_path / "d", "d", rescan=None)
    d.folder.mkdir()
    d.once()
    d.folder.rename(inner)
    e = Client(server, tmp_path / "e", "e", rescan=None)
    (e.folder / "inner").mkdir(parents=True)
    (e.folder / "inner/y.txt").write_text("y")
    e.once()
    a.once()
    assert sorted(tree(server.box)) == ["inner/y.txt", "x.txt"]
    assert sorted(path for path in tree(inner) if not path.startswith(".boxsync/")) == ["x.txt"]
    assert "  inner: a folder synced on its own with this same box" in status(a.folder)


@pytest.mark.slow
def test_a_damaged_state_is_kept_aside_and_the_folder_synced_anew_losing_nothing(
    tmp_path: Path, server: Server
) -> None:
    """
    The client's state file damaged while it was stopped (a crash of the
    disk, a bad copy): the next start says so in one line, keeps the file
    aside and compares the folder with the box anew. An edit made here
    meanwhile and one made on the other client both end up in the box and
    on both sides; nothing is deleted.
    """
    a = Client(server, tmp_path / "a", "a", rescan=None)
    b = Client(server, tmp_path / "b", "b", rescan=None)
    a.folder.mkdir()
    (a.folder / "mine.txt").write_text("a's file")
    (a.folder / "shared.txt").write_text("first")
    a.once()
    b.once()
    (b.folder / "shared.txt").write_text("edited on b")
    b.once()
    (a.folder / "mine.txt").write_text("edited on a")
    state = a.folder / ".boxsync/state.sqlite"
    damaged = b"\0" * 100 + state.read_bytes()[100:]
    state.write_bytes(damaged)
    ran = a.once()
    [warning] = [line for line in ran.stderr.splitlines() if "is damaged" in line]
    assert f"{state} is damaged:" in warning and "compared with the box anew" in warning
    b.once()
    contents = sorted((a.folder / path).read_text() for path in tree(a.folder))
    # Each side's edit is there. Without its state, a cannot tell which of
    # its copy and the box's came first: where they differ, both are kept
    # (the box's under the name, a's as a conflict copy).
    assert contents == sorted(["a's file", "edited on a", "first", "edited on b"])
    assert tree(a.folder) == tree(b.folder) == tree(server.box)
    # Kept aside as it was.
    assert [p.read_bytes() for p in state.parent.glob("state.sqlite.damaged-*")] == [damaged]


def status(folder: Path) -> str:
    return subprocess.run(
        [sys.executable, "-m", "boxsync.client", "status", str(folder)], capture_output=True, text=True, timeout=60
    ).stdout


@pytest.mark.slow
def test_one_server_per_box(server: Server) -> None:
    assert server.process is not None and server.process.popen is not None
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    second = serve(server.box, "--api-key", server.key, "--listen", f"tcp:{port}:interface=127.0.0.1")
    assert second.returncode == START_FAILED
    lines = error_lines(second.stdout + second.stderr)
    assert len(lines) == 1 and lines[0].endswith(
        f"the server could not start: {server.box} is already served by another boxsync server "
        f"(pid {server.process.popen.pid})"
    ), second.stdout
    # The first one goes on serving, its staging untouched.
    assert server.process.running


@pytest.mark.slow
def test_a_token_box_is_not_served_to_a_shared_key(tmp_path: Path) -> None:
    box = tmp_path / "box"
    tokens = Server(box, options=["--tokens"])
    tokens.key = ""
    tokens.start()
    tokens.stop()
    ran = serve(box, "--api-key", "a-shared-key-0123456789", "--listen", "tcp:0:interface=127.0.0.1")
    assert ran.returncode == START_FAILED
    lines = error_lines(ran.stdout + ran.stderr)
    assert len(lines) == 1 and "was served with --tokens (an account per folder)" in lines[0], ran.stdout


@pytest.mark.slow
@pytest.mark.parametrize("name", ["index.sqlite", "tokens.sqlite"])
def test_a_damaged_index_or_registry_is_one_line_naming_it(tmp_path: Path, name: str) -> None:
    """
    The server's own databases are not set aside by themselves (they hold
    the history and the tokens): a damaged one stops the start-up with one
    line naming it (and, for the index, what can be done), the file left
    as it was.
    """
    box = tmp_path / "box"
    Server(box).start().stop()
    damaged = box / ".boxsync" / name
    data = b"\0" * 100 + damaged.read_bytes()[100:]
    damaged.write_bytes(data)
    ran = serve(box, "--api-key", "k" * 16, "--listen", "tcp:0:interface=127.0.0.1")
    assert ran.returncode == START_FAILED
    lines = error_lines(ran.stdout + ran.stderr)
    assert len(lines) == 1 and f"the server could not start: {damaged} is damaged: " in lines[0], ran.stdout
    assert ("restore it from a backup" in lines[0]) == (name == "index.sqlite")
    assert damaged.read_bytes() == data


@pytest.mark.slow
def test_a_busy_port_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        ran = serve(tmp_path / "box", "--api-key", "k" * 20, "--listen", f"tcp:{port}:interface=127.0.0.1")
    assert ran.returncode == START_FAILED
    lines = error_lines(ran.stdout + ran.stderr)
    assert len(lines) == 1 and lines[0].endswith(f"cannot listen on port {port}: Address already in use"), lines


@pytest.mark.parametrize(
    "listen, says",
    [("tcp:port", "--listen tcp:port: "), ("nosuchkind:80", "--listen nosuchkind:80: ")],
)
def test_a_bad_endpoint_is_refused_before_anything_starts(tmp_path: Path, listen: str, says: str) -> None:
    ran = serve(tmp_path / "box", "--api-key", "k" * 20, "--listen", listen)
    assert ran.returncode != 0
    first = (ran.stdout + ran.stderr).strip().splitlines()[0]
    assert first.startswith(f"Error: {says}"), first
    assert not (tmp_path / "box").exists()


def test_a_box_that_cannot_be_made_is_refused_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("not a folder")
    box = tmp_path / "a-file" / "box"
    ran = serve(box, "--api-key", "k" * 20, "--listen", "tcp:0:interface=127.0.0.1", cwd=tmp_path)
    assert ran.returncode != 0
    output = (ran.stdout + ran.stderr).strip()
    assert "Traceback" not in output
    assert output.splitlines()[0].startswith(f"Error: --box {box}: cannot make its .boxsync/ there: "), output


@pytest.mark.slow
def test_a_port_out_of_range_is_one_line(tmp_path: Path) -> None:
    ran = serve(tmp_path / "box", "--api-key", "k" * 20, "--listen", "tcp:99999:interface=127.0.0.1")
    assert ran.returncode == START_FAILED
    lines = error_lines(ran.stdout + ran.stderr)
    assert len(lines) == 1 and "the server could not start: " in lines[0] and "65535" in lines[0], lines


@pytest.mark.slow
def test_a_missing_certificate_is_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "missing.pem"
    ran = serve(
        tmp_path / "box", "--api-key", "k" * 20, "--listen", f"ssl:0:privateKey={missing}:certKey={missing}"
    )
    assert ran.returncode == START_FAILED
    lines = error_lines(ran.stdout + ran.stderr)
    assert len(lines) == 1 and lines[0].endswith(f"the server could not start: No such file or directory ({missing})")


@pytest.mark.slow
def test_status_and_ls_as_json(tmp_path: Path, server: Server) -> None:
    a = Client(server, tmp_path / "a", "a", rescan=None)
    a.folder.mkdir()
    (a.folder / "doc.txt").write_text("some text")
    a.once()
    status = subprocess.run(
        [sys.executable, "-m", "boxsync.client", "status", "--json", str(a.folder)],
        capture_output=True, text=True, timeout=60,
    )
    found = json.loads(status.stdout)
    assert found["folder"] == str(a.folder) and found["tracked"] == 1 and "cursor" in found
    assert found["running"] is False and found["in_sync_when_stopped"] is True
    ls = subprocess.run(
        [sys.executable, "-m", "boxsync.client", "ls", "--json", "--server", server.url, f"--token={server.key}"],
        capture_output=True, text=True, timeout=60,
    )
    (listed,) = json.loads(ls.stdout)
    assert (listed["path"], listed["size"], listed["origin"], listed["seq"]) == ("doc.txt", 9, "a", 1)


@pytest.mark.parametrize(
    "args, says",
    [
        (["--transfers", "abc"], "--transfers: must be a whole number, not 'abc'"),
        (["--once", "--token=t", "{tmp}/a-file"], "{tmp}/a-file is a file, not a folder"),
        (
            ["--once", "--token=t", "{tmp}/no/such/folder"],
            "cannot use {tmp}/no/such/folder as the synced folder: {tmp}/no/such does not exist",
        ),
        (
            ["--once", "--token=t", "{tmp}/a-file/folder"],
            "cannot use {tmp}/a-file/folder as the synced folder: {tmp}/a-file is not a folder",
        ),
        (
            ["--once", "--token=t", "/"],
            "/ is the root of the file system: give a folder of its own",
        ),
        # "$FOLDER" with FOLDER unset: not the current folder.
        (["--once", "--token=t", ""], "--folder: an empty name (is a variable that names it unset?)"),
        (["status", " "], "--folder: an empty name (is a variable that names it unset?)"),
        (
            ["--limit-up", "5Q", "{tmp}"],
            "--limit-up: '5Q' is not a size (a number of bytes, or of K, M, G or T: 500K, 1.5M)",
        ),
    ],
)
def test_a_misused_client_says_what_is_wrong_in_one_line(tmp_path: Path, args: list[str], says: str) -> None:
    (tmp_path / "a-file").write_text("not a folder")
    ran = subprocess.run(
        [sys.executable, "-m", "boxsync.client", *(a.format(tmp=tmp_path) for a in args)],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )
    assert ran.returncode != 0
    assert ran.stderr.strip().splitlines()[-1].endswith(says.format(tmp=tmp_path)), ran.stderr
    assert not (tmp_path / "no").exists() and not Path("/.boxsync").exists()
    assert not (tmp_path / ".boxsync").exists()


@pytest.mark.slow
def test_a_token_that_expires_while_the_client_runs_stops_it_in_one_line(tmp_path: Path) -> None:
    """
    A token minted to expire in a few seconds: the client syncs, the token
    expires, a file is changed. The client stops, saying in one line that
    its token expired and when (the server says only that it is not
    valid, whatever the reason), with no traceback after it, and its
    status does not say the folder was in sync. Before, a traceback of its
    closed state followed the line, and the status said it was in sync.
    """
    box = tmp_path / "box"
    out, err = io.StringIO(), io.StringIO()
    assert admin(["token", "--box", str(box), "--account", "alice", "--client", "a", "--expires", "5s"], out, err) == 0
    token = out.getvalue().strip()
    expires = jwt.decode(token, options={"verify_signature": False})["exp"]
    served = Server(box, key=token, options=["--tokens"]).start()
    client = Client(served, tmp_path / "a", "a").start()
    try:
        (client.folder / "x.txt").write_text("x")
        wait_until(lambda: (box / "alice" / "x.txt").exists(), timeout=30, what="x.txt in the box")
        # Its last week (here, its last seconds): warned of, and shown.
        assert client.process is not None and "the token expires on" in client.process.output()
        shown = subprocess.run(
            [sys.executable, "-m", "boxsync.client", "status", str(client.folder)], capture_output=True, text=True
        )
        assert "token:      expires on" in shown.stdout and "ask for a new one" in shown.stdout
        wait_until(lambda: time.time() > expires + 1, timeout=30, what="the token to expire")
        (client.folder / "y.txt").write_text("y")
        assert client.process is not None and client.process.wait(30) != 0
        said = client.process.output()
    finally:
        client.kill()
        served.stop()
    refused = [line for line in said.splitlines() if "refused the token" in line]
    assert len(refused) == 1 and "it expired on" in refused[0], said
    assert "Traceback" not in said and "Unhandled" not in said
    status = subprocess.run(
        [sys.executable, "-m", "boxsync.client", "status", str(client.folder)], capture_output=True, text=True, timeout=60
    )
    assert "in sync:    no when the client stopped (last error below)" in status.stdout
    assert "the token is not valid" in status.stdout and "token:      expired on" in status.stdout
