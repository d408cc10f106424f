"""
``boxsync-admin``: minting, listing and revoking tokens, in this process and
as the real command.
"""

from __future__ import annotations

import io
import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted

from boxsync.admin import main, run
from boxsync.server.registry import TokenRegistry
from boxsync.server.tokens import load_secret, verify
from tests.helpers import put, running_server

NOW = 1_800_000_000


def admin(*argv: str, environ: dict[str, str] | None = None, now: float = NOW) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    status = run(list(argv), out, err, environ=environ or {}, now=lambda: now)
    return status, out.getvalue(), err.getvalue()


@pytest.fixture
def box(tmp_path: Path) -> Path:
    folder = tmp_path / "box"
    folder.mkdir()
    return folder


def test_minting_prints_the_token_alone(box: Path) -> None:
    status, out, err = admin("token", "--box", str(box), "--account", "alice", "--client", "laptop")
    assert status == 0
    token = out.strip()
    assert out == token + "\n" and token.count(".") == 2
    claims = verify(load_secret(box / ".boxsync"), token, NOW)
    assert (claims.account, claims.client, claims.issued, claims.expires) == ("alice", "laptop", NOW, None)
    assert claims.token_id in err and "expires never" in err
    # The account is made: its folder, the secret (private) and the registry.
    assert (box / "alice").is_dir()
    assert stat.S_IMODE((box / ".boxsync" / "secret").stat().st_mode) == 0o600
    assert stat.S_IMODE((box / ".boxsync").stat().st_mode) == 0o700


def test_a_token_can_expire(box: Path) -> None:
    status, out, err = admin(
        "token", "--box", str(box), "--account", "alice", "--client", "phone", "--expires", "12h"
    )
    assert status == 0
    claims = verify(load_secret(box / ".boxsync"), out.strip(), NOW)
    assert claims.expires == NOW + 12 * 3600
    assert "expires 2027-01-15" in err


def test_listing_never_shows_tokens(box: Path) -> None:
    tokens = [
        admin("token", "--box", str(box), "--account", account, "--client", client)[1].strip()
        for account, client in [("alice", "laptop"), ("bob", "phone"), ("alice", "desk")]
    ]
    status, out, _ = admin("tokens", "--box", str(box))
    assert status == 0
    lines = out.splitlines()
    assert lines[0].split() == ["ID", "ACCOUNT", "CLIENT", "ISSUED", "EXPIRES", "STATUS"]
    assert len(lines) == 4 and all(line.split()[-1] == "valid" for line in lines[1:])
    for token in tokens:
        header, payload, signature = token.split(".")
        assert payload not in out and signature not in out
    status, out, _ = admin("tokens", "--box", str(box), "--account", "bob")
    assert [line.split()[1:3] for line in out.splitlines()[1:]] == [["bob", "phone"]]


def test_revoking(box: Path) -> None:
    admin("token", "--box", str(box), "--account", "alice", "--client", "laptop")
    registry = TokenRegistry(box / ".boxsync" / "tokens.sqlite")
    (record,) = registry.tokens()
    status, out, _ = admin("revoke", "--box", str(box), record.token_id)
    assert status == 0 and out.startswith(f"revoked token {record.token_id}")
    assert registry.revoked() == {record.token_id}
    registry.close()
    status, out, _ = admin("revoke", "--box", str(box), record.token_id)
    assert status == 0 and "was already revoked" in out
    status, out, _ = admin("tokens", "--box", str(box))
    assert out.splitlines()[1].split()[-1] == "revoked"


def test_revoking_every_token_of_a_client(box: Path) -> None:
    for account, client in [("alice", "laptop"), ("alice", "laptop"), ("alice", "phone"), ("bob", "laptop")]:
        admin("token", "--box", str(box), "--account", account, "--client", client)
    status, out, _ = admin("revoke", "--box", str(box), "--account", "alice", "--client", "laptop")
    assert status == 0 and len(out.splitlines()) == 2
    assert all(line.startswith("revoked token") and "of client laptop of account alice" in line for line in out.splitlines())
    registry = TokenRegistry(box / ".boxsync" / "tokens.sqlite")
    try:
        by_id = {r.token_id: (r.account, r.client) for r in registry.tokens()}
        assert sorted(by_id[t] for t in registry.revoked()) == [("alice", "laptop")] * 2
    finally:
        registry.close()
    status, _, err = admin("revoke", "--box", str(box), "--account", "carol", "--client", "laptop")
    assert status == 1 and "no token of client 'laptop' of account 'carol'" in err


@pytest.mark.parametrize(
    "arguments",
    [[], ["--account", "alice"], ["--client", "laptop"], ["some-id", "--account", "alice", "--client", "laptop"]],
)
def test_revoke_needs_an_id_or_a_client(box: Path, arguments: list[str]) -> None:
    status, out, err = admin("revoke", "--box", str(box), *arguments)
    assert status == 1 and out == "" and "its ID, or --account and --client" in err


