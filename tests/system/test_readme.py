"""
Every command in README.md, run as written.

The README's shell blocks are read from the file itself, so a command edited
there is the command tested here. The first block holds the two commands for a
fresh machine: the first (install, then the demo) runs in a copy of the
repository; the second is the test suite, which CI runs exactly as written
(checked against ``.ci/run``). The other blocks make scenarios that run, one
command after the other, in a fresh copy of the repository with the venv the
first command made: servers and live clients stay in the background (each
must come up and keep running), every other command must exit 0, and the
files a scenario writes must reach every folder it syncs. A block that starts
no server goes on with the scenario of the block before it (the clients of
that server).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import IO, Callable, Iterator

import pytest
from attrs import frozen

from boxsync.client.cli import COMMANDS

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
FENCED = re.compile(r"^```sh\n(.*?)^```", re.MULTILINE | re.DOTALL)
#: How long installing from the package registry may take.
INSTALL_SECONDS = 600.0
#: How long anything else a command waits for may take.
WAIT_SECONDS = 60.0


def readme_blocks() -> list[list[str]]:
    """
    The commands of each C{sh} block of the README, one per line.
    """
    text = README.read_text(encoding="utf-8")
    return [
        [line.strip() for line in block.splitlines() if line.strip()]
        for block in FENCED.findall(text)
    ]


@frozen
class Step:
    command: str

    @property
    def words(self) -> list[str]:
        return shlex.split(self.command, comments=True)

    @property
    def is_server(self) -> bool:
        return self.words[:2] in (["twistd", "-n"], ["twist", "boxsync"])

    @property
    def is_live_client(self) -> bool:
        words = self.words
        return words[0] == "boxsync-client" and words[1] not in COMMANDS and "--once" not in words

    @property
    def port(self) -> int:
        """
        The port of the server's first C{--listen} endpoint.
        """
        match = re.search(r"(?:tcp|ssl):(\d+)", self.command)
        assert match, f"no port in {self.command!r}"
        return int(match.group(1))

    def folder(self, home: Path, cwd: Path) -> Path:
        """
        The folder a C{boxsync-client} command syncs: its last argument.
        """
        last = self.words[-1]
        path = Path(last.replace("~", str(home), 1) if last.startswith("~") else last)
        return path if path.is_absolute() else cwd / path


def test_the_readme_starts_with_the_two_commands() -> None:
    text = README.read_text(encoding="utf-8")
    first = readme_blocks()[0]
    assert text.split("\n\n")[1].startswith("```sh\n"), "the README must start with the commands"
    assert len(first) == 2
    install_and_demo, tests = first
    assert install_and_demo.endswith("python -m boxsync.demo")
    # CI runs the second command's test run exactly as the README writes it.
    test_run = tests.rsplit("&& .venv/bin/", 1)[1]
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    assert f'"$python" -m {test_run.removeprefix("python -m ")} &' in ci


def copy_of_repository(into: Path) -> Path:
    """
    The repository's files, as a fresh clone has them, in C{into}.
    """
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO, capture_output=True, check=False
    )
    if listed.returncode != 0:
        shutil.copytree(
            REPO, into, ignore=shutil.ignore_patterns(".git", ".venv", "*.egg-info", "__pycache__")
        )
        return into
    for name in filter(None, listed.stdout.decode().split("\0")):
        source = REPO / name
        if source.is_file():
            target = into / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    return into


def environment(home: Path, venv: Path) -> dict[str, str]:
    keep = {"LANG", "LC_ALL", "TMPDIR", "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS"}
    env = {name: value for name, value in os.environ.items() if name in keep}
    env.update(HOME=str(home), PATH=f"{venv / 'bin'}:/usr/local/bin:/usr/bin:/bin")
    return env


def wait_for(what: str, ready: Callable[[], bool], alive: Callable[[], bool], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not ready():
        assert alive(), f"it exited before {what}"
        assert time.monotonic() < deadline, f"no {what} within {seconds:.0f} s"
        time.sleep(0.1)


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def stop(process: subprocess.Popen[bytes]) -> int:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGINT)
        try:
            return process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
    return process.wait(30)


def background(command: str, cwd: Path, env: dict[str, str], log: IO[bytes]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        ["bash", "-c", command], cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,
    )


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """
    The README's first command, run as written in a copy of the repository
    until its demo says files move; the copy (with its C{.venv}) and the
    demo's output.
    """
    copy = copy_of_repository(tmp_path_factory.mktemp("readme") / "boxsync")
    command = readme_blocks()[0][0]
    home = copy.parent / "home"
    home.mkdir()
    env = environment(home, copy / ".venv")
    output = copy.parent / "first-command.log"
    with output.open("wb") as log:
        demo = background(command, copy, env, log)
    try:
        wait_for(
            "demo that works",
            lambda: b"the demo works" in output.read_bytes(),
            lambda: demo.poll() is None,
            INSTALL_SECONDS,
        )
    except AssertionError as e:
        stop(demo)
        pytest.fail(f"{e}\n{command}\n{output.read_text(errors='replace')[-3000:]}")
    status = stop(demo)
    yield copy, output.read_text(errors="replace") + f"\nexit status {status}"


@pytest.mark.slow
def test_the_first_command_installs_and_runs_the_demo(installed: tuple[Path, str]) -> None:
    copy, output = installed
    assert "hello.txt went from alice to bob" in output
    assert "boxsync demo stopped." in output
    assert (copy / "demo" / "bob" / "hello.txt").read_bytes() == (
        copy / "demo" / "alice" / "hello.txt"
    ).read_bytes()
    # Stopped once each, cleanly: no traceback in any log.
    for log in ("server.log", "alice.log", "bob.log"):
        text = (copy / "demo" / log).read_text(errors="replace")
        assert "Traceback" not in text and "ReactorNotRunning" not in text, text[-2000:]
        assert "Received SIGINT" not in text


def scenarios() -> list[list[str]]:
    """
    The README's blocks after the first, as scenarios: a block that starts a
    server starts a new one, and a block that does not (the clients of that
    server) goes on with the one before.
    """
    found: list[list[str]] = []
    for block in readme_blocks()[1:]:
        if found and not any(Step(command).is_server for command in block):
            found[-1] = found[-1] + block
        else:
            found.append(block)
    return found


SCENARIOS = scenarios()


@pytest.mark.slow
@pytest.mark.parametrize(
    "commands", SCENARIOS, ids=[f"scenario{n + 1}" for n in range(len(SCENARIOS))]
)
def test_a_readme_block_runs_as_written(
    installed: tuple[Path, str], commands: list[str], tmp_path: Path
) -> None:
    venv = installed[0] / ".venv"
    cwd = copy_of_repository(tmp_path / "boxsync")
    home = tmp_path / "home"
    home.mkdir()
    env = environment(home, venv)
    running: list[tuple[Step, subprocess.Popen[bytes]]] = []
    folders: list[Path] = []
    written: list[Path] = []
    logs = tmp_path / "logs"
    logs.mkdir()

    def tail() -> str:
        return "\n".join(
            f"--- {log.name}\n{log.read_text(errors='replace')[-2000:]}" for log in sorted(logs.iterdir())
        )

    try:
        for n, command in enumerate(commands):
            step = Step(command)
            if step.is_live_client or "--once" in step.words:
                folders.append(step.folder(home, cwd))
            written += [cwd / m for m in re.findall(r"> (\S+/\S+)$", command) if not m.startswith("~")]
            with (logs / f"{n:02d}.log").open("wb") as log:
                if not (step.is_server or step.is_live_client):
                    ran = subprocess.run(
                        ["bash", "-c", command], cwd=cwd, env=env, stdout=log,
                        stderr=subprocess.STDOUT, timeout=INSTALL_SECONDS,
                    )
                    assert ran.returncode == 0, f"{command!r} exited {ran.returncode}\n{tail()}"
                    continue
                if step.is_server:
                    assert not listening(step.port), f"port {step.port} is taken: cannot run {command!r}"
                process = background(command, cwd, env, log)
            running.append((step, process))
            alive = lambda: process.poll() is None  # noqa: E731
            if step.is_server:
                wait_for(f"server on port {step.port}", lambda: listening(step.port), alive, WAIT_SECONDS)
            else:
                folder = folders[-1]
                wait_for(
                    f"{folder} in sync",
                    lambda: subprocess.run(
                        ["boxsync-client", "status", str(folder)], env=env, cwd=cwd,
                        capture_output=True, check=False,
                    ).returncode == 0,
                    alive,
                    WAIT_SECONDS,
                )
        for step, process in running:
            assert process.poll() is None, f"{step.command!r} stopped\n{tail()}"
    except (AssertionError, subprocess.TimeoutExpired) as e:
        pytest.fail(f"{e}\n{tail()}")
    finally:
        for _, process in reversed(running):
            stop(process)
    for path in written:
        for folder in folders:
            copy = folder / path.relative_to(path.parent)
            assert copy.read_bytes() == path.read_bytes(), f"{copy} is not {path}"
