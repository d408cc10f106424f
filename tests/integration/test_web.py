"""
The web page's server side: sessions and their cookie, CSRF, the static files
and their Content-Security-Policy, a folder as a zip, moves, the one-time
sign-in link. Pure logic first; then the Klein routes in memory (treq's
C{StubTreq}); then a real server on 127.0.0.1, whose uploads stream through
its own request class.
"""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import subprocess
import zipfile
from http.cookiejar import CookieJar, DefaultCookiePolicy
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any, AsyncIterator
from urllib.parse import quote

import pytest
import pytest_twisted
from attrs import define
from treq.client import HTTPClient
from treq.testing import StubTreq
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock, deferLater
from twisted.python.failure import Failure
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.server import Request
from twisted.web.test.requesthelper import DummyChannel, DummyRequest

from boxsync.admin import run as admin
from boxsync.paths import HIDDEN_DIR
from boxsync.wire import EVENT_STREAM, Manifest, encode_manifest
from boxsync.server.auth import ApiKeyAuth, Forbidden, Principal, TokenAuth, Unauthorized
from boxsync.server.hub import Hub
from boxsync.server.index import FileRecord
from boxsync.server.registry import REGISTRY_FILE, TokenRegistry
from boxsync.server.service import BoxsyncService, ServerConfig
from boxsync.server.tokens import load_secret
from boxsync.server.sessions import (
    CSRF_HEADER,
    LINK_CLIENT,
    LINK_SECONDS,
    SESSION_COOKIE,
    SESSION_SECONDS,
    Sessions,
    session_key,
    set_cookie,
)
from boxsync.server.web import _Drain, static_files, zip_member
from tests.helpers import RunningServer, StreamReader, timed

KEY = "web-key-0123456789"
#: What signs the sessions in these tests.
SIGNING = session_key(b"a box secret of 32 bytes........")


def request(method: bytes = b"GET", cookie: str | None = None, **headers: str) -> DummyRequest:
    made = DummyRequest([b""])
    made.method = method
    if cookie is not None:
        made.requestHeaders.addRawHeader(b"Cookie", f"other=1; {SESSION_COOKIE}={cookie}".encode())
    for name, value in headers.items():
        made.requestHeaders.addRawHeader(name.replace("_", "-").encode(), value.encode())
    return made


# ---- pure logic


def test_a_session_stands_for_its_token() -> None:
    clock = Clock()
    sessions = Sessions(clock, ApiKeyAuth(KEY, "alice"), SIGNING)
    session = sessions.sign_in(KEY)
    assert session.principal == Principal("alice")
    assert sessions.principal(request(cookie=session.cookie)) == Principal("alice")
    # Without a cookie, the session has nothing to say: the header decides.
    assert sessions.principal(request()) is None
    with pytest.raises(Forbidden):
        sessions.sign_in("wrong")


def test_a_change_needs_the_csrf_token() -> None:
    sessions = Sessions(Clock(), ApiKeyAuth(KEY), SIGNING)
    session = sessions.sign_in(KEY)
    for method in (b"PUT", b"DELETE", b"POST", b"(no method yet)"):
        with pytest.raises(Forbidden):
            sessions.principal(request(method, session.cookie))
        with pytest.raises(Forbidden):
            sessions.principal(request(method, session.cookie, **{CSRF_HEADER: "guess"}))
        asked = request(method, session.cookie, **{CSRF_HEADER: session.csrf})
        assert sessions.principal(asked) == session.principal
    # What a session is answered with never runs as a page.
    assert b"sandbox" in asked.responseHeaders.getRawHeaders(b"Content-Security-Policy")[0]


@pytest_twisted.ensureDeferred
async def test_a_session_ends() -> None:
    clock = Clock()
    sessions = Sessions(clock, ApiKeyAuth(KEY), SIGNING)
    session = sessions.sign_in(KEY)
    clock.advance(SESSION_SECONDS)
    with pytest.raises(Unauthorized):
        sessions.principal(request(cookie=session.cookie))
    with pytest.raises(Unauthorized):
        sessions.principal(request(cookie="made-up"))
    again = sessions.sign_in(KEY)
    other = sessions.sign_in(KEY)
    await sessions.sign_out(again)
    assert sessions.session(request(cookie=again.cookie)) is None
    # Signing out ends that session only.
    assert sessions.session(request(cookie=other.cookie)) == other