def test_revoking_an_unknown_token_fails(box: Path) -> None:
    status, _, err = admin("revoke", "--box", str(box), "0123456789abcdef")
    assert status == 1 and "no token '0123456789abcdef'" in err
    admin("token", "--box", str(box), "--account", "alice", "--client", "laptop")
    status, _, err = admin("revoke", "--box", str(box), "nope")
    assert status == 1 and "no token 'nope'" in err


def test_listing_a_box_without_tokens(box: Path) -> None:
    status, out, err = admin("tokens", "--box", str(box))
    assert status == 0 and out == "" and "no tokens" in err
    assert not (box / ".boxsync").exists()


def test_minting_makes_a_missing_box(tmp_path: Path) -> None:
    status, out, err = admin("token", "--box", str(tmp_path / "box"), "--account", "a", "--client", "c")
    assert status == 0 and out.count(".") == 2 and "made the box folder" in err
    assert (tmp_path / "box" / "a").is_dir()


def test_a_missing_box_is_a_clear_error(tmp_path: Path) -> None:
    commands = (["token", "--account", "a", "--client", "c"], ["tokens"], ["revoke", "x"])
    for command in commands:
        status, out, err = admin(*command, "--box", str(tmp_path / "no" / "where"))
        assert status == 1 and out == ""
        assert "is not a folder" in err and err.startswith("boxsync-admin: error:")
    assert not (tmp_path / "no").exists()


