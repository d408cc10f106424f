"""
``docs/openapi.yaml`` against a real server: schemathesis generates requests
for every operation from the description and checks that no answer is a
5xx and that every answer (status, content type, headers, body) is one the
description allows.

The server runs in this process, on a loopback port; schemathesis, which
calls it with blocking ``requests``, runs in a thread so the reactor keeps
serving. Event streams are read up to a few events, then closed.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, AsyncIterator

import pytest
import pytest_twisted
import schemathesis
from schemathesis import GenerationMode
import yaml
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from twisted.internet.threads import deferToThread

from boxsync.server import app
from boxsync.wire import BATCH, EVENT_STREAM
from tests.conftest import KEY
from tests.helpers import RunningServer, put, running_server
from tests.system.test_properties import record

SPEC = Path(__file__).parents[2] / "docs" / "openapi.yaml"

# A batch body is bytes, as an upload's is: what schemathesis makes of it is
# mostly malformed, which is what the server must refuse cleanly.
schemathesis.serializer.alias(BATCH, "application/octet-stream")
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


def load() -> Any:
    schema = schemathesis.openapi.from_path(str(SPEC))
    # An event stream is read up to this many events (hello and the first
    # of the plan), then closed: it would never end by itself.
    schema.config.max_stream_events = 2
    return schema


def operations() -> list[Any]:
    return [result.ok() for result in load().get_all_operations()]


def test_the_description_covers_every_route() -> None:
    """
    Every route of the server is described, and nothing else.
    """
    from boxsync.server.app import BoxsyncApp
    from boxsync.server.auth import ApiKeyAuth
    from boxsync.server.history import HistoryRoutes
    from boxsync.server.legacy import LegacyAdapter

    app = BoxsyncApp(None, ApiKeyAuth(None), lambda account: None, None, legacy=LegacyAdapter(None, None, clock=None))  # type: ignore[arg-type]
    HistoryRoutes(app).install(app.app)
    routes = set()
    for rule in app.app.url_map.iter_rules():
        path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", str(rule.rule))
        for method in rule.methods or ():
            # werkzeug answers HEAD (and OPTIONS) wherever there is GET.
            if method not in ("OPTIONS", "HEAD"):
                routes.add((method, path))
    described = {(op.method.upper(), op.path) for op in operations() if op.method.upper() != "HEAD"}
    assert described == routes
    document = yaml.safe_load(SPEC.read_text())
    assert document["openapi"].startswith("3.1")


@pytest_twisted.async_yield_fixture
async def live(
    tmp_path: Path, reactor: Any, http: Any, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[RunningServer]:
    # A block asked for with a wait is waited for a moment only: the cases
    # generated ask for blocks that never come.
    monkeypatch.setattr(app, "MAX_BLOCK_WAIT", 0.01)
    async with running_server(reactor, tmp_path / "box", KEY, max_upload=2**20) as running:
        # Something to find for the generated paths that happen to match.
        for path in ("0", "a", "b/0"):
            await put(http, running, path, b"some bytes")
        yield running


def run(operation: Any, url: str, examples: int, statuses: dict[int, int]) -> int:
    """
    Call the server with C{examples} cases generated for C{operation} and
    check every answer; return how many cases ran, and count the statuses
    in C{statuses}.
    """
    ran = 0
    headers = {"Authorization": f"Bearer {KEY}"}
    if operation.path == "/sync":
        # Without it, the legacy stream: lines, no events, held open.
        headers["Accept"] = EVENT_STREAM

    # Cases that follow the description, and cases that break it.
    @given(
        operation.as_strategy(generation_mode=GenerationMode.POSITIVE)
        | operation.as_strategy(generation_mode=GenerationMode.NEGATIVE)
    )
    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def test(case: Any) -> None:
        nonlocal ran
        ran += 1
        response = case.call(base_url=url, headers=headers, timeout=10)
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
        case.validate_response(response, checks=CHECKS, headers=headers)

    test()
    return ran


@pytest.mark.parametrize(
    "examples", [25, pytest.param(150, marks=pytest.mark.slow)], ids=["quick", "big"]
)
@pytest_twisted.ensureDeferred
async def test_schemathesis(live: RunningServer, examples: int) -> None:
    counts: dict[str, int] = {}
    statuses: dict[int, int] = {}
    for operation in operations():
        counts[operation.label] = await deferToThread(run, operation, live.url, examples, statuses)
    record("schemathesis", sum(counts.values()), operations=len(counts))
    print(json.dumps(counts), json.dumps(statuses))
    assert len(counts) == 26
    assert all(count >= 1 for count in counts.values()), json.dumps(counts)
    # The run reached past the checks of the input, too.
    assert {200, 201, 400, 404} <= set(statuses), statuses
    # Nothing half done: the staging area is empty.
    assert list((live.box / ".boxsync" / "staging").iterdir()) == []
