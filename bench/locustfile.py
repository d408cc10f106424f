"""
The Locust users of the load test (``bench/load.py`` runs this file in a
Locust process of its own: Locust monkey-patches the standard library with
gevent, which must never happen in the benchmark's or the tests' process).

Each user is one simulated client: it holds an event stream (``POST /sync``,
read in a greenlet of its own) for as long as it runs, and in its tasks
uploads small files under paths of its own, downloads files its stream told
it about (its own or other users') and checks their sha256, and lists the
box. Besides the HTTP requests Locust records, the stream reports, as
request type ``SSE``:

  - ``POST /sync until ready``: from sending the manifest to the ``ready``
    event (the plan of a new, empty client: every file in the box);
  - ``event: upload -> stream``: from the start of another user's upload to
    its ``download`` event arriving on this stream, once per event;
  - failures: a stream that fails or ends, a malformed or unexpected event,
    an event whose sha256 is not the one uploaded, a user's own upload
    echoed back on its stream.

By hand, from the top of the source tree (``python -m bench load`` does this
with a server of its own):

    PYTHONPATH=. locust -f bench/locustfile.py --headless -u 10 -r 5 -t 10s \\
        --host http://127.0.0.1:8080 --api-key KEY
"""

from __future__ import annotations

import collections
import hashlib
import itertools
import json
import os
import random
import time
from typing import Any
from urllib.parse import quote

import gevent
import gevent.event
import requests
from locust import HttpUser, between, events, task

from boxsync.wire import (
    BASE_HEADER,
    CLIENT_HEADER,
    EVENT_STREAM,
    SHA256_HEADER,
    STREAM_HEADER,
    Download,
    Hello,
    ProtocolError,
    Ready,
    SSEParser,
    decode_event,
)

from bench.load import EVENT, READY, STREAM, STREAM_FAILED, UPLOAD

#: Paths are unique to this Locust run, so it may share a box with others.
RUN = os.urandom(4).hex()
#: Each upload of this run: path to (when its upload began, its sha256).
UPLOADS: dict[str, tuple[float, str]] = {}
#: File sizes, in bytes, of the uploads.
SIZES = (1024, 16 * 1024)
#: How long a new stream may take to reach ``ready``, in seconds.
READY_TIMEOUT = 30.0
_numbers = itertools.count(1)


@events.init_command_line_parser.add_listener
def _options(parser: Any) -> None:
    parser.add_argument(
        "--api-key", env_var="BOXSYNC_API_KEY", default="", help="the server's API key"
    )