def test_an_empty_name_or_the_root_is_no_box(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """
    C{--box "$BOX"} with BOX unset is not the current folder, nor is the
    root of the file system a box: refused before anything is made.
    """
    monkeypatch.chdir(tmp_path)
    for box, says in [("", "an empty name"), ("/", "/ is the root of the file system")]:
        status, out, err = admin("token", "--account", "a", "--client", "c", "--box", box)
        assert status == 1 and out == "" and err.startswith(f"boxsync-admin: error: --box: {says}"), err
    assert list(tmp_path.iterdir()) == [] and not Path("/.boxsync").exists()


def test_the_box_comes_from_the_environment(box: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    status, out, _ = admin("token", "--account", "alice", "--client", "c", environ={"BOXSYNC_BOX": str(box)})
    assert status == 0 and (box / "alice").is_dir()
    monkeypatch.chdir(box.parent)
    status, out, _ = admin("tokens")
    assert "alice" in out


@pytest.mark.parametrize(
    "args, message",
    [
        (["--account", "Alice", "--client", "c"], "not a valid account name"),
        (["--account", "../x", "--client", "c"], "not a valid account name"),
        (["--account", "a", "--client", "no spaces"], "not a valid client id"),
        (["--account", "a", "--client", "c", "--expires", "3y"], "not a duration"),
        (["--account", "a"], "--client"),
    ],
)
def test_bad_arguments_are_usage_errors(
    box: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    with pytest.raises(SystemExit) as exited:
        admin("token", "--box", str(box), *args)
    assert exited.value.code == 2
    assert message in capsys.readouterr().err
    assert list(box.iterdir()) == []


def test_a_secret_others_can_read_stops_minting(box: Path) -> None:
    admin("token", "--box", str(box), "--account", "alice", "--client", "c")
    os.chmod(box / ".boxsync" / "secret", 0o644)
    status, out, err = admin("token", "--box", str(box), "--account", "alice", "--client", "d")
    assert status == 1 and out == "" and "chmod 600" in err


def test_an_account_folder_that_leads_out_is_refused(box: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (box / "alice").symlink_to(outside)
    status, out, err = admin("token", "--box", str(box), "--account", "alice", "--client", "c")
    assert status == 1 and out == "" and "must be a folder" in err
    (box / "bob").write_text("a file")
    status, out, err = admin("token", "--box", str(box), "--account", "bob", "--client", "c")
    assert status == 1 and "must be a folder" in err
    assert list(outside.iterdir()) == []
    assert not (box / ".boxsync" / "tokens.sqlite").exists() or not TokenRegistry(
        box / ".boxsync" / "tokens.sqlite"
    ).tokens()


def test_a_broken_registry_is_a_clear_error(box: Path) -> None:
    (box / ".boxsync").mkdir()
    (box / ".boxsync" / "tokens.sqlite").write_bytes(b"garbage " * 1000)
    status, _, err = admin("tokens", "--box", str(box))
    assert status == 1 and "cannot open the token registry" in err


def test_main_exits_with_the_status(box: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["tokens", "--box", str(box / "missing")])
    assert exited.value.code == 1
    assert "is not a folder" in capsys.readouterr().err


def test_the_real_command(box: Path) -> None:
    script = shutil.which("boxsync-admin", path=os.path.dirname(sys.executable))
    assert script is not None, "boxsync-admin is not installed beside this python"
    minted = subprocess.run(
        [script, "token", "--box", str(box), "--account", "alice", "--client", "laptop", "--expires", "1d"],
        capture_output=True, text=True, timeout=60, check=True,
    )
    token = minted.stdout.strip()
    claims = verify(load_secret(box / ".boxsync"), token, claims_time := NOW - 10**8)
    assert claims.account == "alice" and claims_time < claims.issued
    listed = subprocess.run(
        [sys.executable, "-m", "boxsync.admin", "tokens", "--box", str(box)],
        capture_output=True, text=True, timeout=60, check=True,
    )
    assert claims.token_id in listed.stdout and token.split(".")[2] not in listed.stdout
    revoked = subprocess.run(
        [sys.executable, "-m", "boxsync.admin", "revoke", "--box", str(box), claims.token_id],
        capture_output=True, text=True, timeout=60,
    )
    assert revoked.returncode == 0 and "revoked" in revoked.stdout
    failed = subprocess.run(
        [sys.executable, "-m", "boxsync.admin", "revoke", "--box", str(box / "nothing"), "x"],
        capture_output=True, text=True, timeout=60,
    )
    assert failed.returncode == 1 and failed.stderr.startswith("boxsync-admin: error:")


@pytest_twisted.ensureDeferred
async def test_history_and_prune(tmp_path: Path, reactor: Any, http: Any) -> None:
    """
    history shows what the kept versions take, also while the server runs;
    prune, with the server stopped, removes what the rules given no longer
    keep, and never a live file.
    """
    async with running_server(reactor, tmp_path / "box", "key") as server:
        for base, content in enumerate((b"one", b"two!", b"three")):
            assert (await put(http, server, "f.txt", content, base=base)).code == 201
        assert (await put(http, server, "g.txt", b"gone", base=0)).code == 201
        response = await http.delete(server.file_url("g.txt"), headers=server.headers(X_Boxsync_Base="4"))
        assert response.code == 200, await response.text()
        box = str(server.box)
        status, out, err = admin("history", "--box", box)
        assert status == 0, err
        assert out.splitlines()[1].split()[:4] == ["default", "3", "11", "B"]
        status, out, err = admin("prune", "--box", box, now=time.time())
        assert (status, out) == (1, "") and "is being served" in err
    # Thinned to one version a day, the newest of each path stays.
    status, out, err = admin("prune", "--box", box, "--thin-versions", "1d:1d", now=time.time())
    assert (status, out) == (0, "removed 1 versions and 0 unused blocks\n"), err
    assert sorted(p.name for p in (server.box / ".boxsync/versions").iterdir()) == ["2", "4"]
    status, out, err = admin("prune", "--box", box, "--keep-versions", "0", now=time.time())
    assert (status, out) == (0, "removed 2 versions and 0 unused blocks\n"), err
    status, out, err = admin("history", "--box", box)
    assert out.splitlines()[1].split() == ["default", "0", "0", "B", "-"]
    async with running_server(reactor, tmp_path / "box", "key") as server:
        assert (server.box / "f.txt").read_bytes() == b"three"
        listed = await http.get(f"{server.url}/history/f.txt", headers=server.headers())
        # Only the live version is left.
        assert listed.code == 200 and [v["seq"] for v in (await listed.json())["versions"]] == [3]


def test_history_of_a_box_never_served(box: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for command in ("history", "prune"):
        status, out, err = admin(command, "--box", str(box))
        assert status == 1 and out == "" and err.strip().endswith(f"{box} has never been served: there is no history")
        # Nothing made in it.
        assert not (box / ".boxsync").exists()
    status, out, err = admin("migrate", "--box", str(box), "--to", "postgresql://boxsync@127.0.0.1:1/boxsync")
    assert status == 1 and err.strip().endswith(f"{box} has no embedded index to move: was it ever served?")
    # Not even the server's lock, which would mark the folder as a box.
    assert not (box / ".boxsync").exists()
    with pytest.raises(SystemExit) as exited:
        admin("prune", "--box", str(box), "--history-max", "lots")
    assert exited.value.code == 2 and "'lots' is not a size" in capsys.readouterr().err


@pytest_twisted.ensureDeferred
async def test_a_token_for_a_box_served_to_a_shared_key_is_refused(tmp_path: Path, reactor: Any) -> None:
    """
    A box served to one shared key takes no token (and would refuse to be
    served with --tokens): minting one says so and makes nothing. A box no
    server has served yet gets its token, with a note that it works once
    one serves it with --tokens; before, both were silent.
    """
    async with running_server(reactor, tmp_path / "box", "key") as server:
        box = server.box
    status, out, err = admin("token", "--box", str(box), "--account", "alice", "--client", "laptop")
    assert (status, out) == (1, "") and "served to one shared key" in err and len(err.splitlines()) == 1
    assert not (box / "alice").exists()
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    status, out, err = admin("token", "--box", str(fresh), "--account", "alice", "--client", "laptop")
    assert status == 0 and out.count(".") == 2 and "no server has served" in err
    status, _, err = admin("token", "--box", str(fresh), "--account", "alice", "--client", "phone")
    assert status == 0 and "no server has served" not in err