def test_a_session_is_good_on_every_server_of_the_box() -> None:
    """
    A session is its signed cookie: another server of the box (the same
    key) takes it, with the same CSRF token; a server of another box does
    not, nor does any server take a cookie changed by its holder or a
    token in place of a cookie.
    """
    clock = Clock()
    one, two = (Sessions(clock, ApiKeyAuth(KEY, "alice"), SIGNING) for _ in range(2))
    session = one.sign_in(KEY)
    assert two.session(request(cookie=session.cookie)) == session
    asked = request(b"PUT", session.cookie, **{CSRF_HEADER: session.csrf})
    assert two.principal(asked) == Principal("alice")
    elsewhere = Sessions(clock, ApiKeyAuth(KEY, "alice"), session_key(b"another box's secret"))
    assert elsewhere.session(request(cookie=session.cookie)) is None
    head, claims, signature = session.cookie.split(".")
    changed = json.loads(base64.urlsafe_b64decode(claims + "=" * (-len(claims) % 4)))
    changed["acct"] = "mallory"
    forged = base64.urlsafe_b64encode(json.dumps(changed).encode()).decode().rstrip("=")
    assert two.session(request(cookie=f"{head}.{forged}.{signature}")) is None
    assert two.session(request(cookie=session.cookie[:-2])) is None
    assert two.session(request(cookie=session.cookie + "x" * 1024)) is None


@pytest_twisted.ensureDeferred
async def test_a_sign_out_ends_the_session_on_every_server(tmp_path: Path) -> None:
    """
    Two servers of one registry: a session signed out on one is recorded
    there, and the other refuses it once it has read the registry.
    """
    clock = Clock()
    clock.advance(1_000_000)
    registries = [TokenRegistry(tmp_path / REGISTRY_FILE) for _ in range(2)]
    ended: set[str] = set()

    async def end(session_id: str, until: int, now: int) -> None:
        registries[0].end_session(session_id, until, now)

    try:
        one = Sessions(clock, ApiKeyAuth(KEY), SIGNING, end=end)
        two = Sessions(clock, ApiKeyAuth(KEY), SIGNING, ended=ended)
        session, other = one.sign_in(KEY), one.sign_in(KEY)
        await one.sign_out(session)
        assert two.session(request(cookie=session.cookie)) == session
        ended.update(registries[1].ended_sessions(int(clock.seconds())))
        assert two.session(request(cookie=session.cookie)) is None
        assert two.session(request(cookie=other.cookie)) == other
        # Once it would have ended anyway, the registry forgets it.
        clock.advance(SESSION_SECONDS + 1)
        third = one.sign_in(KEY)
        await one.sign_out(third)
        assert registries[1].ended_sessions(0) == {third.session_id}
    finally:
        for registry in registries:
            registry.close()


@pytest.mark.parametrize("tls", [True, False])
def test_secure_over_tls(tls: bool) -> None:
    made = Request(DummyChannel())
    made.isSecure = lambda: tls  # type: ignore[method-assign]
    set_cookie(made, "value", 60)
    (cookie,) = made.cookies
    assert cookie.endswith(b"; HttpOnly; SameSite=strict")
    assert (b"; Secure" in cookie) == tls


def _token_auth(tmp_path: Path, clock: Clock, revoked: set[str]) -> tuple[TokenAuth, Path]:
    box = tmp_path / "box"
    box.mkdir()
    (box / HIDDEN_DIR).mkdir()
    auth = TokenAuth(load_secret(box / HIDDEN_DIR, create=True), clock, revoked, lambda account: True)
    return auth, box


def _mint(box: Path, *argv: str, now: float = 1_000_000) -> str:
    out, err = io.StringIO(), io.StringIO()
    assert admin(list(argv) + ["--box", str(box)], out, err, environ={}, now=lambda: now) == 0, err.getvalue()
    return out.getvalue().splitlines()[-1]


