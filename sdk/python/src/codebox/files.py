"""Files inside a sandbox (``sbx.files``), blocking and asyncio.

Paths are resolved by the sandbox's agent as the sandbox user: relative ones
start at ``/home/user``, ``..`` stops at the sandbox's ``/``, and symlinks never
lead out. Large transfers are streamed both ways: :meth:`Files.upload` /
:meth:`Files.write` with a file object send the body in chunks, and
:meth:`Files.download` writes chunks as they arrive; neither holds a whole file
in memory.
"""

from __future__ import annotations

import os
from types import TracebackType
from typing import (
    IO,
    Any,
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Iterable,
    Iterator,
    Optional,
    Tuple,
    Type,
    Union,
)

import httpx

from . import _ops as ops
from ._transport import AsyncTransport, SyncTransport
from .errors import NotFoundError
from .models import FileEntry, FileEvent, FileListing, WriteInfo

# Bytes read from a local file per chunk of an upload.
UPLOAD_CHUNK = 1024 * 1024

PathLike = Union[str, "os.PathLike[str]"]
SyncData = Union[str, bytes, IO[bytes], Iterable[bytes]]
AsyncData = Union[str, bytes, IO[bytes], Iterable[bytes], AsyncIterable[bytes]]


def _remaining_length(stream: IO[bytes]) -> Optional[int]:
    """Bytes from the current position to the end, when the object can tell."""
    try:
        position = stream.tell()
        size = os.fstat(stream.fileno()).st_size
    except (AttributeError, OSError, ValueError):
        return None
    return max(0, size - position)


def _file_chunks(stream: IO[bytes]) -> Iterator[bytes]:
    while True:
        chunk = stream.read(UPLOAD_CHUNK)
        if not chunk:
            return
        if not isinstance(chunk, bytes):
            raise TypeError("the file object must be opened in binary mode ('rb')")
        yield chunk


async def _async_file_chunks(stream: IO[bytes]) -> AsyncIterator[bytes]:
    # Local disk reads are short; they run on the event loop's thread.
    for chunk in _file_chunks(stream):
        yield chunk


