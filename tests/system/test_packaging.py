"""
Packaging: the server as users start it (``twistd boxsync`` and ``twist
boxsync`` in real processes), and a wheel built from the repository that still
ships the twistd plugin once installed somewhere else.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import zipfile
from pathlib import Path
from urllib.error import HTTPError
from urllib.request import Request, urlopen

import pytest

from boxsync.testing import KEY, Process, free_port, wait_until

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
HTTP_TIMEOUT = 10.0

SERVER_COMMANDS = {
    "twistd": ["twistd", "-n", "--pidfile="],
    "twist": ["twist", "--log-format=text"],
}


def request(method: str, url: str, data: bytes | None = None, key: str | None = KEY) -> tuple[int, bytes]:
    headers = {} if key is None else {"Authorization": f"Bearer {key}"}
    try:
        with urlopen(Request(url, data=data, method=method, headers=headers), timeout=HTTP_TIMEOUT) as response:
            return response.status, response.read()
    except HTTPError as e:
        with e:
            return e.code, e.read()


def healthy(process: Process, url: str) -> bool:
    if not process.running:
        raise AssertionError("the server exited:\n" + process.output())
    try:
        return request("GET", f"{url}/healthz", key=None)[0] == 200
    except OSError:
        return False


@pytest.mark.parametrize("command", list(SERVER_COMMANDS), ids=list(SERVER_COMMANDS))
def test_server_command(tmp_path: Path, command: str) -> None:
    script, *options = SERVER_COMMANDS[command]
    executable = BIN / script
    assert executable.exists(), f"{script} is not installed beside {sys.executable}"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    args = [str(executable), *options, "boxsync", "--listen", f"tcp:{port}:interface=127.0.0.1"]
    args += ["--box", str(tmp_path / "box"), "--api-key", KEY]
    # The log sits in tmp_path, which is also the server's working directory.
    server = Process(args, tmp_path / "server.log").start()
    try:
        wait_until(lambda: healthy(server, url), what=f"{command} boxsync to answer /healthz")
        data = os.urandom(100_000)
        status, body = request("PUT", f"{url}/files/docs/hello.bin", data)
        assert status == 201, body
        assert (tmp_path / "box/docs/hello.bin").read_bytes() == data
        assert request("GET", f"{url}/files/docs/hello.bin") == (200, data)
        assert request("GET", f"{url}/files/docs/hello.bin", key=None)[0] == 401
        # A clean shutdown, then Twisted ends the process with the signal
        # that stopped it (twisted.application.app._exitWithSignal).
        assert server.stop(signal.SIGTERM) == -signal.SIGTERM, server.output()
    finally:
        server.kill()
    log = server.output()
    assert "Main loop terminated." in log and "Traceback" not in log, log
    assert not (tmp_path / "twistd.pid").exists()


TOP_LEVEL_LEFT_OUT = {".git", ".venv", "build", "dist", "box", "demo", "htmlcov", ".mypy_cache", ".hypothesis"}
LEFT_OUT = shutil.ignore_patterns("__pycache__", "*.egg-info", "dropin.cache", ".coverage*", ".pytest_cache")

WHEEL_CHECK = """
import json, sys
from pathlib import Path

repo = Path(sys.argv[1]).resolve()
# An editable install of the repository puts it on sys.path: take it away, so
# that only the installed wheel can provide the plugin.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != repo]

from twisted.application.service import IServiceMaker
from twisted.plugin import getPlugins