@pytest_twisted.ensureDeferred
async def test_a_link_signs_in_once_whichever_server_it_reaches(tmp_path: Path) -> None:
    """
    Two servers of one registry (each its own L{Sessions}, as behind a
    balancer): a link used on one is refused by the other, through the
    registry; a link never used signs in on either.
    """
    clock = Clock()
    clock.advance(1_000_000)
    auth, box = _token_auth(tmp_path, clock, set())
    _mint(box, "token", "--account", "alice", "--client", "laptop")
    links = [
        _mint(box, "web-link", "--account", "alice", "--server", "https://box.example.org").split("#link=", 1)[1]
        for _ in range(2)
    ]
    registries = [TokenRegistry(box / HIDDEN_DIR / REGISTRY_FILE) for _ in range(2)]

    def first_use(registry: TokenRegistry) -> Any:
        async def use(token_id: str, until: int, now: int) -> bool:
            return registry.use_once(token_id, until, now)

        return use

    try:
        one, two = (Sessions(clock, auth, SIGNING, first_use=first_use(registry)) for registry in registries)
        assert (await one.open(links[0])).principal.client == LINK_CLIENT
        with pytest.raises(Forbidden):
            await two.open(links[0])
        assert (await two.open(links[1])).principal.account == "alice"
        with pytest.raises(Forbidden):
            await one.open(links[1])
    finally:
        for registry in registries:
            registry.close()


def test_revoking_the_token_ends_its_sessions(tmp_path: Path) -> None:
    clock = Clock()
    clock.advance(1_000_000)
    revoked: set[str] = set()
    auth, box = _token_auth(tmp_path, clock, revoked)
    token = _mint(box, "token", "--account", "alice", "--client", "laptop", "--expires", "1h")
    sessions = Sessions(clock, auth, SIGNING, revoked)
    session = sessions.sign_in(token)
    assert session.principal.client == "laptop"
    # A session lasts no longer than its token.
    assert session.expires == clock.seconds() + 3600
    revoked.add(session.principal.token)
    with pytest.raises(Unauthorized):
        sessions.principal(request(cookie=session.cookie))


def test_a_link_signs_in_once_within_minutes(tmp_path: Path) -> None:
    clock = Clock()
    clock.advance(1_000_000)
    auth, box = _token_auth(tmp_path, clock, set())
    _mint(box, "token", "--account", "alice", "--client", "laptop")
    link = _mint(box, "web-link", "--account", "alice", "--server", "https://box.example.org:8443/")
    assert link.startswith("https://box.example.org:8443/#link=")
    token = link.split("#link=", 1)[1]
    sessions = Sessions(clock, auth, SIGNING)
    session = sessions.sign_in(token)
    assert session.principal.client == LINK_CLIENT and session.principal.account == "alice"
    # The session outlives the link; the link does not work twice.
    assert session.expires == clock.seconds() + SESSION_SECONDS
    with pytest.raises(Forbidden):
        sessions.sign_in(token)
    clock.advance(LINK_SECONDS)
    with pytest.raises(Forbidden):
        sessions.sign_in(token)
    registry = TokenRegistry(box / HIDDEN_DIR / REGISTRY_FILE)
    try:
        assert sorted(r.client for r in registry.tokens("alice")) == ["laptop", LINK_CLIENT]
    finally:
        registry.close()
    link2 = _mint(box, "web-link", "--account", "alice", "--server", "https://box.example.org:8443/", now=1_000_000)
    clock.advance(1)  # past its expiry
    with pytest.raises(Forbidden):
        sessions.sign_in(link2.split("#link=", 1)[1])


@pytest.mark.parametrize(
    "argv, error",
    [
        (["--account", "bob", "--server", "https://x.org"], "there is no account 'bob'"),
        (["--account", "alice", "--server", "box.example.org"], "is not the server's address"),
    ],
)
def test_web_link_errors(tmp_path: Path, argv: list[str], error: str) -> None:
    box = tmp_path / "box"
    _mint(box, "token", "--account", "alice", "--client", "laptop")
    out, err = io.StringIO(), io.StringIO()
    assert admin(["web-link", "--box", str(box), *argv], out, err, environ={}) == 1
    assert error in err.getvalue() and out.getvalue() == ""


