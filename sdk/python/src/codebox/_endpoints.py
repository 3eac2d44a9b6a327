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
RUN_COMMAND = Endpoint("POST", "/api/v1/sandboxes/{id}/commands")
LIST_RUNTIMES = Endpoint("GET", "/api/v1/runtimes")

ALL: Tuple[Endpoint, ...] = (
    CREATE_SANDBOX,
    LIST_SANDBOXES,
    GET_SANDBOX,
    DELETE_SANDBOX,
    SET_SANDBOX_TIMEOUT,
    RUN_COMMAND,
    LIST_RUNTIMES,
)
