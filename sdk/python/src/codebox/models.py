"""What the API returns, as typed, immutable values.

Parsing is strict about the fields the API documents as required (a missing
one is an :class:`~codebox.errors.UnexpectedResponseError`) and ignores fields
it does not know, so a newer server does not break an older SDK.
"""

from __future__ import annotations

import base64
import binascii
import json as _json
import os
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import (
    Any,
    Dict,
    Iterator,
    List,
    Mapping,
    Optional,
    Sequence,
    Tuple,
    Type,
    TypeVar,
    Union,
)

from .errors import UnexpectedResponseError

__all__ = [
    "Resources",
    "SandboxInfo",
    "CommandResult",
    "RuntimeInfo",
    "SandboxPage",
    "SandboxMetrics",
    "Context",
    "ExecutionError",
    "Result",
    "Logs",
    "Execution",
    "FileEntry",
    "FileListing",
    "WriteInfo",
    "FileEvent",
    "ProcessInfo",
    "ProcessEvent",
    "ProcessResult",
]

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


def _optional(data: Mapping[str, Any], key: str, kind: Type[T], what: str) -> Optional[T]:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise UnexpectedResponseError(f"{what}.{key} is not a {kind.__name__}")
    return value


def _strings(data: Mapping[str, Any], key: str, what: str) -> List[str]:
    value = data.get(key)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise UnexpectedResponseError(f"{what}.{key} is not a list of strings")
    return list(value)


@dataclass(frozen=True)
class SandboxMetrics:
    """Usage and limits from the sandbox's cgroup and workspace."""

    cpu_usage_usec: int
    cpu_limit: float
    memory_used_bytes: int
    memory_peak_bytes: int
    memory_limit_bytes: int
    disk_used_bytes: int
    disk_limit_bytes: int
    pids: int
    pids_limit: int

    @classmethod
    def from_api(cls, data: Any) -> "SandboxMetrics":
        obj = _object(data, "metrics")
        cpu_limit = obj.get("cpu_limit")
        if not isinstance(cpu_limit, (int, float)) or isinstance(cpu_limit, bool):
            raise UnexpectedResponseError("metrics.cpu_limit is missing or not a number")
        ints = {
            name: _require(obj, name, int, "metrics")
            for name in (
                "cpu_usage_usec",
                "memory_used_bytes",
                "memory_peak_bytes",
                "memory_limit_bytes",
                "disk_used_bytes",
                "disk_limit_bytes",
                "pids",
                "pids_limit",
            )
        }
        return cls(cpu_limit=float(cpu_limit), **ints)


@dataclass(frozen=True)
class Context:
    """A code context: one long-lived interpreter whose state persists between
    :meth:`~codebox.Sandbox.run_code` calls. Contexts never share state."""

    id: str
    language: str
    cwd: Optional[str]
    is_default: bool

    @classmethod
    def from_api(cls, data: Any) -> "Context":
        obj = _object(data, "context")
        return cls(
            id=_require(obj, "id", str, "context"),
            language=_require(obj, "language", str, "context"),
            cwd=_optional(obj, "cwd", str, "context"),
            is_default=_require(obj, "is_default", bool, "context"),
        )


def contexts_from_api(data: Any) -> List[Context]:
    obj = _object(data, "context list")
    items = obj.get("contexts")
    if not isinstance(items, list):
        raise UnexpectedResponseError("context list has no contexts array")
    return [Context.from_api(item) for item in items]


@dataclass(frozen=True)
class ExecutionError:
    """An error the code raised (``ZeroDivisionError``, ...; ``ExitCode`` for a
    failing bash cell, ``KeyboardInterrupt`` for a timeout). Not an exception:
    the execution itself went fine, the code did not."""

    name: str
    value: str
    traceback: str

    @classmethod
    def from_api(cls, data: Any) -> "ExecutionError":
        obj = _object(data, "execution error")
        what = "execution error"
        return cls(
            name=_require(obj, "name", str, what),
            value=_require(obj, "value", str, what),
            traceback=_require(obj, "traceback", str, what),
        )