def test_the_static_files_are_in_the_package() -> None:
    files = static_files()
    assert {"index.html", "app.js", "model.js", "style.css", "icon.svg"} <= set(files)
    page = files["index.html"][0].decode()
    # Everything the page loads is one of them, from this server.
    for url in re.findall(r'<(?:script|link|img)\b[^>]*\b(?:src|href)="([^"]*)"', page):
        assert url.startswith("/static/") and url[len("/static/"):] in files, url
    # Nothing inline that a strict Content-Security-Policy would block.
    assert not re.search(r"<script(?![^>]*\bsrc=)", page)
    assert not re.search(r"\son[a-z]+=|\sstyle=", page)
    for name, (content, _) in files.items():
        if name.endswith(".js"):
            assert b"innerHTML" not in content and b"insertAdjacentHTML" not in content, name


@define
class _Listener:
    stream_id: str
    client: str


def test_the_hub_knows_when_each_client_was_last_connected() -> None:
    clock = Clock()
    hub = Hub(clock)
    assert hub.last_seen("alice") == {}
    clock.advance(10)
    remove = hub.add("alice", _Listener("s1", "laptop"), "t1")
    hub.add("alice", _Listener("s2", "phone"), "t2")
    hub.add("bob", _Listener("s3", "desktop"), "t3")
    clock.advance(5)
    remove()
    clock.advance(5)
    assert hub.last_seen("alice") == {"laptop": 15, "phone": 20}
    assert hub.last_seen("bob") == {"desktop": 20}


def test_a_zip_waits_for_the_connection() -> None:
    drain = _Drain()
    waiting = Deferred.fromCoroutine(drain.wait())
    assert waiting.called  # not paused: straight on
    drain.pauseProducing()
    drain.pauseProducing()
    waiting = Deferred.fromCoroutine(drain.wait())
    assert not waiting.called
    drain.resumeProducing()
    assert waiting.called
    drain.pauseProducing()
    waiting = Deferred.fromCoroutine(drain.wait())
    drain.stopProducing()  # the connection is gone: the route's cancellation ends it
    assert waiting.called