async def _async_iterable(chunks: Iterable[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


def _sync_body(data: SyncData) -> Tuple[ops.RawBody, Optional[int]]:
    if isinstance(data, str):
        raw = data.encode("utf-8")
        return raw, len(raw)
    if isinstance(data, (bytes, bytearray, memoryview)):
        raw = bytes(data)
        return raw, len(raw)
    if hasattr(data, "read"):
        stream: IO[bytes] = data  # type: ignore[assignment]
        return _file_chunks(stream), _remaining_length(stream)
    return iter(data), None


def _async_body(data: AsyncData) -> Tuple[ops.RawBody, Optional[int]]:
    if isinstance(data, (str, bytes, bytearray, memoryview)):
        return _sync_body(data)
    if hasattr(data, "read"):
        stream: IO[bytes] = data  # type: ignore[assignment]
        return _async_file_chunks(stream), _remaining_length(stream)
    if hasattr(data, "__aiter__"):
        return data, None
    return _async_iterable(data), None


def _partial(destination: PathLike) -> str:
    return os.fspath(destination) + ".part"


class FileWatch:
    """Changes under a directory, as they happen: iterate it for
    :class:`~codebox.FileEvent`. The watch is set when
    :meth:`Files.watch` returns; it ends when the directory is removed, or on
    :meth:`close` (or leaving its ``with`` block)."""

    def __init__(self, transport: SyncTransport, call: "ops.Call[Any]") -> None:
        self._context = transport.stream(call)
        response: httpx.Response = self._context.__enter__()
        self._lines = transport.lines(call, response)
        self._decoder = ops.SseDecoder()
        self._closed = False

    def __iter__(self) -> Iterator[FileEvent]:
        return self

    def __next__(self) -> FileEvent:
        if self._closed:
            raise StopIteration
        for line in self._lines:
            event = self._decoder.feed(line)
            if event is not None:
                return ops.file_event(event[1])
        self.close()
        raise StopIteration

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._context.__exit__(None, None, None)

    def __enter__(self) -> "FileWatch":
        return self

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        traceback: Optional[TracebackType],
    ) -> None:
        self.close()


class Files:
    """Files in one sandbox (``sbx.files``)."""

    def __init__(self, sandbox_id: str, transport: SyncTransport) -> None:
        self._sandbox_id = sandbox_id
        self._transport = transport

    def read(self, path: str, *, encoding: str = "utf-8") -> str:
        """The file as text."""
        return self.read_bytes(path).decode(encoding)

    def read_bytes(self, path: str) -> bytes:
        """The file's bytes (held in memory: use :meth:`download` for large files)."""
        out = bytearray()
        for chunk in self.iter_bytes(path):
            out += chunk
        return bytes(out)

    def iter_bytes(self, path: str) -> Iterator[bytes]:
        """The file in chunks as they arrive (the download starts at once)."""
        call = ops.download_file(self._sandbox_id, path, self._transport.config.request_timeout)
        context = self._transport.stream(call)
        response = context.__enter__()
        return _closing_chunks(self._transport.chunks(call, response), context)

    def download(self, path: str, destination: Union[PathLike, IO[bytes]]) -> int:
        """Streams the file to a local path or a binary file object; returns
        the bytes written. A local path is written to ``<path>.part`` and
        renamed at the end, so a failed download leaves no partial file."""
        if hasattr(destination, "write"):
            sink: IO[bytes] = destination  # type: ignore[assignment]
            return _copy(self.iter_bytes(path), sink)
        target = os.fspath(destination)
        partial = _partial(target)
        try:
            with open(partial, "wb") as out:
                written = _copy(self.iter_bytes(path), out)
            os.replace(partial, target)
        except BaseException:
            _unlink(partial)
            raise
        return written

    def write(self, path: str, data: SyncData) -> WriteInfo:
        """Writes ``data`` to ``path`` (parents created, an existing file
        replaced atomically): text (UTF-8), bytes, a binary file object (sent
        in chunks from its position) or an iterable of byte chunks."""
        content, length = _sync_body(data)
        return self._transport.call(ops.upload_file(self._sandbox_id, path, content, length))

    def upload(self, local_path: PathLike, path: str) -> WriteInfo:
        """Streams a local file to ``path`` in the sandbox."""
        with open(local_path, "rb") as stream:
            return self.write(path, stream)

    def list(self, path: Optional[str] = None, *, depth: Optional[int] = None) -> FileListing:
        """Entries under ``path`` (default ``/home/user``), ``depth`` levels
        deep (1 to 16, default 1). Symlinks are listed, never followed."""
        return self._transport.call(ops.list_files(self._sandbox_id, path, depth))

    def stat(self, path: str) -> FileEntry:
        """The entry at ``path`` (a symlink itself, not its target);
        ``NotFoundError`` if there is none."""
        return self._transport.call(ops.stat_file(self._sandbox_id, path))

    def exists(self, path: str) -> bool:
        try:
            self.stat(path)
        except NotFoundError:
            return False
        return True

    def mkdir(self, path: str, *, parents: bool = True) -> FileEntry:
        """Creates a directory (and its parents unless ``parents=False``)."""
        return self._transport.call(ops.make_directory(self._sandbox_id, path, parents))

    def move(self, source: str, destination: str, *, overwrite: bool = False) -> FileEntry:
        """Renames; an existing ``destination`` is ``ConflictError`` unless
        ``overwrite``. Returns the moved entry."""
        return self._transport.call(ops.move_path(self._sandbox_id, source, destination, overwrite))

    def remove(self, path: str, *, recursive: bool = False) -> None:
        """Deletes a file or an empty directory (any directory with
        ``recursive=True``; a non-empty one without it is ``ConflictError``)."""
        self._transport.call(ops.delete_file(self._sandbox_id, path, recursive))

    def watch(
        self,
        path: Optional[str] = None,
        *,
        recursive: bool = False,
        timeout: Optional[float] = None,
    ) -> FileWatch:
        """Watches a directory (default ``/home/user``; below it too with
        ``recursive=True``). Use it in a ``with`` block or close it.
        ``timeout``: seconds without any change before iterating raises
        ``TimeoutError`` (default: wait for ever)."""
        call = ops.watch_files(self._sandbox_id, path, recursive, timeout)
        return FileWatch(self._transport, call)


def _closing_chunks(chunks: Iterator[bytes], context: Any) -> Iterator[bytes]:
    try:
        yield from chunks
    finally:
        context.__exit__(None, None, None)


def _copy(chunks: Iterator[bytes], sink: IO[bytes]) -> int:
    written = 0
    for chunk in chunks:
        sink.write(chunk)
        written += len(chunk)
    return written


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


class AsyncFileWatch:
    """As :class:`FileWatch`: ``async with await sbx.files.watch() as changes:``."""

    def __init__(self, transport: AsyncTransport, call: "ops.Call[Any]") -> None:
        self._transport = transport
        self._call = call
        self._context = transport.stream(call)
        self._lines: Optional[AsyncGenerator[str, None]] = None
        self._decoder = ops.SseDecoder()
        self._closed = False

    async def _open(self) -> "AsyncFileWatch":
        response = await self._context.__aenter__()
        self._lines = self._transport.lines(self._call, response)
        return self

    def __aiter__(self) -> "AsyncFileWatch":
        return self

    async def __anext__(self) -> FileEvent:
        if self._closed or self._lines is None:
            raise StopAsyncIteration
        async for line in self._lines:
            event = self._decoder.feed(line)
            if event is not None:
                return ops.file_event(event[1])
        await self.close()
        raise StopAsyncIteration

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            if self._lines is not None:
                await self._lines.aclose()
        finally:
            await self._context.__aexit__(None, None, None)

    async def __aenter__(self) -> "AsyncFileWatch":
        return self

    async def __aexit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        traceback: Optional[TracebackType],
    ) -> None:
        await self.close()


