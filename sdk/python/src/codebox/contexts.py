"""Code contexts (``sbx.contexts``): long-lived interpreters whose state
persists between ``run_code`` calls. Each language has a default context
(``default-python``, ...) created on first use; create more for isolated
state. Blocking and asyncio."""

from __future__ import annotations

from typing import List, Mapping, Optional, Union

from . import _ops as ops
from ._transport import AsyncTransport, SyncTransport
from .models import Context

ContextRef = Union[str, Context]


class Contexts:
    """The code contexts of one sandbox."""

    def __init__(self, sandbox_id: str, transport: SyncTransport) -> None:
        self._sandbox_id = sandbox_id
        self._transport = transport

    def create(
        self,
        language: Optional[str] = None,
        *,
        cwd: Optional[str] = None,
        env_vars: Optional[Mapping[str, str]] = None,
    ) -> Context:
        """A new interpreter (``python``, ``javascript``, ``typescript`` or
        ``bash``; default: the sandbox runtime's language), ready when this
        returns. Pass it (or its id) to ``run_code(context=...)``."""
        return self._transport.call(ops.create_context(self._sandbox_id, language, cwd, env_vars))

    def list(self) -> List[Context]:
        """Every context, the default ones included (``is_default``)."""
        return self._transport.call(ops.list_contexts(self._sandbox_id))

    def restart(self, context: ContextRef) -> None:
        """A fresh interpreter: the context's state is gone."""
        self._transport.call(ops.restart_context(self._sandbox_id, context))

    def interrupt(self, context: ContextRef) -> None:
        """Interrupts its running execution (``KeyboardInterrupt``); state is kept."""
        self._transport.call(ops.interrupt_context(self._sandbox_id, context))

    def remove(self, context: ContextRef) -> None:
        """Kills its interpreter; running and queued executions end ``interrupted``."""
        self._transport.call(ops.delete_context(self._sandbox_id, context))


class AsyncContexts:
    """As :class:`Contexts`, with ``await``."""

    def __init__(self, sandbox_id: str, transport: AsyncTransport) -> None:
        self._sandbox_id = sandbox_id
        self._transport = transport

    async def create(
        self,
        language: Optional[str] = None,
        *,
        cwd: Optional[str] = None,
        env_vars: Optional[Mapping[str, str]] = None,
    ) -> Context:
        return await self._transport.call(
            ops.create_context(self._sandbox_id, language, cwd, env_vars)
        )

    async def list(self) -> List[Context]:
        return await self._transport.call(ops.list_contexts(self._sandbox_id))

    async def restart(self, context: ContextRef) -> None:
        await self._transport.call(ops.restart_context(self._sandbox_id, context))

    async def interrupt(self, context: ContextRef) -> None:
        await self._transport.call(ops.interrupt_context(self._sandbox_id, context))

    async def remove(self, context: ContextRef) -> None:
        await self._transport.call(ops.delete_context(self._sandbox_id, context))