# Keys of a result bundle that are not MIME types.
_BUNDLE_FLAGS = ("is_main_result", "truncated", "type")


class Result:
    """One rich result of an execution: a MIME bundle (``text/plain``,
    ``text/html``, ``image/png`` as base64, ``image/svg+xml``, ...).

    Jupyter renders it itself (``_repr_png_``, ``_repr_html_``, ...). Accessors
    return ``None`` when the format is absent; :meth:`save_png` writes a chart.
    """

    __slots__ = ("_data", "is_main_result", "truncated")

    def __init__(
        self, data: Mapping[str, str], *, is_main_result: bool = False, truncated: bool = False
    ) -> None:
        self._data: Dict[str, str] = dict(data)
        self.is_main_result = is_main_result
        self.truncated = truncated

    @classmethod
    def from_api(cls, data: Any) -> "Result":
        obj = _object(data, "result")
        main = obj.get("is_main_result", False)
        truncated = obj.get("truncated", False)
        if not isinstance(main, bool) or not isinstance(truncated, bool):
            raise UnexpectedResponseError("result flags are not booleans")
        bundle: Dict[str, str] = {}
        for key, value in obj.items():
            if key in _BUNDLE_FLAGS:
                continue
            if not isinstance(value, str):
                raise UnexpectedResponseError(f"result[{key!r}] is not a string")
            bundle[key] = value
        return cls(bundle, is_main_result=main, truncated=truncated)

    def __repr__(self) -> str:
        return f"Result(formats={self.formats()!r}, is_main_result={self.is_main_result!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Result):
            return NotImplemented
        return (self._data, self.is_main_result, self.truncated) == (
            other._data,
            other.is_main_result,
            other.truncated,
        )

    __hash__ = None  # type: ignore[assignment]

    def formats(self) -> List[str]:
        """The MIME types this result carries."""
        return list(self._data)

    def get(self, mime_type: str) -> Optional[str]:
        """The raw value of one MIME type (base64 for images)."""
        return self._data.get(mime_type)

    @property
    def text(self) -> Optional[str]:
        return self._data.get("text/plain")

    @property
    def html(self) -> Optional[str]:
        return self._data.get("text/html")

    @property
    def markdown(self) -> Optional[str]:
        return self._data.get("text/markdown")

    @property
    def svg(self) -> Optional[str]:
        return self._data.get("image/svg+xml")

    @property
    def latex(self) -> Optional[str]:
        return self._data.get("text/latex")

    @property
    def javascript(self) -> Optional[str]:
        return self._data.get("application/javascript")

    @property
    def png(self) -> Optional[str]:
        """The PNG image as base64 text (see :attr:`png_bytes`)."""
        return self._data.get("image/png")

    @property
    def jpeg(self) -> Optional[str]:
        """The JPEG image as base64 text (see :attr:`jpeg_bytes`)."""
        return self._data.get("image/jpeg")

    @property
    def png_bytes(self) -> Optional[bytes]:
        return _decode_base64(self.png, "image/png")

    @property
    def jpeg_bytes(self) -> Optional[bytes]:
        return _decode_base64(self.jpeg, "image/jpeg")

    @property
    def json(self) -> Any:
        """``application/json`` decoded, or ``None``."""
        raw = self._data.get("application/json")
        if raw is None:
            return None
        try:
            return _json.loads(raw)
        except ValueError as exc:
            raise UnexpectedResponseError("result application/json is not JSON") from exc

    def save_png(self, path: "Union[str, os.PathLike[str]]") -> int:
        """Writes the PNG image to ``path``; returns the bytes written. Raises
        ``ValueError`` when this result has no PNG."""
        data = self.png_bytes
        if data is None:
            raise ValueError(f"this result has no image/png (it has {self.formats()})")
        with open(path, "wb") as out:
            out.write(data)
        return len(data)

    # Jupyter's rich display protocol.
    def _repr_png_(self) -> Optional[bytes]:
        return self.png_bytes

    def _repr_jpeg_(self) -> Optional[bytes]:
        return self.jpeg_bytes

    def _repr_html_(self) -> Optional[str]:
        return self.html

    def _repr_svg_(self) -> Optional[str]:
        return self.svg

    def _repr_markdown_(self) -> Optional[str]:
        return self.markdown

    def _repr_latex_(self) -> Optional[str]:
        return self.latex

    def _repr_json_(self) -> Any:
        return self.json

    def _repr_javascript_(self) -> Optional[str]:
        return self.javascript

    def _repr_mimebundle_(
        self,
        include: Optional[Sequence[str]] = None,
        exclude: Optional[Sequence[str]] = None,
    ) -> Dict[str, Any]:
        bundle: Dict[str, Any] = {}
        for mime, value in self._data.items():
            if include is not None and mime not in include:
                continue
            if exclude is not None and mime in exclude:
                continue
            bundle[mime] = self.json if mime == "application/json" else value
        return bundle