def test_zip_members_are_named_from_the_folder() -> None:
    record = FileRecord("docs/reports/a.pdf", 3, "0" * 64, 1_700_000_000 * 10**9, 4)
    assert zip_member(record, "docs/reports").filename == "reports/a.pdf"
    assert zip_member(record, "docs").filename == "docs/reports/a.pdf"
    assert zip_member(record, "").filename == "docs/reports/a.pdf"
    old = FileRecord("a", 1, "0" * 64, 0, 1)
    assert zip_member(old, "").date_time == (1980, 1, 1, 0, 0, 0)


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed (Debian's nodejs)")
def test_the_page_logic() -> None:
    """
    The page's model (static/model.js) by its own tests, under node.
    """
    tests = Path(__file__).with_name("web_model.test.mjs")
    result = subprocess.run(["node", "--test", str(tests)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


# ---- the routes in memory


@pytest_twisted.async_yield_fixture
async def service(tmp_path: Path, reactor: Any) -> AsyncIterator[BoxsyncService]:
    box = tmp_path / "box"
    (box / "docs").mkdir(parents=True)
    (box / "docs/a.txt").write_text("first")
    (box / "docs/<img src=x onerror=alert(1)>.txt").write_text("second")
    (box / "top.txt").write_text("third")
    (box / "docs/empty").mkdir()
    # No listener: the tests reach its resource in memory.
    running = BoxsyncService(reactor, ServerConfig(box, [], auth=ApiKeyAuth(KEY), status_seconds=0))
    running.startService()
    await timed(running.ready, reactor)
    try:
        yield running
    finally:
        await running.stopService()


async def settle(stub: StubTreq, d: Deferred[Any], reactor: Any) -> Any:
    """
    What C{d} fires with, once the in-memory connection has carried it
    (routes answer after the index and the disk, in other threads).
    """
    outcome: list[Any] = []
    d.addBoth(lambda result: outcome.append(result))
    deadline = reactor.seconds() + 10
    while not outcome:
        assert reactor.seconds() < deadline, "no answer within 10 s"
        stub.flush()
        await deferLater(reactor, 0.005, lambda: None)
    if isinstance(outcome[0], Failure):
        outcome[0].raiseException()
    return outcome[0]


async def call(stub: StubTreq, reactor: Any, method: str, url: str, **kwargs: Any) -> tuple[Any, bytes]:
    response = await settle(stub, stub.request(method, "http://box.test" + url, **kwargs), reactor)
    body = await settle(stub, response.content(), reactor)
    return response, body


async def signed_in(stub: StubTreq, reactor: Any) -> dict[str, str]:
    """
    Sign in; return the headers of later requests (the cookie, the CSRF
    token).
    """
    response, body = await call(
        stub, reactor, "POST", "/web/session", data=json.dumps({"token": KEY}),
        headers={"Content-Type": "application/json"},
    )
    assert response.code == 200, body
    (raw,) = response.headers.getRawHeaders("Set-Cookie")
    cookie = SimpleCookie(raw)[SESSION_COOKIE]
    assert cookie["httponly"] and cookie["samesite"].lower() == "strict" and cookie["path"] == "/"
    assert not cookie["secure"]  # not over plain HTTP; see test_secure_over_tls
    return {"Cookie": f"{SESSION_COOKIE}={cookie.value}", CSRF_HEADER: json.loads(body)["csrf"]}


@pytest_twisted.ensureDeferred
async def test_the_page_under_a_strict_policy(service: BoxsyncService, reactor: Any) -> None:
    stub = StubTreq(service.app.resource())
    response, body = await call(stub, reactor, "GET", "/")
    assert response.code == 200 and b'<script type="module" src="/static/app.js">' in body
    policy = response.headers.getRawHeaders("Content-Security-Policy")[0]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy and "frame-ancestors 'none'" in policy
    assert response.headers.getRawHeaders("X-Content-Type-Options") == ["nosniff"]
    response, body = await call(stub, reactor, "GET", "/static/model.js")
    assert response.headers.getRawHeaders("Content-Type")[0].startswith("text/javascript")
    for missing in ("/static/nope.js", "/static/..%2Fweb.py", "/static/"):
        response, _ = await call(stub, reactor, "GET", missing)
        assert response.code == 404, missing


@pytest_twisted.ensureDeferred
async def test_signing_in_and_out(service: BoxsyncService, reactor: Any) -> None:
    stub = StubTreq(service.app.resource())
    response, _ = await call(stub, reactor, "GET", "/web/session")
    assert response.code == 401
    headers = await signed_in(stub, reactor)
    response, body = await call(stub, reactor, "GET", "/web/session", headers=headers)
    who = json.loads(body)
    assert response.code == 200 and who["account"] == "default" and who["seq"] == 4  # three files and an empty folder
    # The existing routes take the cookie instead of the Authorization header.
    response, body = await call(stub, reactor, "GET", "/files", headers={"Cookie": headers["Cookie"]})
    assert sorted(r["path"] for r in json.loads(body)) == [
        "docs/<img src=x onerror=alert(1)>.txt", "docs/a.txt", "top.txt"
    ]
    # Signing out needs the CSRF token too, then the cookie opens nothing.
    response, _ = await call(stub, reactor, "DELETE", "/web/session", headers={"Cookie": headers["Cookie"]})
    assert response.code == 403
    response, _ = await call(stub, reactor, "DELETE", "/web/session", headers=headers)
    assert response.code == 200
    assert "Max-Age=0" in response.headers.getRawHeaders("Set-Cookie")[0]
    response, _ = await call(stub, reactor, "GET", "/files", headers=headers)
    assert response.code == 401


@pytest_twisted.ensureDeferred
async def test_sign_in_only_from_the_page(service: BoxsyncService, reactor: Any) -> None:
    stub = StubTreq(service.app.resource())
    json_type = {"Content-Type": "application/json"}
    attempts = [
        # A form of another site can post this; a script there cannot send JSON.
        ({"Content-Type": "application/x-www-form-urlencoded"}, f"token={KEY}", 400),
        ({**json_type, "Origin": "https://evil.example"}, json.dumps({"token": KEY}), 403),
        (json_type, json.dumps({"token": "wrong"}), 403),
        (json_type, json.dumps({}), 400),
        ({**json_type, "Origin": "null"}, json.dumps({"token": KEY}), 403),
        ({**json_type, "Origin": "http://box.test"}, json.dumps({"token": KEY}), 200),
        # Behind a proxy that ends TLS, or one that names the host it was asked for.
        ({**json_type, "Origin": "https://box.test"}, json.dumps({"token": KEY}), 200),
        (
            {**json_type, "Origin": "https://box.example.org", "X-Forwarded-Host": "box.example.org"},
            json.dumps({"token": KEY}),
            200,
        ),
    ]
    for headers, data, status in attempts:
        response, body = await call(stub, reactor, "POST", "/web/session", data=data, headers=headers)
        assert response.code == status, (headers, body)


@pytest_twisted.ensureDeferred
async def test_a_folder_as_a_zip(service: BoxsyncService, reactor: Any) -> None:
    stub = StubTreq(service.app.resource())
    headers = await signed_in(stub, reactor)
    response, body = await call(stub, reactor, "GET", "/web/zip/docs", headers=headers)
    assert response.code == 200 and response.headers.getRawHeaders("Content-Type") == ["application/zip"]
    assert 'filename="docs.zip"' in response.headers.getRawHeaders("Content-Disposition")[0]
    archive = zipfile.ZipFile(io.BytesIO(body))
    assert archive.testzip() is None
    assert {name: archive.read(name) for name in archive.namelist()} == {
        "docs/a.txt": b"first", "docs/<img src=x onerror=alert(1)>.txt": b"second", "docs/empty/": b""
    }
    assert archive.getinfo("docs/empty/").is_dir()
    response, body = await call(stub, reactor, "GET", "/web/zip", headers=headers)
    assert sorted(zipfile.ZipFile(io.BytesIO(body)).namelist()) == [
        "docs/<img src=x onerror=alert(1)>.txt", "docs/a.txt", "docs/empty/", "top.txt"
    ]
    for missing in ("/web/zip/nothing", "/web/zip/do"):
        response, _ = await call(stub, reactor, "GET", missing, headers=headers)
        assert response.code == 404


@pytest_twisted.ensureDeferred
async def test_records_and_downloads(service: BoxsyncService, reactor: Any) -> None:
    stub = StubTreq(service.app.resource())
    headers = await signed_in(stub, reactor)
    name = "docs/<img src=x onerror=alert(1)>.txt"
    quoted = "/".join(quote(part, safe="") for part in name.split("/"))
    response, body = await call(stub, reactor, "GET", f"/web/record/{quoted}", headers=headers)
    assert json.loads(body)["path"] == name and json.loads(body)["size"] == 6
    response, body = await call(stub, reactor, "GET", f"/web/download/{quoted}", headers=headers)
    assert body == b"second"
    disposition = response.headers.getRawHeaders("Content-Disposition")[0]
    assert disposition.startswith('attachment; filename="<img src=x onerror=alert(1)>.txt"')
    assert "sandbox" in response.headers.getRawHeaders("Content-Security-Policy")[0]
    response, _ = await call(stub, reactor, "GET", "/web/record/docs", headers=headers)
    assert response.code == 404


# ---- a real server


@pytest_twisted.async_yield_fixture
async def http(reactor: Any) -> AsyncIterator[HTTPClient]:
    """
    A client that keeps no cookies: each request sends just what the test
    gives it.
    """
    pool = HTTPConnectionPool(reactor, persistent=True)
    jar = CookieJar(DefaultCookiePolicy(allowed_domains=[]))
    try:
        yield HTTPClient(Agent(reactor, pool=pool), cookiejar=jar)
    finally:
        await pool.closeCachedConnections()


async def _sign_in(http: Any, server: RunningServer) -> dict[str, str]:
    response = await timed(
        http.post(f"{server.url}/web/session", json={"token": server.key}), server.reactor
    )
    assert response.code == 200
    csrf = (await response.json())["csrf"]
    cookie = SimpleCookie(response.headers.getRawHeaders("Set-Cookie")[0])[SESSION_COOKIE].value
    return {"Cookie": f"{SESSION_COOKIE}={cookie}", CSRF_HEADER: csrf}


@pytest_twisted.ensureDeferred
async def test_uploads_with_thecookie(server: RunningServer, http: Any) -> None:
    headers = await _sign_in(http, server)
    url = server.file_url("new/one.txt")
    # Refused before the body is stored: no CSRF token, no cookie.
    for sent in ({"Cookie": headers["Cookie"]}, {CSRF_HEADER: headers[CSRF_HEADER]}):
        response = await timed(http.put(url, data=b"x" * 100_000, headers=sent), server.reactor)
        assert response.code in (401, 403), await response.text()
        await response.content()
    assert not (server.box / "new").exists()
    response = await timed(http.put(url, data=b"hello", headers={**headers, "X-Boxsync-Client": "web"}), server.reactor)
    assert response.code == 201, await response.text()
    assert (server.box / "new/one.txt").read_bytes() == b"hello"
    listed = await (await timed(http.get(f"{server.url}/files", headers=headers), server.reactor)).json()
    assert [(r["path"], r["origin"]) for r in listed] == [("new/one.txt", "web")]


@pytest_twisted.ensureDeferred
async def test_the_event_stream_with_thecookie(server: RunningServer, http: Any) -> None:
    headers = await _sign_in(http, server)
    response = await timed(
        http.post(
            f"{server.url}/sync",
            data=encode_manifest(Manifest("web", cursor=0)),
            headers={**headers, "Accept": EVENT_STREAM},
            unbuffered=True,
        ),
        server.reactor,
    )
    assert response.code == 200
    reader = StreamReader(server.reactor)
    response.deliverBody(reader)
    try:
        await reader.ready()
        response = await timed(
            http.put(server.file_url("a.txt"), data=b"from a client", headers=server.headers()), server.reactor
        )
        assert response.code == 201
        events = await reader.wait(lambda events: any(getattr(e, "path", "") == "a.txt" for e in events))
        assert events[-1].name == "download"
        answer = await (await timed(http.get(f"{server.url}/web/clients", headers=headers), server.reactor)).json()
        assert [(c["client"], c["streams"]) for c in answer["clients"]] == [("web", 1)]
        assert 0 <= answer["now"] - answer["clients"][0]["last_seen"] < 5
    finally:
        reader.close()


@pytest_twisted.ensureDeferred
async def test_moving_files_and_folders(server: RunningServer, http: Any) -> None:
    auth = server.headers()
    for path in ("docs/a.txt", "docs/sub/b.txt", "other.txt"):
        response = await timed(http.put(server.file_url(path), data=path.encode(), headers=auth), server.reactor)
        assert response.code == 201
    # An empty folder synced as one of its own moves with its folder.
    folder = server.file_url("docs/empty").replace("/files/", "/folders/", 1)
    response = await timed(http.put(folder, headers={**auth, "X-Boxsync-Base": "0"}), server.reactor)
    assert response.code == 201
    await response.text()
    headers = await _sign_in(http, server)

    async def move(source: str, target: str, sent: dict[str, str] = headers) -> int:
        response = await timed(
            http.post(f"{server.url}/web/move", json={"from": source, "to": target}, headers=sent), server.reactor
        )
        await response.content()
        return int(response.code)

    assert await move("docs", "papers/docs", {"Cookie": headers["Cookie"]}) == 403
    assert await move("docs", "papers/docs") == 200
    assert await move("other.txt", "renamed.txt") == 200
    assert await move("renamed.txt", "papers/docs/a.txt") == 412  # something is there
    assert await move("papers", "papers/inside") == 400
    assert await move("nothing", "x") == 404
    # Paths are checked as for any change; a file cannot go where a folder is
    # or below a file.
    bad = [
        ("", "x"),
        ("renamed.txt", ""),
        ("renamed.txt", "../x"),
        ("renamed.txt", "papers"),
        ("renamed.txt", "renamed.txt/x"),
    ]
    for source, target in bad:
        assert await move(source, target) == 400, (source, target)
    for body in ({"from": 1, "to": "x"}, {"to": "x"}, [], "text"):
        response = await timed(http.post(f"{server.url}/web/move", json=body, headers=headers), server.reactor)
        assert response.code == 400, await response.text()
    found = sorted(p.relative_to(server.box).as_posix() for p in server.box.rglob("*") if p.is_file() and HIDDEN_DIR not in p.parts)
    assert found == ["papers/docs/a.txt", "papers/docs/sub/b.txt", "renamed.txt"]
    assert (server.box / "papers/docs/sub/b.txt").read_text() == "docs/sub/b.txt"
    # The file is linked, not copied: its only other name is the version
    # its old path had, kept in the history.
    moved = (server.box / "papers/docs/a.txt").stat()
    kept = [p.stat() for p in (server.box / HIDDEN_DIR / "versions").iterdir()]
    assert moved.st_nlink == 2 and [k.st_ino for k in kept].count(moved.st_ino) == 1
    assert list((server.box / HIDDEN_DIR / "staging").iterdir()) == []
    listed = await (await timed(http.get(f"{server.url}/files", headers=auth), server.reactor)).json()
    assert [r["path"] for r in listed] == found
    assert (server.box / "papers/docs/empty").is_dir() and not (server.box / "docs").exists()
    index = server.service.index  # type: ignore[union-attr]
    moved, left = await index.get("default", "papers/docs/empty"), await index.get("default", "docs/empty")
    assert moved.folder and not moved.deleted and left.folder and left.deleted


@pytest_twisted.ensureDeferred
async def test_restoring_with_thecookie(server: RunningServer, http: Any) -> None:
    auth = server.headers()
    for content in (b"first", b"second"):
        response = await timed(http.put(server.file_url("a.txt"), data=content, headers=auth), server.reactor)
        assert response.code == 201
        live = await response.json()
    headers = await _sign_in(http, server)
    # Reading the history takes the cookie alone, as any GET.
    response = await timed(http.get(f"{server.url}/history/a.txt", headers={"Cookie": headers["Cookie"]}), server.reactor)
    versions = (await response.json())["versions"]
    assert [v["size"] for v in versions] == [6, 5]
    first = versions[1]["seq"]

    async def restore(sent: dict[str, str], base: int) -> int:
        response = await timed(
            http.post(f"{server.url}/restore", json={"path": "a.txt", "seq": first, "base": base}, headers=sent),
            server.reactor,
        )
        await response.content()
        return int(response.code)

    # A cookie without the page's CSRF proof (what another site could make a
    # browser send) restores nothing, nor does a guessed proof.
    assert await restore({"Cookie": headers["Cookie"]}, live["seq"]) == 403
    assert await restore({"Cookie": headers["Cookie"], CSRF_HEADER: "guess"}, live["seq"]) == 403
    assert (server.box / "a.txt").read_bytes() == b"second"
    # From a base the file moved on from: refused, nothing overwritten.
    assert await restore(headers, live["seq"] - 1) == 412
    assert (server.box / "a.txt").read_bytes() == b"second"
    assert await restore({**headers, "X-Boxsync-Client": "web"}, live["seq"]) == 201
    assert (server.box / "a.txt").read_bytes() == b"first"
    listed = await (await timed(http.get(f"{server.url}/files", headers=auth), server.reactor)).json()
    assert [(r["path"], r["origin"]) for r in listed] == [("a.txt", "web")]


@pytest_twisted.ensureDeferred
async def test_a_restart_signs_nobody_in_or_out(server: RunningServer, http: Any) -> None:
    """
    A session outlives a restart of its server; a session signed out stays
    out after one (its sign-out is in the registry, not in memory).
    """
    kept, ended = await _sign_in(http, server), await _sign_in(http, server)
    response = await timed(http.delete(f"{server.url}/web/session", headers=ended), server.reactor)
    assert response.code == 200
    await response.content()
    await server.restart()
    for headers, status in ((kept, 200), (ended, 401)):
        response = await timed(http.get(f"{server.url}/web/session", headers=headers), server.reactor)
        assert response.code == status
        await response.content()
