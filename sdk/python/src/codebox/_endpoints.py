"""Every API operation this SDK calls, as (method, OpenAPI path template).

The transports only accept an :class:`Endpoint`, so this table is the complete
list of what the SDK can call; a test checks each entry against
``openapi/openapi.json`` so the SDK and the server cannot drift apart.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Tuple
from urllib.parse import quote

_PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")


@dataclass(frozen=True)
class Endpoint:
    method: str
    template: str

    def path(self, **params: str) -> str:
        """The template with each ``{name}`` replaced by its percent-encoded value.

        A value stays exactly one path segment, whatever it holds: ``/`` is
        encoded, and so are dots, because URL normalisation would otherwise
        turn an id of ``..`` or ``.`` into a different route.
        """

        def substitute(match: "re.Match[str]") -> str:
            name = match.group(1)
            if name not in params:
                raise KeyError(f"{self.template} needs the path parameter {name!r}")
            return quote(str(params[name]), safe="").replace(".", "%2E")

        return _PLACEHOLDER.sub(substitute, self.template)


CREATE_SANDBOX = Endpoint("POST", "/api/v1/sandboxes")
LIST_SANDBOXES = Endpoint("GET", "/api/v1/sandboxes")
GET_SANDBOX = Endpoint("GET", "/api/v1/sandboxes/{id}")
DELETE_SANDBOX = Endpoint("DELETE", "/api/v1/sandboxes/{id}")
SET_SANDBOX_TIMEOUT = Endpoint("POST", "/api/v1/sandboxes/{id}/timeout")
GET_SANDBOX_METRICS = Endpoint("GET", "/api/v1/sandboxes/{id}/metrics")
RUN_COMMAND = Endpoint("POST", "/api/v1/sandboxes/{id}/commands")
LIST_RUNTIMES = Endpoint("GET", "/api/v1/runtimes")

EXECUTE_CODE = Endpoint("POST", "/api/v1/sandboxes/{id}/execute")
CREATE_CONTEXT = Endpoint("POST", "/api/v1/sandboxes/{id}/contexts")
LIST_CONTEXTS = Endpoint("GET", "/api/v1/sandboxes/{id}/contexts")
DELETE_CONTEXT = Endpoint("DELETE", "/api/v1/sandboxes/{id}/contexts/{cid}")
RESTART_CONTEXT = Endpoint("POST", "/api/v1/sandboxes/{id}/contexts/{cid}/restart")
INTERRUPT_CONTEXT = Endpoint("POST", "/api/v1/sandboxes/{id}/contexts/{cid}/interrupt")

DOWNLOAD_FILE = Endpoint("GET", "/api/v1/sandboxes/{id}/files")
UPLOAD_FILE = Endpoint("PUT", "/api/v1/sandboxes/{id}/files")
DELETE_FILE = Endpoint("DELETE", "/api/v1/sandboxes/{id}/files")
LIST_FILES = Endpoint("GET", "/api/v1/sandboxes/{id}/files/list")
STAT_FILE = Endpoint("GET", "/api/v1/sandboxes/{id}/files/stat")
MAKE_DIRECTORY = Endpoint("POST", "/api/v1/sandboxes/{id}/files/mkdir")
MOVE_PATH = Endpoint("POST", "/api/v1/sandboxes/{id}/files/move")
WATCH_FILES = Endpoint("GET", "/api/v1/sandboxes/{id}/files/watch")

START_PROCESS = Endpoint("POST", "/api/v1/sandboxes/{id}/processes")
LIST_PROCESSES = Endpoint("GET", "/api/v1/sandboxes/{id}/processes")
STREAM_PROCESS = Endpoint("GET", "/api/v1/sandboxes/{id}/processes/{pid}/stream")
WRITE_PROCESS_STDIN = Endpoint("POST", "/api/v1/sandboxes/{id}/processes/{pid}/stdin")
CLOSE_PROCESS_STDIN = Endpoint("POST", "/api/v1/sandboxes/{id}/processes/{pid}/close-stdin")
SIGNAL_PROCESS = Endpoint("POST", "/api/v1/sandboxes/{id}/processes/{pid}/signal")

# A WebSocket (GET with an upgrade): not an HTTP operation of the transports.
OPEN_PTY = Endpoint("GET", "/api/v1/sandboxes/{id}/pty")

ALL: Tuple[Endpoint, ...] = (
    CREATE_SANDBOX,
    LIST_SANDBOXES,
    GET_SANDBOX,
    DELETE_SANDBOX,
    SET_SANDBOX_TIMEOUT,
    GET_SANDBOX_METRICS,
    RUN_COMMAND,
    LIST_RUNTIMES,
    EXECUTE_CODE,
    CREATE_CONTEXT,
    LIST_CONTEXTS,
    DELETE_CONTEXT,
    RESTART_CONTEXT,
    INTERRUPT_CONTEXT,
    DOWNLOAD_FILE,
    UPLOAD_FILE,
    DELETE_FILE,
    LIST_FILES,
    STAT_FILE,
    MAKE_DIRECTORY,
    MOVE_PATH,
    WATCH_FILES,
    START_PROCESS,
    LIST_PROCESSES,
    STREAM_PROCESS,
    WRITE_PROCESS_STDIN,
    CLOSE_PROCESS_STDIN,
    SIGNAL_PROCESS,
    OPEN_PTY,
)