def _decode_base64(value: Optional[str], what: str) -> Optional[bytes]:
    if value is None:
        return None
    try:
        return base64.b64decode(value, validate=False)
    except (binascii.Error, ValueError) as exc:
        raise UnexpectedResponseError(f"result {what} is not base64") from exc


@dataclass(frozen=True)
class Logs:
    """Everything the code printed, chunk by chunk as it arrived."""

    stdout: Tuple[str, ...] = ()
    stderr: Tuple[str, ...] = ()


@dataclass(frozen=True)
class Execution:
    """The outcome of :meth:`~codebox.Sandbox.run_code`.

    ``text`` is the ``text/plain`` of the main result (the value of the last
    expression). ``error`` is set when the code raised; that is not an
    exception in Python. ``outcome`` is ``ok``, ``error``, ``timeout``,
    ``interrupted`` or ``crashed``; ``restarted`` means the interpreter was
    restarted and the context's state is gone. ``reason`` is set when the
    stream ended before the code did (``server_shutdown``, ``sandbox_lost``).
    """

    results: Tuple[Result, ...]
    logs: Logs
    error: Optional[ExecutionError]
    execution_id: str
    context_id: str
    execution_count: int
    duration_ms: int
    outcome: str
    restarted: bool
    truncated: bool
    reason: Optional[str] = None

    @property
    def text(self) -> Optional[str]:
        for result in self.results:
            if result.is_main_result:
                return result.text
        return None

    @property
    def main_result(self) -> Optional[Result]:
        return next((r for r in self.results if r.is_main_result), None)

    @property
    def stdout(self) -> str:
        """All of stdout as one string."""
        return "".join(self.logs.stdout)

    @property
    def stderr(self) -> str:
        return "".join(self.logs.stderr)


@dataclass(frozen=True)
class FileEntry:
    """A file, directory, symlink or ``other`` (FIFO, socket, device) inside
    the sandbox. ``path`` is absolute and normalised."""

    name: str
    path: str
    type: str
    size: int
    mode: int
    modified_at: datetime
    symlink_target: Optional[str] = None

    @property
    def is_dir(self) -> bool:
        return self.type == "dir"

    @property
    def is_file(self) -> bool:
        return self.type == "file"

    @classmethod
    def from_api(cls, data: Any) -> "FileEntry":
        obj = _object(data, "file entry")
        what = "file entry"
        return cls(
            name=_require(obj, "name", str, what),
            path=_require(obj, "path", str, what),
            type=_require(obj, "type", str, what),
            size=_require(obj, "size", int, what),
            mode=_require(obj, "mode", int, what),
            modified_at=parse_timestamp(obj.get("modified_at"), "file entry.modified_at"),
            symlink_target=_optional(obj, "symlink_target", str, what),
        )