class AsyncFiles:
    """As :class:`Files`, with ``await``."""

    def __init__(self, sandbox_id: str, transport: AsyncTransport) -> None:
        self._sandbox_id = sandbox_id
        self._transport = transport

    async def read(self, path: str, *, encoding: str = "utf-8") -> str:
        return (await self.read_bytes(path)).decode(encoding)

    async def read_bytes(self, path: str) -> bytes:
        out = bytearray()
        async for chunk in self.iter_bytes(path):
            out += chunk
        return bytes(out)

    async def iter_bytes(self, path: str) -> AsyncIterator[bytes]:
        """The file in chunks as they arrive: ``async for chunk in
        sbx.files.iter_bytes(path)``."""
        call = ops.download_file(self._sandbox_id, path, self._transport.config.request_timeout)
        async with self._transport.stream(call) as response:
            async for chunk in self._transport.chunks(call, response):
                yield chunk

    async def download(self, path: str, destination: Union[PathLike, IO[bytes]]) -> int:
        """See :meth:`codebox.Files.download`."""
        if hasattr(destination, "write"):
            sink: IO[bytes] = destination  # type: ignore[assignment]
            return await _acopy(self.iter_bytes(path), sink)
        target = os.fspath(destination)
        partial = _partial(target)
        try:
            with open(partial, "wb") as out:
                written = await _acopy(self.iter_bytes(path), out)
            os.replace(partial, target)
        except BaseException:
            _unlink(partial)
            raise
        return written

    async def write(self, path: str, data: AsyncData) -> WriteInfo:
        """See :meth:`codebox.Files.write`; also takes an async iterable of bytes."""
        content, length = _async_body(data)
        return await self._transport.call(ops.upload_file(self._sandbox_id, path, content, length))

    async def upload(self, local_path: PathLike, path: str) -> WriteInfo:
        with open(local_path, "rb") as stream:
            return await self.write(path, stream)

    async def list(self, path: Optional[str] = None, *, depth: Optional[int] = None) -> FileListing:
        return await self._transport.call(ops.list_files(self._sandbox_id, path, depth))

    async def stat(self, path: str) -> FileEntry:
        return await self._transport.call(ops.stat_file(self._sandbox_id, path))

    async def exists(self, path: str) -> bool:
        try:
            await self.stat(path)
        except NotFoundError:
            return False
        return True

    async def mkdir(self, path: str, *, parents: bool = True) -> FileEntry:
        return await self._transport.call(ops.make_directory(self._sandbox_id, path, parents))

    async def move(self, source: str, destination: str, *, overwrite: bool = False) -> FileEntry:
        return await self._transport.call(
            ops.move_path(self._sandbox_id, source, destination, overwrite)
        )

    async def remove(self, path: str, *, recursive: bool = False) -> None:
        await self._transport.call(ops.delete_file(self._sandbox_id, path, recursive))

    async def watch(
        self,
        path: Optional[str] = None,
        *,
        recursive: bool = False,
        timeout: Optional[float] = None,
    ) -> AsyncFileWatch:
        call = ops.watch_files(self._sandbox_id, path, recursive, timeout)
        return await AsyncFileWatch(self._transport, call)._open()


async def _acopy(chunks: AsyncIterator[bytes], sink: IO[bytes]) -> int:
    written = 0
    async for chunk in chunks:
        sink.write(chunk)
        written += len(chunk)
    return written
