"""
The boxsync wire protocol: everything the server and the client must agree
on, one module per concept, imported by both sides.

  - L{headers}: media types, header names, the checks of header values;
  - L{values}: the checks of paths, counts and digests, L{ProtocolError};
  - L{manifest}: what a client sends to C{POST /sync};
  - L{events}: what the server sends back on the event stream;
  - L{sse}: the Server-Sent Events encoder and incremental parser;
  - L{batch}: the bodies of batch uploads and downloads;
  - L{answers}: the JSON answers to commits, listings, batches, the probe;
  - L{errors}: the statuses of refusals and the body that says why;
  - L{blocks}: recipes, the commit by recipe, the missing blocks;
  - L{legacy}: the format of the clients boxsync replaces.

``docs/protocol.md`` describes the same things for people writing other
clients.
"""

from . import answers, batch, blocks, errors, events, headers, legacy, manifest, sse, values
from .answers import *  # noqa: F403
from .batch import *  # noqa: F403
from .errors import *  # noqa: F403
from .events import *  # noqa: F403
from .headers import *  # noqa: F403
from .manifest import *  # noqa: F403
from .sse import *  # noqa: F403
from .values import *  # noqa: F403

__all__ = (
    headers.__all__
    + values.__all__
    + manifest.__all__
    + events.__all__
    + sse.__all__
    + batch.__all__
    + answers.__all__
    + errors.__all__
)
