"""
Nothing skipped in silence, on real processes: what a client cannot sync as
it is (a symbolic link, a FIFO, a name the wire cannot carry, two names that
differ only in their Unicode normalisation) is logged once and listed, with
why, by C{boxsync-client status}; a name in NFD (a Mac's) is synced by its
NFC form and keeps its own.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest

from boxsync.testing import Client, Server, tree, wait_until
from tests.faults import output, sha, stop_and_check
from tests.faults import server  # noqa: F401 (the fixture)


def shown(client: Client) -> str:
    """
    What C{boxsync-client status} prints about C{client}'s folder.
    """
    ran = subprocess.run(
        [sys.executable, "-m", "boxsync.client", "status", str(client.folder)],
        capture_output=True,
        # A name that is not UTF-8 is printed as the folder has it.
        encoding="utf-8",
        errors="surrogateescape",
        timeout=60,
    )
    return ran.stdout


@pytest.mark.slow
def test_a_run_once_says_what_it_skipped_and_status_lists_it_after(tmp_path: Path, server: Server) -> None:
    """
    C{--once} that passed over a link and a pipe ends with "in sync, but 2
    paths are skipped", and C{status}, once it has stopped, still lists
    them. Before, it said only "in sync", and the status of a stopped
    client listed nothing skipped.
    """
    a = Client(server, tmp_path / "a", "a")
    a.folder.mkdir()
    (a.folder / "plain.txt").write_text("synced")
    (a.folder / "link").symlink_to(a.folder / "plain.txt")
    os.mkfifo(a.folder / "pipe")
    said = a.once().stderr
    assert said.strip().splitlines()[-1].endswith(
        f"{a.folder} is in sync, but 2 paths are skipped (boxsync-client status lists them)"
    )
    lines = shown(a).splitlines()
    assert any(line.startswith("in sync:    yes when the client stopped") and "2 paths were skipped" in line for line in lines)
    assert "  link: symbolic link" in lines and "  pipe: not a regular file" in lines
    assert tree(server.box) == tree(a.folder)
    stop_and_check(server, "skipped paths said by --once", 2, a.folder)


@pytest.mark.slow
def test_what_is_skipped_is_listed_and_logged_once(tmp_path: Path, server: Server) -> None:
    a = Client(server, tmp_path / "a", "a", rescan=0.5)
    a.folder.mkdir()
    (a.folder / "plain.txt").write_text("synced")
    (a.folder / "link").symlink_to(a.folder / "plain.txt")
    os.mkfifo(a.folder / "pipe")
    bad = "back\\slash.txt"
    (a.folder / bad).write_text("a name the wire cannot carry")
    a.start()
    try:
        wait_until(lambda: "plain.txt" in tree(server.box), what="plain.txt in the box")
        wait_until(lambda: "skipped:    3 paths" in shown(a), what="the skipped paths in the status")
        lines = shown(a).splitlines()
        assert any(line.startswith("  link: symbolic link") for line in lines), lines
        assert any(line.startswith("  pipe: not a regular file") for line in lines), lines
        assert any(line.startswith(f"  {bad}: ") and "backslash" in line for line in lines), lines
        # Several rescans later, each was logged once.
        wait_until(lambda: output(a).count("Scanned ") >= 4, what="a few rescans")
        assert output(a).count("not syncing link: symbolic link") == 1
        print(output(a))
    finally:
        a.kill()
    stop_and_check(server, "skipped paths listed", 3, a.folder)


@pytest.mark.slow
def test_a_name_in_nfd_is_synced_by_its_nfc_form_and_keeps_its_own(tmp_path: Path, server: Server) -> None:
    nfd = unicodedata.normalize("NFD", "café.txt")
    a = Client(server, tmp_path / "a", "a", rescan=0.5)
    b = Client(server, tmp_path / "b", "b")
    a.folder.mkdir()
    (a.folder / nfd).write_text("from a Mac")
    a.start()
    b.start()
    try:
        wait_until(
            lambda: tree(b.folder).get("café.txt") == sha(b"from a Mac"), what="the file on b, in NFC"
        )
        assert tree(server.box) == {"café.txt": sha(b"from a Mac")}
        (b.folder / "café.txt").write_text("edited on b")
        wait_until(lambda: (a.folder / nfd).read_text() == "edited on b", what="b's edit on a")
        assert sorted(os.listdir(a.folder)) == [".boxsync", nfd]
        # Two names on a that differ only in normalisation: both stay, the
        # NFC one is synced, the other is listed as a conflict.
        twin = unicodedata.normalize("NFD", "naïve.txt")
        (a.folder / twin).write_text("decomposed")
        (a.folder / "naïve.txt").write_text("composed")
        wait_until(lambda: f"  {twin}: conflict: naïve.txt " in shown(a), what="the conflict in the status")
        wait_until(lambda: tree(b.folder).get("naïve.txt") == sha(b"composed"), what="the NFC twin on b")
        assert (a.folder / twin).read_text() == "decomposed"
        assert (a.folder / "naïve.txt").read_text() == "composed"
        assert sorted(tree(server.box)) == ["café.txt", "naïve.txt"]
        assert "skipped:    1 path," in shown(a)
    finally:
        a.kill()
        b.kill()
    stop_and_check(server, "names in NFD", 2, a.folder, b.folder)


@pytest.mark.slow
def test_what_cannot_be_synced_made_while_the_client_runs_is_listed_at_once(tmp_path: Path, server: Server) -> None:
    # No rescan while the test runs: what is listed, the watcher saw.
    a = Client(server, tmp_path / "a", "a", rescan=None).start()
    try:
        wait_until(lambda: "in sync:    yes" in shown(a), what="a in sync")
        (a.folder / "plain.txt").write_text("synced")
        (a.folder / "link").symlink_to("plain.txt")
        os.mkfifo(a.folder / "pipe")
        bad = "back\\slash.txt"
        (a.folder / bad).write_text("a name the wire cannot carry")
        undecodable = os.fsdecode(b"latin-1 \xe9t\xe9.txt")
        (a.folder / undecodable).write_text("not UTF-8")
        (a.folder / "odd").mkdir()
        (a.folder / "odd/link").symlink_to("../plain.txt")
        wait_until(lambda: "skipped:    5 paths" in shown(a), what="the five paths in the status")
        lines = shown(a).splitlines()
        assert "  link: symbolic link" in lines, lines
        assert "  odd/link: symbolic link" in lines, lines
        assert "  pipe: not a regular file" in lines, lines
        assert any(line.startswith(f"  {bad}: ") and "backslash" in line for line in lines), lines
        assert any(line.startswith("  latin-1 ") for line in lines), lines
        wait_until(lambda: "plain.txt" in tree(server.box), what="plain.txt in the box")
        # Gone, they are no longer listed.
        for name in ["link", "pipe", bad, undecodable]:
            os.unlink(a.folder / name)
        shutil.rmtree(a.folder / "odd")
        wait_until(lambda: "skipped:" not in shown(a), what="nothing skipped in the status")
        assert output(a).count("not syncing link: symbolic link") == 1
        # Passed over, each was not taken for an error.
        assert "last error: none" in shown(a)
        wait_until(lambda: not (server.box / "odd").exists(), what="odd gone from the box")
        assert tree(server.box) == {"plain.txt": sha(b"synced")}
    finally:
        a.kill()
    stop_and_check(server, "skipped paths listed live", 5, a.folder)


@pytest.mark.slow
def test_other_programs_lock_and_swap_files_stay_on_their_machine_and_are_listed(
    tmp_path: Path, server: Server
) -> None:
    """
    A document open in LibreOffice on a, a vim swap file, a download in
    progress, the trash folder of a mount: each stays on its machine (a
    lock file synced would tell b the document is open there), and a's
    status lists each with why and how to sync it after all; a line of
    C{.boxsyncignore} does.
    """
    a = Client(server, tmp_path / "a", "a", rescan=None)
    b = Client(server, tmp_path / "b", "b", rescan=None)
    a.folder.mkdir()
    (a.folder / "report.odt").write_text("the report")
    (a.folder / ".~lock.report.odt#").write_text(",a,host,07.12.2026 13:00,a;")
    (a.folder / "disk.iso.part").write_bytes(b"half a download")
    (a.folder / ".Trash-1000/files").mkdir(parents=True)
    (a.folder / ".Trash-1000/files/old.txt").write_text("thrown away")
    a.start()
    b.start()
    try:
        wait_until(lambda: "report.odt" in tree(b.folder), what="the report on b")
        wait_until(lambda: "skipped:    3 paths" in shown(a), what="the three paths in a's status")
        lines = shown(a).splitlines()
        assert any(line.startswith("  .~lock.report.odt#: a LibreOffice lock file, not synced") for line in lines)
        assert any(line.startswith("  disk.iso.part: ") and "!*.part in .boxsyncignore" in line for line in lines)
        assert any(line.startswith("  .Trash-1000: a trash folder") for line in lines)
        # Said once each, as what comes and goes, not as a warning.
        assert "#warn] not syncing" not in output(a) and output(a).count("not syncing .~lock") == 1
        # Made while a runs, and gone again.
        (a.folder / ".report.txt.swp").write_text("vim's")
        wait_until(lambda: "skipped:    4 paths" in shown(a), what="the swap file in the status")
        os.unlink(a.folder / ".report.txt.swp")
        wait_until(lambda: "skipped:    3 paths" in shown(a), what="the swap file gone from the status")
        # b's own lock file stays on b.
        (b.folder / ".~lock.report.odt#").write_text(",b,host,07.12.2026 13:01,b;")
        # The user wants downloads in progress synced after all.
        (a.folder / ".boxsyncignore").write_text("!*.part\n")
        wait_until(lambda: "disk.iso.part" in tree(b.folder), what="the .part file on b")
        wait_until(lambda: "skipped:    2 paths" in shown(a), what="the .part file no longer listed")
        assert sorted(tree(server.box)) == [".boxsyncignore", "disk.iso.part", "report.odt"]
        assert (a.folder / ".~lock.report.odt#").read_text().startswith(",a,")
        assert (b.folder / ".~lock.report.odt#").read_text().startswith(",b,")
    finally:
        a.kill()
        b.kill()
    stop_and_check(server, "other programs' lock files", 3, a.folder, b.folder)