@dataclass(frozen=True)
class FileListing:
    """Entries of :meth:`~codebox.Files.list`; iterate it like a list.
    ``truncated``: the server stopped at 10 000 entries."""

    entries: Tuple[FileEntry, ...]
    truncated: bool

    def __iter__(self) -> Iterator[FileEntry]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int) -> FileEntry:
        return self.entries[index]

    @classmethod
    def from_api(cls, data: Any) -> "FileListing":
        obj = _object(data, "file listing")
        items = obj.get("entries")
        if not isinstance(items, list):
            raise UnexpectedResponseError("file listing has no entries array")
        return cls(
            tuple(FileEntry.from_api(item) for item in items),
            _require(obj, "truncated", bool, "file listing"),
        )


@dataclass(frozen=True)
class WriteInfo:
    """What a write stored: the absolute path and the bytes written."""

    path: str
    size: int

    @classmethod
    def from_api(cls, data: Any) -> "WriteInfo":
        obj = _object(data, "upload")
        return cls(
            path=_require(obj, "path", str, "upload"), size=_require(obj, "size", int, "upload")
        )


@dataclass(frozen=True)
class FileEvent:
    """A change seen by :meth:`~codebox.Files.watch`: ``type`` is ``create``,
    ``write``, ``remove``, ``rename``, ``chmod`` or ``overflow`` (changes were
    lost)."""

    type: str
    path: str
    is_dir: bool

    @classmethod
    def from_api(cls, data: Any) -> "FileEvent":
        obj = _object(data, "file event")
        return cls(
            type=_require(obj, "type", str, "file event"),
            path=_require(obj, "path", str, "file event"),
            is_dir=_require(obj, "is_dir", bool, "file event"),
        )


@dataclass(frozen=True)
class ProcessInfo:
    """A running background process. ``cmd`` is its argv (``["bash", "-c",
    cmd]`` for a shell command)."""

    pid: int
    cmd: Tuple[str, ...]
    tag: Optional[str]
    stdin_open: bool

    @classmethod
    def from_api(cls, data: Any) -> "ProcessInfo":
        obj = _object(data, "process")
        return cls(
            pid=_require(obj, "pid", int, "process"),
            cmd=tuple(_strings(obj, "cmd", "process")),
            tag=_optional(obj, "tag", str, "process"),
            stdin_open=_require(obj, "stdin_open", bool, "process"),
        )


def processes_from_api(data: Any) -> List[ProcessInfo]:
    obj = _object(data, "process list")
    items = obj.get("processes")
    if not isinstance(items, list):
        raise UnexpectedResponseError("process list has no processes array")
    return [ProcessInfo.from_api(item) for item in items]


@dataclass(frozen=True)
class ProcessEvent:
    """One event of a process's output: ``start`` (``pid``,
    ``dropped_bytes``), ``stdout`` / ``stderr`` (``data``), ``end``
    (``exit_code``, ``signal``, ``timed_out``)."""

    type: str
    data: str = ""
    pid: Optional[int] = None
    dropped_bytes: int = 0
    exit_code: Optional[int] = None
    signal: Optional[int] = None
    timed_out: bool = False

    @classmethod
    def from_api(cls, data: Any) -> "ProcessEvent":
        obj = _object(data, "process event")
        what = "process event"
        kind = _require(obj, "type", str, what)
        if kind in ("stdout", "stderr"):
            return cls(kind, data=_require(obj, "data", str, what))
        if kind == "start":
            return cls(
                kind,
                pid=_optional(obj, "pid", int, what),
                dropped_bytes=_optional(obj, "dropped_bytes", int, what) or 0,
            )
        if kind == "end":
            return cls(
                kind,
                exit_code=_optional(obj, "exit_code", int, what),
                signal=_optional(obj, "signal", int, what),
                timed_out=_optional(obj, "timed_out", bool, what) or False,
            )
        raise UnexpectedResponseError(f"unknown process event type {kind!r}")


@dataclass(frozen=True)
class ProcessResult:
    """How a background process ended (:meth:`~codebox.CommandHandle.wait`):
    ``exit_code``, or the ``signal`` that killed it; the output seen while
    waiting (plus up to 1 MiB buffered before; ``dropped_bytes`` were lost)."""

    pid: int
    stdout: str
    stderr: str
    exit_code: Optional[int]
    signal: Optional[int]
    timed_out: bool
    dropped_bytes: int

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out