class SyncClient(HttpUser):
    """
    One simulated boxsync client with its event stream open.
    """

    wait_time = between(0.5, 1.5)

    def on_start(self) -> None:
        self.number = next(_numbers)
        self.client_name = f"load{self.number}"
        #: Where this user uploads (only it does).
        self.folder = f"load-{RUN}/{self.client_name}/"
        self.uploaded = 0
        self.stream_id = ""
        self.stopping = False
        self.known: collections.deque[tuple[str, str]] = collections.deque(maxlen=1000)
        self.auth = {"Authorization": f"Bearer {self.environment.parsed_options.api_key}"}
        self.client.headers.update(self.auth)
        self.client.headers[CLIENT_HEADER] = self.client_name
        self.ready = gevent.event.Event()
        self.opened = time.perf_counter()
        self.stream = gevent.spawn(self._hold_stream)
        if not self.ready.wait(READY_TIMEOUT):
            self._failed(READY, f"no ready event in {READY_TIMEOUT:.0f} s")
        # As a client that joins with a file of its own: the first upload of
        # every user is not left to chance, and the last user to start
        # uploads with every other stream open, whatever the tasks drawn.
        self.upload()

    def on_stop(self) -> None:
        self.stopping = True
        self.stream.kill(block=False)

    def _record(self, name: str, seconds: float, exception: Exception | None = None) -> None:
        self.environment.events.request.fire(
            request_type=STREAM,
            name=name,
            response_time=seconds * 1000,
            response_length=0,
            exception=exception,
            context={},
        )

    def _failed(self, name: str, reason: str) -> None:
        self._record(name, 0.0, RuntimeError(reason))

    def _hold_stream(self) -> None:
        """
        Open this user's event stream and read it until the user stops.
        """
        manifest = json.dumps({"client": self.client_name, "cursor": 0, "files": [], "deleted": []})
        headers = {**self.auth, CLIENT_HEADER: self.client_name, "Accept": EVENT_STREAM,
                   "Content-Type": "application/json"}
        try:
            with requests.Session() as session, session.post(
                f"{self.host}/sync", data=manifest, headers=headers, stream=True, timeout=(10, 60)
            ) as response:
                if response.status_code != 200:
                    raise RuntimeError(f"POST /sync answered {response.status_code}")
                parser = SSEParser()
                for chunk in response.iter_content(chunk_size=None):
                    for message in parser.feed(chunk):
                        self._on_event(decode_event(message), time.perf_counter())
        except (requests.RequestException, ProtocolError, RuntimeError) as e:
            if not self.stopping:
                self._record(STREAM_FAILED, 0.0, e)
            return
        finally:
            # A stream that failed will not get ready: on_start need not wait.
            self.ready.set()
        if not self.stopping:
            self._failed(STREAM_FAILED, "the server ended the event stream")

    def _on_event(self, event: object, now: float) -> None:
        if isinstance(event, Hello):
            self.stream_id = event.stream
        elif isinstance(event, Ready):
            self._record(READY, now - self.opened)
            self.ready.set()
        elif isinstance(event, Download):
            began, sha256 = UPLOADS.get(event.path, (None, event.sha256))
            if event.path.startswith(self.folder) and self.ready.is_set():
                self._failed(EVENT, f"{event.path}: this stream's own upload came back on it")
            elif sha256 != event.sha256:
                self._failed(EVENT, f"{event.path}: sha256 {event.sha256}, uploaded {sha256}")
            elif began is not None and self.ready.is_set():
                self._record(EVENT, now - began)
            self.known.append((event.path, event.sha256))
        else:
            self._failed(STREAM_FAILED, f"unexpected event {event!r}")

    @task(2)
    def upload(self) -> None:
        body = os.urandom(random.randint(*SIZES))
        sha256 = hashlib.sha256(body).hexdigest()
        self.uploaded += 1
        path = f"{self.folder}{self.uploaded}.bin"
        headers = {SHA256_HEADER: sha256, BASE_HEADER: "0"}
        if self.stream_id:
            headers[STREAM_HEADER] = self.stream_id
        UPLOADS[path] = (time.perf_counter(), sha256)
        with self.client.put(
            "/files/" + quote(path), data=body, headers=headers, name=UPLOAD,
            catch_response=True,
        ) as response:
            if response.status_code != 201:
                response.failure(f"PUT answered {response.status_code}: {response.text[:200]}")
            elif response.json().get("sha256") != sha256:
                response.failure(f"PUT committed {response.text[:200]}, not sha256 {sha256}")
            else:
                self.known.append((path, sha256))

    @task(3)
    def download(self) -> None:
        if not self.known:
            return
        path, sha256 = random.choice(self.known)
        with self.client.get(
            "/files/" + quote(path), name="GET /files/{path}", catch_response=True
        ) as response:
            if response.status_code != 200:
                response.failure(f"GET answered {response.status_code}")
            elif hashlib.sha256(response.content).hexdigest() != sha256:
                response.failure(f"{path}: the bytes do not have sha256 {sha256}")

    @task(1)
    def listing(self) -> None:
        with self.client.get(
            "/files?limit=100", name="GET /files?limit=100", catch_response=True
        ) as response:
            if response.status_code != 200 or not isinstance(response.json(), list):
                response.failure(f"GET /files answered {response.status_code}: {response.text[:200]}")
