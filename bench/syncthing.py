"""
Syncthing as a reference: two Syncthing instances (Debian's package,
installed here if missing) on 127.0.0.1 sharing one folder, with
discovery, relays, NAT traversal and usage reports off, each watching its
folder for changes as boxsync's clients do. A tree renamed into A's folder
is timed until it is complete in B's.

Syncthing waits a fixed delay (``fsWatcherDelayS``, at least 1 s) after a
change before it scans; the figures are given with it, and the delay is
named beside them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.request
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, Callable

from boxsync.testing import free_ports, wait_until

from .reference import _install, terminate

FOLDER = "bench"

#: The shortest wait Syncthing takes after a change before it scans (s).
WATCH_DELAY = 1


def ensure_syncthing() -> str | None:
    """
    The path of syncthing, installing Debian's package when there is none
    and we may. C{None} if it cannot be had.
    """
    if shutil.which("syncthing") is None:
        _install("syncthing")
    return shutil.which("syncthing")


class _Instance:
    """
    One Syncthing with its home (keys, config, database) in C{home}, syncing
    C{folder}.
    """

    def __init__(self, binary: str, home: Path, folder: Path) -> None:
        self.binary = binary
        self.home = home
        self.folder = folder
        self.gui_port, self.listen_port = free_ports(2)
        self.key = os.urandom(16).hex()
        self.popen: subprocess.Popen[bytes] | None = None
        home.mkdir(parents=True)
        folder.mkdir(parents=True)
        subprocess.run(
            [binary, "generate", f"--home={home}", "--no-default-folder", "--skip-port-probing"],
            check=True,
            capture_output=True,
        )
        self.device = subprocess.run(
            [binary, "serve", f"--home={home}", "--device-id"], check=True, capture_output=True, text=True
        ).stdout.strip()

    def configure(self, peer: _Instance) -> None:
        """
        Share the folder with C{peer} only, over loopback, with nothing
        that reaches out of this machine.
        """
        path = self.home / "config.xml"
        config = ET.parse(path)
        root = config.getroot()
        gui = root.find("gui")
        assert gui is not None
        _set(gui, "address", f"127.0.0.1:{self.gui_port}")
        _set(gui, "apikey", self.key)
        options = root.find("options")
        assert options is not None
        for name, value in {
            "listenAddress": f"tcp://127.0.0.1:{self.listen_port}",
            "globalAnnounceEnabled": "false",
            "localAnnounceEnabled": "false",
            "relaysEnabled": "false",
            "natEnabled": "false",
            "urAccepted": "-1",
            "autoUpgradeIntervalH": "0",
            "crashReportingEnabled": "false",
            "startBrowser": "false",
            # A first dial made before the peer listens is tried again in a
            # second, not in the default minute.
            "reconnectionIntervalS": "1",
        }.items():
            _set(options, name, value)
        for device in root.findall("device"):
            root.remove(device)
        for each in (self, peer):
            device = ET.SubElement(
                root, "device", id=each.device, name=each.home.name, compression="never", introducer="false"
            )
            ET.SubElement(device, "address").text = f"tcp://127.0.0.1:{each.listen_port}"
        folder = ET.SubElement(
            root,
            "folder",
            id=FOLDER,
            label=FOLDER,
            path=str(self.folder),
            type="sendreceive",
            rescanIntervalS="3600",
            fsWatcherEnabled="true",
            fsWatcherDelayS=str(WATCH_DELAY),
        )
        for each in (self, peer):
            ET.SubElement(folder, "device", id=each.device)
        config.write(path)

    def start(self) -> None:
        log = open(self.home / "syncthing.log", "wb")
        self.popen = subprocess.Popen(
            [self.binary, "serve", f"--home={self.home}", "--no-browser", "--no-restart", "--no-upgrade"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(os.environ, STNOUPGRADE="1", STNORESTART="1"),
        )

    def rest(self, path: str) -> Any:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.gui_port}{path}", headers={"X-API-Key": self.key}
        )
        with urllib.request.urlopen(request, timeout=5) as answer:
            return json.load(answer)

    def connected_to(self, peer: _Instance) -> bool:
        assert self.popen is not None
        if self.popen.poll() is not None:
            raise RuntimeError(f"syncthing exited: see {self.home / 'syncthing.log'}")
        try:
            connections = self.rest("/rest/system/connections")["connections"]
        except OSError:
            return False
        return bool(connections.get(peer.device, {}).get("connected"))

    def log_tail(self, lines: int = 20) -> str:
        """
        The last C{lines} lines this instance logged, under its name.
        """
        logged = (self.home / "syncthing.log").read_text(errors="replace").splitlines()[-lines:]
        return "\n".join([f"{self.home.name}:", *logged])

    def idle(self) -> bool:
        try:
            return self.rest(f"/rest/db/status?folder={FOLDER}").get("state") == "idle"
        except OSError:
            return False

    def stop(self) -> None:
        terminate(self.popen)


def _set(parent: ET.Element, name: str, value: str) -> None:
    element = parent.find(name)
    if element is None:
        element = ET.SubElement(parent, name)
    element.text = value


def syncthing_a_to_b(
    source: Path, work: Path, complete: Callable[[Path], bool], timeout: float = 600.0
) -> float | None:
    """
    Rename the entries of C{source} into the folder of a live Syncthing A:
    the seconds until C{complete} says B's folder has them all (C{None} if
    Syncthing cannot be had). C{work} is removed afterwards.
    """
    binary = ensure_syncthing()
    if binary is None:
        return None
    a = _Instance(binary, work / "a-home", work / "a")
    b = _Instance(binary, work / "b-home", work / "b")
    try:
        a.configure(b)
        b.configure(a)
        a.start()
        b.start()
        try:
            wait_until(lambda: a.connected_to(b) and b.connected_to(a), timeout=60, what="syncthing to connect")
        except AssertionError as e:
            # Its folder is removed below: what each said goes with the error.
            raise AssertionError(f"{e}\n{a.log_tail()}\n{b.log_tail()}") from None
        wait_until(lambda: a.idle() and b.idle(), timeout=60, what="syncthing to be idle")
        os.sync()
        start = time.perf_counter()
        for entry in os.listdir(source):
            os.rename(source / entry, a.folder / entry)
        deadline = start + timeout
        while not complete(b.folder):
            if time.perf_counter() > deadline:
                raise SystemExit(f"syncthing: B is not complete after {timeout} s")
            time.sleep(max(0.02, (time.perf_counter() - start) / 100))
        return time.perf_counter() - start
    finally:
        a.stop()
        b.stop()
        shutil.rmtree(work, ignore_errors=True)
