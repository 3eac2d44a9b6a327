"""What the API returns, as typed, immutable values.

Parsing is strict about the fields the API documents as required (a missing
one is an :class:`~codebox.errors.UnexpectedResponseError`) and ignores fields
it does not know, so a newer server does not break an older SDK.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Dict, List, Mapping, Optional, Tuple, Type, TypeVar

from .errors import UnexpectedResponseError

__all__ = ["Resources", "SandboxInfo", "CommandResult", "RuntimeInfo", "SandboxPage"]

T = TypeVar("T")

# RFC 3339 with any number of fractional digits; Python 3.9's fromisoformat
# takes neither "Z" nor more than 6 digits.
_RFC3339 = re.compile(
    r"^(\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2})(?:\.(\d+))?([Zz]|[+-]\d{2}:\d{2})$"
)


def parse_timestamp(value: Any, what: str) -> datetime:
    """An RFC 3339 timestamp as an aware :class:`datetime`."""
    match = _RFC3339.match(value) if isinstance(value, str) else None
    if match is None:
        raise UnexpectedResponseError(f"{what} is not an RFC 3339 timestamp: {value!r}")
    base, fraction, offset = match.groups()
    micros = (fraction or "0")[:6].ljust(6, "0")
    zone = "+00:00" if offset in ("Z", "z") else offset
    parsed = datetime.fromisoformat(f"{base.replace('t', 'T').replace(' ', 'T')}.{micros}{zone}")
    return parsed.astimezone(timezone.utc)


def _require(data: Mapping[str, Any], key: str, kind: Type[T], what: str) -> T:
    value = data.get(key)
    # bool is an int in Python: never accept it where a number is expected.
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise UnexpectedResponseError(f"{what}.{key} is missing or not a {kind.__name__}")
    return value


def _object(data: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(data, dict):
        raise UnexpectedResponseError(f"{what} is not a JSON object")
    return data


def _string_map(data: Mapping[str, Any], key: str, what: str) -> Dict[str, str]:
    value = data.get(key, {})
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise UnexpectedResponseError(f"{what}.{key} is not a map of strings")
    return dict(value)


@dataclass(frozen=True)
class Resources:
    """CPU in cores and memory in MiB (there is no swap)."""

    cpu: float
    memory: int

    @classmethod
    def from_api(cls, data: Any) -> "Resources":
        obj = _object(data, "resources")
        cpu = obj.get("cpu")
        if not isinstance(cpu, (int, float)) or isinstance(cpu, bool):
            raise UnexpectedResponseError("resources.cpu is missing or not a number")
        return cls(cpu=float(cpu), memory=_require(obj, "memory", int, "resources"))


@dataclass(frozen=True)
class SandboxInfo:
    """A sandbox as the server reports it."""

    id: str
    status: str
    runtime: str
    resources: Resources
    isolation: str
    metadata: Dict[str, str]
    created_at: datetime
    expires_at: datetime
    ended_at: Optional[datetime] = None
    termination_reason: Optional[str] = None

    @property
    def is_live(self) -> bool:
        """``creating`` or ``running``: counted against the quota."""
        return self.status in ("creating", "running")

    @classmethod
    def from_api(cls, data: Any) -> "SandboxInfo":
        obj = _object(data, "sandbox")
        ended_at = obj.get("ended_at")
        reason = obj.get("termination_reason")
        return cls(
            id=_require(obj, "id", str, "sandbox"),
            status=_require(obj, "status", str, "sandbox"),
            runtime=_require(obj, "runtime", str, "sandbox"),
            resources=Resources.from_api(obj.get("resources")),
            isolation=_require(obj, "isolation", str, "sandbox"),
            metadata=_string_map(obj, "metadata", "sandbox"),
            created_at=parse_timestamp(obj.get("created_at"), "sandbox.created_at"),
            expires_at=parse_timestamp(obj.get("expires_at"), "sandbox.expires_at"),
            ended_at=None if ended_at is None else parse_timestamp(ended_at, "sandbox.ended_at"),
            termination_reason=reason if isinstance(reason, str) else None,
        )


@dataclass(frozen=True)
class SandboxPage:
    """One page of a listing; ``next_cursor`` is ``None`` on the last."""

    sandboxes: Tuple[SandboxInfo, ...]
    next_cursor: Optional[str]

    @classmethod
    def from_api(cls, data: Any) -> "SandboxPage":
        obj = _object(data, "sandbox list")
        items = obj.get("sandboxes")
        if not isinstance(items, list):
            raise UnexpectedResponseError("sandbox list has no sandboxes array")
        cursor = obj.get("next_cursor")
        if cursor is not None and not isinstance(cursor, str):
            raise UnexpectedResponseError("sandbox list next_cursor is not a string")
        return cls(tuple(SandboxInfo.from_api(item) for item in items), cursor)


@dataclass(frozen=True)
class CommandResult:
    """The outcome of :meth:`Commands.run`.

    A command that outlived its timeout was killed with its whole process tree:
    ``timed_out`` is set and ``exit_code`` is what the kill left (128 + signal).
    ``truncated`` means output beyond the server's per-stream cap was dropped.
    """

    stdout: str
    stderr: str
    exit_code: int
    timed_out: bool
    truncated: bool
    duration_ms: int

    @property
    def ok(self) -> bool:
        """Exited 0 in time."""
        return self.exit_code == 0 and not self.timed_out

    @classmethod
    def from_api(cls, data: Any) -> "CommandResult":
        obj = _object(data, "command result")
        what = "command result"
        return cls(
            stdout=_require(obj, "stdout", str, what),
            stderr=_require(obj, "stderr", str, what),
            exit_code=_require(obj, "exit_code", int, what),
            timed_out=_require(obj, "timed_out", bool, what),
            truncated=_require(obj, "truncated", bool, what),
            duration_ms=_require(obj, "duration_ms", int, what),
        )


@dataclass(frozen=True)
class RuntimeInfo:
    """A runtime the server offers: pass ``name`` or an alias to ``create``."""

    name: str
    language: str
    version: str
    aliases: Tuple[str, ...] = field(default_factory=tuple)

    @classmethod
    def from_api(cls, data: Any) -> "RuntimeInfo":
        obj = _object(data, "runtime")
        aliases = obj.get("aliases", [])
        if not isinstance(aliases, list) or not all(isinstance(a, str) for a in aliases):
            raise UnexpectedResponseError("runtime.aliases is not a list of strings")
        return cls(
            name=_require(obj, "name", str, "runtime"),
            language=_require(obj, "language", str, "runtime"),
            version=_require(obj, "version", str, "runtime"),
            aliases=tuple(aliases),
        )


def runtimes_from_api(data: Any) -> List[RuntimeInfo]:
    obj = _object(data, "runtime list")
    items = obj.get("runtimes")
    if not isinstance(items, list):
        raise UnexpectedResponseError("runtime list has no runtimes array")
    return [RuntimeInfo.from_api(item) for item in items]
