"""
The web page in a real browser: headless Chromium (Debian's C{chromium} and
C{chromium-driver}), driven by Selenium, against a real server (accounts and
tokens) and a real C{boxsync-client}, all on 127.0.0.1.

Set C{BOXSYNC_SCREENSHOTS} to a folder to keep the screenshots taken on the
way (that is how those in docs/ are made).
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import shutil
import socket
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable, Iterator
from urllib.parse import quote

import pytest

from boxsync.admin import run as admin
from boxsync.testing import Client, Process, Server, free_port, wait_until

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
        reason="no headless browser: install Debian's chromium and chromium-driver "
        "(/usr/bin/chromium, /usr/bin/chromedriver)",
    ),
]

#: How long the page may take to show a change written into a client's folder.
LIVE_SECONDS = 1.0
#: How long anything else may take.
WAIT = 20.0
XSS_NAME = "<img src=x onerror=alert(1)>.txt"


def mint(box: Path, *argv: str) -> str:
    out, err = io.StringIO(), io.StringIO()
    assert admin([*argv, "--box", str(box)], out, err, environ={}) == 0, err.getvalue()
    return out.getvalue().splitlines()[-1]


def listening(process: Process, port: int) -> bool:
    if not process.running:
        raise AssertionError("the server exited:\n" + process.output())
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


class Site:
    """
    A server in token mode with account C{alice}, one live client, and the
    tokens to sign in with.
    """

    def __init__(self, tmp_path: Path) -> None:
        self.box = tmp_path / "box"
        self.laptop_token = mint(self.box, "token", "--account", "alice", "--client", "laptop")
        self.browser_token = mint(self.box, "token", "--account", "alice", "--client", "browser")
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        args = [
            sys.executable, "-m", "twisted", "--log-format=text", "boxsync", "--tokens",
            "--listen", f"tcp:{port}:interface=127.0.0.1", "--box", str(self.box),
        ]
        self.server = Server(self.box, port=port, key=self.laptop_token)
        self.server.process = Process(args, tmp_path / "server.log").start()
        wait_until(lambda: listening(self.server.process, port), WAIT, "the server to listen")  # type: ignore[arg-type]
        self.client = Client(self.server, tmp_path / "laptop", "laptop", rescan=2).start()

    def link(self) -> str:
        return mint(self.box, "web-link", "--account", "alice", "--server", self.url)

    def stop(self) -> None:
        self.client.kill()
        self.server.kill()


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    made = Site(tmp_path)
    try:
        yield made
    finally:
        made.stop()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    # The console, to see that the Content-Security-Policy blocks nothing of the page.
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,860",
                     f"--user-data-dir={tmp_path / 'chromium'}", "--lang=en-GB"):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER), log_output=str(tmp_path / "chromedriver.log")))
    driver.set_page_load_timeout(WAIT)
    driver.set_script_timeout(WAIT)
    try:
        yield driver
    finally:
        driver.quit()


def until(driver: Any, condition: Callable[[Any], Any], what: str, seconds: float = WAIT) -> Any:
    """
    What C{condition} returns once it is true. The page redraws its rows as
    the box changes: an element found just before that is tried again.
    """
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(
        driver, seconds, poll_frequency=0.02,
        ignored_exceptions=[NoSuchElementException, StaleElementReferenceException],
    )
    return wait.until(condition, f"timed out waiting for {what}")


def click(driver: Any, selector: str) -> None:
    from selenium.webdriver.common.by import By

    until(driver, lambda d: d.find_element(By.CSS_SELECTOR, selector).click() or True, f"{selector} to click")


def rows(driver: Any) -> list[str]:
    """
    The names in the listing, as the page shows them (text, never markup).
    """
    return driver.execute_script(
        "return [...document.querySelectorAll('#rows .name span:last-child')].map(e => e.textContent)"
    )


def shown(driver: Any, name: str) -> Callable[[Any], bool]:
    return lambda d: name in rows(d)


def gone(driver: Any, name: str) -> Callable[[Any], bool]:
    return lambda d: name not in rows(d)


def size_of(driver: Any, name: str) -> str:
    return driver.execute_script(
        "return document.querySelector(`tr[data-path='${arguments[0]}'] .cell-size`)?.textContent", name
    )


def visible(driver: Any, element_id: str) -> Callable[[Any], bool]:
    return lambda d: d.execute_script(f"return !document.getElementById('{element_id}').hidden")


@contextlib.contextmanager
def held_upload(site: Site, path: str, size: int, first: int) -> Iterator[Callable[[], None]]:
    """
    An upload of C{size} bytes to C{path} by client C{camera}, its first
    C{first} bytes sent; the function it gives sends the rest and checks the
    answer. The connection is closed on the way out.
    """
    with socket.create_connection(("127.0.0.1", int(site.url.rsplit(":", 1)[1])), timeout=WAIT) as sock:
        head = (
            f"PUT /files/{quote(path)} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
            f"Authorization: Bearer {site.laptop_token}\r\nX-Boxsync-Client: camera\r\n"
            f"Content-Length: {size}\r\n\r\n"
        )
        sock.sendall(head.encode() + b"x" * first)

        def finish() -> None:
            sock.sendall(b"x" * (size - first))
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
            assert answer.startswith(b"HTTP/1.1 201"), answer

        yield finish


def screenshot(driver: Any, tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    driver.save_screenshot(str(path))
    keep = os.environ.get("BOXSYNC_SCREENSHOTS")
    if keep:
        shutil.copy(path, Path(keep) / name)


def row_button(driver: Any, name: str, label: str) -> None:
    click(driver, f"button[aria-label='{label} {name}']")


def test_the_page_follows_the_box(site: Site, browser: Any, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.expected_conditions import alert_is_present

    folder = site.client.folder
    (folder / "docs/reports").mkdir(parents=True)
    (folder / "docs/reports/q3.pdf").write_bytes(os.urandom(180_000))
    (folder / "docs/notes.md").write_text("# notes\n")
    (folder / "photos").mkdir()
    (folder / "photos/beach.jpg").write_bytes(os.urandom(2_400_000))
    (folder / "README.txt").write_text("hello")
    account = site.box / "alice"
    wait_until(lambda: (account / "photos/beach.jpg").exists() and (account / "README.txt").exists(), WAIT, "the first sync")

    # A wrong token opens nothing.
    browser.get(site.url + "/")
    until(browser, visible(browser, "sign-in"), "the sign-in form")
    browser.find_element(By.ID, "token").send_keys("not-a-token")
    browser.find_element(By.CSS_SELECTOR, "#sign-in-form button").click()
    until(browser, lambda d: d.find_element(By.ID, "sign-in-error").text, "the error")
    assert "not valid" in browser.find_element(By.ID, "sign-in-error").text
    assert browser.find_element(By.ID, "box").get_attribute("hidden") is not None
    screenshot(browser, tmp_path, "web-sign-in.png")

    # The one-time link signs in, and the box is there.
    link = site.link()
    browser.get(link)
    until(browser, visible(browser, "box"), "the box")
    assert "#link" not in browser.current_url
    until(browser, shown(browser, "docs"), "the listing")
    until(browser, lambda d: d.find_element(By.ID, "live").text == "Live", "the event stream")
    assert rows(browser) == ["docs", "photos", "README.txt"]

    # A file written into the client's folder appears, live: within a second
    # of being written (the client's upload included).
    written = time.monotonic()
    (folder / "new.txt").write_text("written by the laptop")
    until(browser, shown(browser, "new.txt"), "the new file on the page", seconds=LIVE_SECONDS)
    print(f"new.txt: on the page {time.monotonic() - written:.3f} s after it was written")
    until(browser, lambda d: "laptop" in d.find_element(By.CSS_SELECTOR, "tr[data-path='new.txt'] .cell-origin").text, "who made it")

    # An edit and a deletion by the client, live too.
    (folder / "new.txt").write_text("written by the laptop, then edited")
    wait_until(lambda: (account / "new.txt").stat().st_size == 34, WAIT, "the edit at the server")
    until(browser, lambda d: size_of(d, "new.txt") == "34 B", "the edit on the page", seconds=LIVE_SECONDS)
    (folder / "README.txt").unlink()
    wait_until(lambda: not (account / "README.txt").exists(), WAIT, "the deletion at the server")
    until(browser, gone(browser, "README.txt"), "the deletion on the page", seconds=LIVE_SECONDS)

    # A name that is markup is shown as text.
    browser.execute_script("window.alert = () => { window.alerted = true; }")
    (folder / XSS_NAME).write_text("not html")
    until(browser, shown(browser, XSS_NAME), "the odd name")
    assert browser.find_elements(By.CSS_SELECTOR, "#rows img") == []
    assert browser.execute_script("return window.alerted === undefined")

    # A burst of changes: all shown, and who made them.
    (folder / "burst").mkdir()
    for n in range(80):
        (folder / f"burst/{n:02}.txt").write_text(f"file {n}")
    until(browser, lambda d: size_of(d, "burst") == "80 files, 550 B", "the burst on the page")
    until(browser, lambda d: d.execute_script(
        "return document.querySelector(`tr[data-path='burst'] .cell-origin`).textContent") == "laptop", "who made the burst")

    # Sort by size, find a file by name as one types, browse into folders.
    click(browser, "th[data-sort='size'] button")
    assert rows(browser)[:2] == ["photos", "docs"]
    browser.find_element(By.ID, "filter").send_keys("q3")
    until(browser, lambda d: rows(d) == ["docs/reports/q3.pdf"], "the search")
    browser.find_element(By.ID, "filter").clear()
    browser.find_element(By.ID, "filter").send_keys(" ")  # input event: the whole folder again
    click(browser, "th[data-sort='name'] button")
    # By keyboard alone: tab to the folder, open it.
    for _ in range(40):
        active = browser.switch_to.active_element
        if active.text == "docs" and "folder" in (active.get_attribute("class") or ""):
            break
        active.send_keys(Keys.TAB)
    else:
        raise AssertionError("the folder cannot be reached with the Tab key")
    active.send_keys(Keys.ENTER)
    until(browser, lambda d: sorted(rows(d)) == ["notes.md", "reports"], "the docs folder")
    assert "folder=docs" in browser.current_url
    browser.back()
    until(browser, shown(browser, "photos"), "the top folder again")
    screenshot(browser, tmp_path, "web-desktop.png")
    # On a phone.
    browser.set_window_size(390, 844)
    until(browser, lambda d: d.execute_script("return innerWidth") <= 400, "the phone's width")
    screenshot(browser, tmp_path, "web-phone.png")
    browser.set_window_size(1280, 860)

    # Upload with the picker and by dropping: the files reach the client.
    picked = tmp_path / "picked.txt"
    picked.write_text("picked on the page")
    browser.find_element(By.ID, "pick-files").send_keys(str(picked))
    browser.execute_script("""
        const data = new DataTransfer();
        data.items.add(new File(["dropped on the page"], "dropped.txt", {type: "text/plain"}));
        document.body.dispatchEvent(new DragEvent("drop", {dataTransfer: data, bubbles: true, cancelable: true}));
    """)
    wait_until(lambda: (folder / "picked.txt").exists() and (folder / "dropped.txt").exists(), WAIT, "the uploads at the client")
    assert (folder / "dropped.txt").read_text() == "dropped on the page"
    until(browser, shown(browser, "dropped.txt"), "the dropped file on the page")

    # Rename a file, move a folder, delete a file: the client follows.
    row_button(browser, "picked.txt", "Move or rename")
    prompt = until(browser, alert_is_present(), "the prompt")
    prompt.send_keys("renamed.txt")
    prompt.accept()
    wait_until(lambda: (folder / "renamed.txt").exists() and not (folder / "picked.txt").exists(), WAIT, "the rename at the client")
    row_button(browser, "photos", "Move or rename")
    prompt = until(browser, alert_is_present(), "the prompt")
    prompt.send_keys("docs/photos")
    prompt.accept()
    wait_until(lambda: (folder / "docs/photos/beach.jpg").exists() and not (folder / "photos").exists(), WAIT, "the move at the client")
    until(browser, gone(browser, "photos"), "the moved folder to leave")
    row_button(browser, "new.txt", "Delete")
    until(browser, alert_is_present(), "the confirmation").accept()
    wait_until(lambda: not (folder / "new.txt").exists(), WAIT, "the delete at the client")
    until(browser, gone(browser, "new.txt"), "the deleted file to leave")

    # A folder uploaded with the picker, then deleted from the page.
    album = tmp_path / "album"
    (album / "inner").mkdir(parents=True)
    (album / "a.txt").write_text("a")
    (album / "inner/b.txt").write_text("b")
    browser.find_element(By.ID, "pick-folder").send_keys(str(album))
    wait_until(lambda: (folder / "album/inner/b.txt").exists(), WAIT, "the folder at the client")
    until(browser, shown(browser, "album"), "the folder on the page")
    row_button(browser, "album", "Delete")
    until(browser, alert_is_present(), "the confirmation").accept()
    wait_until(lambda: not (folder / "album").exists(), WAIT, "the folder's deletion at the client")
    until(browser, gone(browser, "album"), "the deleted folder to leave")

    # The client is listed as connected.
    until(browser, lambda d: "laptop" in d.find_element(By.ID, "clients-list").text, "the clients")
    assert "connected" in browser.find_element(By.ID, "clients-list").text

    # A slow upload, held halfway through its body, is shown with its path
    # and how far it is; it is gone once it is all sent and committed.
    listed = lambda d: d.find_element(By.ID, "clients-list").text  # noqa: E731
    with held_upload(site, "slow/held.bin", 4000, 1000) as finish:
        until(browser, lambda d: "slow/held.bin" in listed(d) and "1 KB of 4 KB (25%)" in listed(d), "the upload on the page")
        assert "camera" in listed(browser)
        finish()
    until(browser, lambda d: "slow/held.bin" not in listed(d), "the finished upload to leave the page")
    assert "uploading" not in listed(browser)

    # Nothing the page does was blocked, nothing failed in its scripts.
    console = [entry["message"] for entry in browser.get_log("browser")]
    assert not [m for m in console if "Content Security Policy" in m or "Uncaught" in m], console

    # Signing out: the cookie opens nothing any more, the link not again.
    browser.find_element(By.ID, "sign-out").click()
    until(browser, visible(browser, "sign-in"), "the sign-in form")
    # ... and its event stream is closed.
    server = site.server.process
    assert server is not None
    wait_until(
        lambda: server.output().count("web connected:") == server.output().count("web disconnected") > 0,
        WAIT, "the page's stream to close",
    )
    status = browser.execute_script("return fetch('/files').then(r => r.status)")
    assert status == 401
    browser.get(link)
    until(browser, lambda d: "does not work" in d.find_element(By.ID, "sign-in-error").text, "the used link refused")


def test_a_revoked_token_loses_the_page(site: Site, browser: Any) -> None:
    from selenium.webdriver.common.by import By

    browser.get(site.url + "/")
    until(browser, visible(browser, "sign-in"), "the sign-in form")
    browser.find_element(By.ID, "token").send_keys(site.browser_token)
    browser.find_element(By.ID, "token").submit()
    until(browser, lambda d: d.find_element(By.ID, "live").text == "Live", "the event stream")
    mint(site.box, "revoke", "--account", "alice", "--client", "browser")
    until(browser, visible(browser, "sign-in"), "the page to sign out")
    assert "sign in again" in browser.find_element(By.ID, "sign-in-error").text
    assert browser.execute_script("return fetch('/files').then(r => r.status)") == 401


def change(site: Site, method: str, path: str, data: bytes | None = None, base: int | None = None) -> dict[str, Any]:
    """
    Change the box through the server, as client C{laptop} would: the
    committed record.
    """
    headers = {"Authorization": f"Bearer {site.laptop_token}", "X-Boxsync-Client": "laptop"}
    if base is not None:
        headers["X-Boxsync-Base"] = str(base)
    asked = urllib.request.Request(f"{site.url}/files/{quote(path)}", data=data, method=method, headers=headers)
    with urllib.request.urlopen(asked, timeout=WAIT) as answer:
        return json.load(answer)


def panel_rows(driver: Any) -> list[list[str]]:
    """
    The rows of the table in the dialog, each as the text of its cells.
    """
    return driver.execute_script(
        "return [...document.querySelectorAll('#panel-body tbody tr')].map(r => [...r.cells].map(c => c.textContent))"
    )


def panel_open(driver: Any) -> bool:
    return bool(driver.execute_script("return document.getElementById('panel').open"))


def panel_status(driver: Any) -> str:
    return driver.execute_script("return document.getElementById('panel-status').textContent")


def test_history_trash_and_restore(site: Site, browser: Any, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    account = site.box / "alice"
    first = change(site, "PUT", "notes.txt", b"first version")
    second = change(site, "PUT", "notes.txt", b"second, longer version")
    gone = change(site, "PUT", "gone.txt", b"deleted soon")
    change(site, "DELETE", "gone.txt", base=gone["seq"])
    a = change(site, "PUT", "docs/a.txt", b"a as it was")
    b = change(site, "PUT", "docs/b.txt", b"b as it was")

    browser.get(site.url + "/")
    until(browser, visible(browser, "sign-in"), "the sign-in form")
    browser.find_element(By.ID, "token").send_keys(site.browser_token)
    browser.find_element(By.ID, "token").submit()
    until(browser, lambda d: d.find_element(By.ID, "live").text == "Live", "the event stream")
    until(browser, lambda d: size_of(d, "notes.txt") == "22 B", "the file as it is")

    # The history: newest first, the live version marked; any version downloads.
    row_button(browser, "notes.txt", "History of")
    until(browser, lambda d: len(panel_rows(d)) == 2, "the two versions")
    versions = panel_rows(browser)
    assert versions[0][0] == f"{second['seq']}current" and versions[0][2] == "22 B" and versions[0][3] == "laptop"
    assert versions[1][0] == str(first["seq"]) and versions[1][2] == "13 B"
    assert browser.find_elements(By.CSS_SELECTOR, f"button[aria-label='Restore version {second['seq']} of notes.txt']") == []
    link = browser.find_element(By.CSS_SELECTOR, f"a[aria-label='Download version {first['seq']} of notes.txt']")
    assert link.get_attribute("download") == "notes.txt"
    assert browser.execute_script(
        "return fetch(arguments[0]).then(r => r.text())", link.get_attribute("href")
    ) == "first version"
    screenshot(browser, tmp_path, "web-history.png")

    # Restore the first version: on the page, in the box, at the client.
    row_button(browser, f"{first['seq']} of notes.txt", "Restore version")
    until(browser, lambda d: panel_status(d) == f"Restored notes.txt (version {first['seq']}).", "the restore")
    until(browser, lambda d: size_of(d, "notes.txt") == "13 B", "the restored file on the page")
    assert (account / "notes.txt").read_bytes() == b"first version"
    wait_until(lambda: (site.client.folder / "notes.txt").read_bytes() == b"first version", WAIT, "the restore at the client")
    # The history shown again: the restored version is the live one.
    until(browser, lambda d: len(panel_rows(d)) == 3 and panel_rows(d)[0][3] == "web", "the history after the restore")

    # Changed by another client while the history is open: a restore from
    # what the page shows is refused, and says so; nothing is overwritten.
    third = change(site, "PUT", "notes.txt", b"third, by the laptop")
    row_button(browser, f"{second['seq']} of notes.txt", "Restore version")
    until(browser, lambda d: panel_status(d) == "notes.txt changed meanwhile: not restored.", "the refusal")
    assert (account / "notes.txt").read_bytes() == b"third, by the laptop"
    until(browser, lambda d: len(panel_rows(d)) == 4, "the history with the laptop's change")

    # Escape closes the dialog, by keyboard.
    browser.switch_to.active_element.send_keys(Keys.ESCAPE)
    until(browser, lambda d: not panel_open(d), "the dialog to close")

    # The trash: what was deleted, newest deletion first; restored from there.
    click(browser, "#open-trash")
    until(browser, lambda d: [row[0] for row in panel_rows(d)] == ["gone.txt"], "the trash")
    click(browser, "button[aria-label='Restore gone.txt']")
    until(browser, shown(browser, "gone.txt"), "the file back on the page")
    assert (account / "gone.txt").read_bytes() == b"deleted soon"
    until(browser, lambda d: panel_rows(d) == [], "the trash emptied")
    click(browser, "#panel-close")

    # A folder as it was at a time: edited, deleted and new files since.
    at = math.ceil(time.time())
    wait_until(lambda: time.time() > at, WAIT, "the clock to pass the time to restore")
    change(site, "PUT", "docs/a.txt", b"a edited since", base=a["seq"])
    change(site, "DELETE", "docs/b.txt", base=b["seq"])
    change(site, "PUT", "docs/c.txt", b"made since")
    click(browser, "tr[data-path='docs'] button.folder")
    until(browser, lambda d: sorted(rows(d)) == ["a.txt", "c.txt"], "the docs folder as it is")
    click(browser, "#open-restore")
    until(browser, panel_open, "the dialog")
    browser.execute_script(
        """const at = new Date(arguments[0] * 1000);
        const local = new Date(at - at.getTimezoneOffset() * 60000).toISOString().slice(0, 19);
        document.getElementById('restore-at').value = local;""",
        at,
    )
    click(browser, "#restore-exact")
    click(browser, ".restore-form button[type=submit]")
    until(browser, lambda d: d.find_element(By.ID, "restore-plan").text.count("\n") >= 3, "what changes")
    plan = browser.find_element(By.ID, "restore-plan").text
    assert "Restore docs/a.txt" in plan and "Bring back docs/b.txt" in plan and "Delete docs/c.txt" in plan
    click(browser, "#restore-apply")
    until(browser, lambda d: panel_status(d) == "Restored 3 changes.", "the folder restored")
    assert (account / "docs/a.txt").read_bytes() == b"a as it was"
    assert (account / "docs/b.txt").read_bytes() == b"b as it was"
    assert not (account / "docs/c.txt").exists()
    until(browser, lambda d: sorted(rows(d)) == ["a.txt", "b.txt"], "the folder as it was on the page")

    # The trash of the folder shown, or of the whole box.
    change(site, "DELETE", "notes.txt", base=third["seq"])
    click(browser, "#panel-close")
    click(browser, "#open-trash")
    until(browser, lambda d: [row[0] for row in panel_rows(d)] == ["docs/c.txt"], "the trash of docs")
    click(browser, "#trash-whole")
    until(browser, lambda d: [row[0] for row in panel_rows(d)] == ["notes.txt", "docs/c.txt"], "the whole trash")

    # On a phone, the dialog fits the screen.
    browser.set_window_size(390, 844)
    until(browser, lambda d: d.execute_script("return innerWidth") <= 400, "the phone's width")
    assert browser.execute_script("return document.getElementById('panel').getBoundingClientRect().right <= innerWidth")

    console = [entry["message"] for entry in browser.get_log("browser")]
    assert not [m for m in console if "Content Security Policy" in m or "Uncaught" in m], console