makers = [m for m in getPlugins(IServiceMaker) if m.tapname == "boxsync"]
import boxsync, twisted
print(json.dumps({
    "makers": len(makers),
    "options": makers[0].options.__module__ if makers else None,
    "plugin": getattr(sys.modules.get("twisted.plugins.boxsync_plugin"), "__file__", None),
    "boxsync": boxsync.__file__,
    "twisted": twisted.__file__,
}))
"""


def _sources(folder: str, names: list[str]) -> set[str]:
    left_out = set(LEFT_OUT(folder, names))
    if Path(folder) == REPO:
        left_out |= TOP_LEVEL_LEFT_OUT.intersection(names)
    return left_out


def _run(args: list[str], cwd: Path, **env: str) -> str:
    # Not measured: coverage would count a second copy of boxsync.
    environment = {k: v for k, v in os.environ.items() if not k.startswith("COVERAGE_") and k != "PYTHONPATH"}
    environment.update(env)
    result = subprocess.run(args, cwd=cwd, env=environment, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"{args}\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.mark.slow
def test_wheel_ships_the_plugin(tmp_path: Path) -> None:
    # Build from a copy, so that no build/ or egg-info left in the repository
    # can change what goes into the wheel.
    source, wheels, target, elsewhere = (tmp_path / name for name in ("source", "wheels", "target", "elsewhere"))
    shutil.copytree(REPO, source, ignore=_sources)
    elsewhere.mkdir()
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    _run([*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(wheels), "."], source)
    (wheel,) = wheels.glob("boxsync-*.whl")

    names = set(zipfile.ZipFile(wheel).namelist())
    assert "twisted/plugins/boxsync_plugin.py" in names
    assert "twisted/__init__.py" not in names
    assert "twisted/plugins/__init__.py" not in names
    assert "boxsync/py.typed" in names and "boxsync/server/tap.py" in names
    assert {"boxsync/server/static/index.html", "boxsync/server/static/app.js"} <= names
    # PostgreSQL's schema, applied as a server starts.
    assert "boxsync/server/migrations/pg/0001_index.sql" in names
    assert not [name for name in names if name.startswith("tests/") or name.endswith("dropin.cache")]

    _run([*pip, "install", "--no-deps", "--no-index", "--target", str(target), str(wheel)], elsewhere)
    found = json.loads(_run([sys.executable, "-c", WHEEL_CHECK, str(REPO)], elsewhere, PYTHONPATH=str(target)))
    assert found["makers"] == 1
    assert found["options"] == "boxsync.server.tap"
    assert Path(found["plugin"]).is_relative_to(target)
    assert Path(found["boxsync"]).is_relative_to(target)
    # Twisted's own package is intact: the wheel added to it, replaced nothing.
    assert not Path(found["twisted"]).is_relative_to(target)


def _dockerfile() -> dict[str, str]:
    """
    The build context the Dockerfile copies, the plugin-cache command it runs,
    and its health check, read from the Dockerfile itself.
    """
    text = (REPO / "Dockerfile").read_text(encoding="utf-8").replace("\\\n", " ")
    copied = [line.split()[1:-1] for line in text.splitlines() if line.startswith("COPY ")]
    cache = text.split("&& python -c ", 1)[1].split(" && ", 1)[0].strip().strip('"')
    health = json.loads(text.split("CMD ", 1)[1].split("\n", 1)[0])
    return {"copied": json.dumps([name for names in copied for name in names]), "cache": cache, "health": health[-1]}


@pytest.mark.slow
def test_dockerfile_steps(tmp_path: Path) -> None:
    """
    The Dockerfile's steps without Docker: its build context only, every
    dependency as a wheel, an install with no index into a fresh venv, the
    plugin cache, then the server it starts, probed by its health check.
    """
    steps = _dockerfile()
    source, wheels, venv = tmp_path / "src", tmp_path / "wheels", tmp_path / "venv"
    for name in json.loads(steps["copied"]):
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, source / name, ignore=LEFT_OUT)
        else:
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(REPO / name, source / name)
    _run([sys.executable, "-m", "pip", "-q", "wheel", "--no-cache-dir", "--wheel-dir", str(wheels), "."], source)
    _run([sys.executable, "-m", "venv", str(venv)], tmp_path)
    python = venv / "bin" / "python"
    (wheel,) = wheels.glob("boxsync-*.whl")
    _run([str(python), "-m", "pip", "-q", "install", "--no-cache-dir", "--no-index", f"--find-links={wheels}", str(wheel)], tmp_path)
    _run([str(python), "-c", steps["cache"]], tmp_path)
    port = free_port()
    health = steps["health"].replace("http://127.0.0.1:8080", f"http://127.0.0.1:{port}")
    box = tmp_path / "box"
    box.mkdir()
    server = Process(
        [str(venv / "bin" / "twistd"), "-n", "--pidfile=", "boxsync", "--listen", f"tcp:{port}:interface=127.0.0.1", "--box", str(box)],
        tmp_path / "server.log",
        env={"BOXSYNC_API_KEY": KEY, "PYTHONDONTWRITEBYTECODE": "1", "PYTHONPATH": ""},
    ).start()
    try:
        def probe() -> bool:
            if not server.running:
                raise AssertionError("the server exited:\n" + server.output())
            return subprocess.run([str(python), "-c", health], capture_output=True, timeout=30).returncode == 0

        wait_until(probe, what="the installed server to pass the Dockerfile's health check")
        assert request("PUT", f"http://127.0.0.1:{port}/files/a.txt", b"hello")[0] == 201
        assert server.stop(signal.SIGTERM) == -signal.SIGTERM, server.output()
    finally:
        server.kill()
    assert "Traceback" not in server.output()
