"""Starts Jupyter Kernel Gateway with TCP_NODELAY on its websockets (`--jkg-nodelay`).

Tornado leaves Nagle's algorithm on for websocket streams unless the handler
calls `set_nodelay(True)`, and the gateway's kernel handler does not, so a
client that delays its ACKs waits up to 40-200 ms for the rest of an
execution's messages. This wrapper sets the flag on every websocket stream as
it is detached from HTTP and then runs the gateway exactly as
`python -m kernel_gateway` does: a tuned gateway, to show what the gateway and
the kernel cost without that stall. Arguments are the gateway's."""

from __future__ import annotations

from typing import Any

import kernel_gateway.gatewayapp as gatewayapp  # type: ignore[import-untyped]
import tornado.websocket

_detach = tornado.websocket.WebSocketHandler._detach_stream


def _detach_with_nodelay(self: tornado.websocket.WebSocketHandler) -> Any:
    stream = _detach(self)
    stream.set_nodelay(True)
    return stream


if __name__ == "__main__":
    tornado.websocket.WebSocketHandler._detach_stream = _detach_with_nodelay  # type: ignore[method-assign]
    gatewayapp.launch_instance()
