/**
 * The sandbox's file system (`sbx.files`): read and write (streamed both
 * ways), list, stat, mkdir, move, remove and watch. Every path is resolved by
 * the sandbox itself, as its user: relative paths start at /home/user and
 * nothing leads out of the sandbox.
 */

import { isNode } from "./config.js";
import * as api from "./endpoints.js";
import { NotFoundError, UnexpectedResponseError } from "./errors.js";
import { parseTimestamp } from "./models.js";
import { readSse, parseObject } from "./streams.js";
import type { CallOptions, OpenedResponse, Transport } from "./transport.js";

/** What a path is; `other` is a FIFO, socket or device (listed, never opened). */
export type FileType = "file" | "dir" | "symlink" | "other" | (string & {});

/** One file system entry, as the sandbox sees it (a symlink itself, not its target). */
export interface FileEntry {
  readonly name: string;
  /** Absolute, normalised path inside the sandbox. */
  readonly path: string;
  readonly type: FileType;
  readonly size: number;
  /** Permission bits, e.g. 0o644. */
  readonly mode: number;
  readonly modifiedAt: Date;
  readonly symlinkTarget: string | null;
}

/** Entries of a listing; `truncated` when the server cut it (10 000 entries). */
export type FileList = readonly FileEntry[] & { readonly truncated: boolean };

/** What `write` stored. */
export interface WriteInfo {
  readonly path: string;
  /** Bytes written. */
  readonly size: number;
}

/** What `files.write` accepts. A string is written as UTF-8. */
export type FileData = string | Uint8Array | ArrayBuffer | Blob | ReadableStream<Uint8Array>;

/** One file of a multi-file `write`. */
export interface WriteEntry {
  /** The destination inside the sandbox. */
  readonly path: string;
  readonly data: FileData;
}

/** A change under a watched directory; `overflow` means changes were lost. */
export interface FileEvent {
  readonly type: "create" | "write" | "remove" | "rename" | "chmod" | "overflow" | (string & {});
  readonly path: string;
  readonly isDir: boolean;
}

export interface ReadOptions extends CallOptions {
  /** `text` (UTF-8, the default), `bytes`, `blob` or `stream`. */
  format?: "text" | "bytes" | "blob" | "stream" | undefined;
}

export interface WatchOptions extends CallOptions {
  /** Changes below sub-directories too (default false). */
  recursive?: boolean | undefined;
}

/**
 * A running watch: `for await (const event of watcher)`. The watch is set
 * when `files.watch` resolves; `close()` (or the signal) stops it.
 */
export interface FileWatcher extends AsyncIterable<FileEvent> {
  close(): void;
}

type Json = Record<string, unknown>;

export function parseFileEntry(data: unknown): FileEntry {
  if (typeof data !== "object" || data === null || Array.isArray(data)) {
    throw new UnexpectedResponseError("file entry is not a JSON object");
  }
  const obj = data as Json;
  const text = (key: string): string => {
    const value = obj[key];
    if (typeof value !== "string") {
      throw new UnexpectedResponseError(`file entry.${key} is missing or not a string`);
    }
    return value;
  };
  const integer = (key: string): number => {
    const value = obj[key];
    if (typeof value !== "number" || !Number.isInteger(value)) {
      throw new UnexpectedResponseError(`file entry.${key} is missing or not an integer`);
    }
    return value;
  };
  const target = obj["symlink_target"];
  if (target !== null && target !== undefined && typeof target !== "string") {
    throw new UnexpectedResponseError("file entry.symlink_target is not a string");
  }
  return Object.freeze({
    name: text("name"),
    path: text("path"),
    type: text("type"),
    size: integer("size"),
    mode: integer("mode"),
    modifiedAt: parseTimestamp(obj["modified_at"], "file entry.modified_at"),
    symlinkTarget: typeof target === "string" ? target : null,
  });
}

export function parseFileList(data: unknown): FileList {
  const obj = (typeof data === "object" && data !== null ? data : {}) as Json;
  const entries = obj["entries"];
  const truncated = obj["truncated"];
  if (!Array.isArray(entries) || typeof truncated !== "boolean") {
    throw new UnexpectedResponseError("file listing has no entries or truncated");
  }
  const list = entries.map(parseFileEntry) as FileEntry[] & { truncated: boolean };
  list.truncated = truncated;
  return Object.freeze(list);
}

export function parseWriteInfo(data: unknown): WriteInfo {
  const obj = (typeof data === "object" && data !== null ? data : {}) as Json;
  const path = obj["path"];
  const size = obj["size"];
  if (typeof path !== "string" || typeof size !== "number" || !Number.isInteger(size)) {
    throw new UnexpectedResponseError("upload answer has no path or size");
  }
  return Object.freeze({ path, size });
}

export function parseFileEvent(data: string): FileEvent {
  const obj = parseObject(data);
  const type = obj["type"];
  const path = obj["path"];
  const isDir = obj["is_dir"];
  if (typeof type !== "string" || typeof path !== "string" || typeof isDir !== "boolean") {
    throw new UnexpectedResponseError("a file event has no type, path or is_dir");
  }
  return Object.freeze({ type, path, isDir });
}

/** The file system of one sandbox (`sbx.files`). */
export class Files {
  readonly #sandboxId: string;
  readonly #transport: Transport;

  constructor(sandboxId: string, transport: Transport) {
    this.#sandboxId = sandboxId;
    this.#transport = transport;
  }

  /**
   * A file's content: text (UTF-8, default), `bytes`, a `blob`, or a `stream`
   * (read it to its end or cancel it). Streamed from the sandbox, never
   * buffered by the server. A missing file is a `NotFoundError`.
   */
  read(path: string, options?: ReadOptions & { format?: "text" | undefined }): Promise<string>;
  read(path: string, options: ReadOptions & { format: "bytes" }): Promise<Uint8Array>;
  read(path: string, options: ReadOptions & { format: "blob" }): Promise<Blob>;
  read(
    path: string,
    options: ReadOptions & { format: "stream" },
  ): Promise<ReadableStream<Uint8Array>>;
  async read(
    path: string,
    options: ReadOptions = {},
  ): Promise<string | Uint8Array | Blob | ReadableStream<Uint8Array>> {
    const opened = await this.#transport.open(api.READ_FILE, {
      pathParams: { id: this.#sandboxId },
      query: new URLSearchParams({ path }),
      headers: { Accept: "application/octet-stream" },
      signal: options.signal,
      requestTimeoutMs: options.requestTimeoutMs,
    });
    const format = options.format ?? "text";
    if (format === "stream") return this.#releasing(opened, options.signal);
    try {
      const response = new Response(opened.body);
      if (format === "bytes") return new Uint8Array(await response.arrayBuffer());
      if (format === "blob") return await response.blob();
      return await response.text();
    } catch (error) {
      throw this.#transport.streamFailure(error, api.READ_FILE, options.signal);
    } finally {
      opened.release();
    }
  }

  /**
   * Writes `data` to `path` (parents created, an existing file replaced
   * atomically). Bytes, Blobs and streams are streamed to the sandbox: a
   * large file is never held whole by the server (nor by this client, for a
   * Blob or a stream on Node; a browser collects a stream into a Blob first,
   * as fetch cannot stream a request body over HTTP/1.1 there). A failed
   * upload leaves no partial file.
   *
   * Given a list of `{path, data}`, writes them all in one multipart request
   * (`POST .../files`) and resolves to what each became; a stream in the list
   * is collected into a Blob first. The first failing file ends the request:
   * the files before it stay written.
   */
  write(path: string, data: FileData, options?: CallOptions): Promise<WriteInfo>;
  write(files: readonly WriteEntry[], options?: CallOptions): Promise<WriteInfo[]>;
  async write(
    target: string | readonly WriteEntry[],
    dataOrOptions?: FileData | CallOptions,
    maybeOptions: CallOptions = {},
  ): Promise<WriteInfo | WriteInfo[]> {
    if (typeof target !== "string") {
      return this.#writeMany(target, (dataOrOptions as CallOptions | undefined) ?? {});
    }
    if (dataOrOptions === undefined) throw new TypeError("files.write needs the data to write");
    const body = await uploadBody(dataOrOptions as FileData);
    const answer = await this.#transport.request(api.WRITE_FILE, {
      pathParams: { id: this.#sandboxId },
      query: new URLSearchParams({ path: target }),
      rawBody: body,
      signal: maybeOptions.signal,
      requestTimeoutMs: maybeOptions.requestTimeoutMs,
    });
    return parseWriteInfo(answer);
  }

  async #writeMany(files: readonly WriteEntry[], options: CallOptions): Promise<WriteInfo[]> {
    if (files.length === 0) return [];
    const form = new FormData();
    for (const file of files) {
      if (typeof file.path !== "string" || file.path === "") {
        throw new TypeError("every file to write needs a path");
      }
      // The part's filename is its destination path.
      form.append("file", await asBlob(file.data), file.path);
    }
    const answer = await this.#transport.request(api.WRITE_FILES, {
      pathParams: { id: this.#sandboxId },
      rawBody: form,
      signal: options.signal,
      requestTimeoutMs: options.requestTimeoutMs,
    });
    const written = (answer as Json | null)?.["files"];
    if (!Array.isArray(written)) {
      throw new UnexpectedResponseError("the multipart upload answer has no files");
    }
    return written.map(parseWriteInfo);
  }

  /** The entries under a directory (default /home/user), `depth` levels deep (1 to 16). */
  async list(path?: string, options: CallOptions & { depth?: number } = {}): Promise<FileList> {
    const query = new URLSearchParams();
    if (path !== undefined) query.set("path", path);
    if (options.depth !== undefined) query.set("depth", String(options.depth));
    const data = await this.#transport.request(api.LIST_FILES, {
      pathParams: { id: this.#sandboxId },
      query,
      signal: options.signal,
      requestTimeoutMs: options.requestTimeoutMs,
    });
    return parseFileList(data);
  }

  /** The entry of `path` (a symlink itself, not its target). A missing path is a `NotFoundError`. */
  async getInfo(path: string, options: CallOptions = {}): Promise<FileEntry> {
    const data = await this.#transport.request(api.STAT_FILE, {
      pathParams: { id: this.#sandboxId },
      query: new URLSearchParams({ path }),
      signal: options.signal,
      requestTimeoutMs: options.requestTimeoutMs,
    });
    return parseFileEntry(data);
  }

  /** Alias of {@link getInfo}. */
  stat(path: string, options: CallOptions = {}): Promise<FileEntry> {
    return this.getInfo(path, options);
  }

  /** Whether `path` exists (a dangling symlink exists). */
  async exists(path: string, options: CallOptions = {}): Promise<boolean> {
    try {
      await this.getInfo(path, options);
      return true;
    } catch (error) {
      if (error instanceof NotFoundError) return false;
      throw error;
    }
  }

  /** Creates a directory (with its parents unless `parents: false`); returns its entry. */
  async makeDir(
    path: string,
    options: CallOptions & { parents?: boolean } = {},
  ): Promise<FileEntry> {
    const body: Json = { path };
    if (options.parents !== undefined) body["parents"] = options.parents;
    const data = await this.#transport.request(api.MAKE_DIR, {
      pathParams: { id: this.#sandboxId },
      body,
      signal: options.signal,
      requestTimeoutMs: options.requestTimeoutMs,
    });
    return parseFileEntry(data);
  }

  /**
   * Moves (renames) `from` to `to`; an existing `to` is a `ConflictError`
   * unless `overwrite`. Returns the moved entry.
   */
  async rename(
    from: string,
    to: string,
    options: CallOptions & { overwrite?: boolean } = {},
  ): Promise<FileEntry> {
    const body: Json = { from, to };
    if (options.overwrite !== undefined) body["overwrite"] = options.overwrite;
    const data = await this.#transport.request(api.MOVE_FILE, {
      pathParams: { id: this.#sandboxId },
      body,
      signal: options.signal,
      requestTimeoutMs: options.requestTimeoutMs,
    });
    return parseFileEntry(data);
  }

  /** Alias of {@link rename}. */
  move(
    from: string,
    to: string,
    options: CallOptions & { overwrite?: boolean } = {},
  ): Promise<FileEntry> {
    return this.rename(from, to, options);
  }

  /** Removes a file, a symlink or an empty directory (a non-empty one with `recursive`). */
  async remove(path: string, options: CallOptions & { recursive?: boolean } = {}): Promise<void> {
    const query = new URLSearchParams({ path });
    if (options.recursive !== undefined) query.set("recursive", String(options.recursive));
    await this.#transport.request(api.DELETE_FILE, {
      pathParams: { id: this.#sandboxId },
      query,
      signal: options.signal,
      requestTimeoutMs: options.requestTimeoutMs,
    });
  }

  /**
   * Watches a directory (default /home/user): resolves once the watch is set,
   * to an async iterable of changes. The iteration ends when the directory is
   * gone or on `close()`; aborting `signal` ends it with the signal's reason.
   */
  async watch(path?: string, options: WatchOptions = {}): Promise<FileWatcher> {
    const query = new URLSearchParams();
    if (path !== undefined) query.set("path", path);
    if (options.recursive !== undefined) query.set("recursive", String(options.recursive));
    const stop = new AbortController();
    const caller = options.signal;
    caller?.throwIfAborted();
    const onAbort = (): void => stop.abort(caller?.reason);
    caller?.addEventListener("abort", onAbort, { once: true });
    let opened: OpenedResponse;
    try {
      opened = await this.#transport.open(api.WATCH_FILES, {
        pathParams: { id: this.#sandboxId },
        query,
        headers: { Accept: "text/event-stream" },
        signal: stop.signal,
        requestTimeoutMs: options.requestTimeoutMs,
      });
    } catch (error) {
      caller?.removeEventListener("abort", onAbort);
      throw error;
    }
    let closed = false;
    const transport = this.#transport;
    const finish = (): void => {
      caller?.removeEventListener("abort", onAbort);
      opened.release();
    };
    async function* events(): AsyncGenerator<FileEvent, void, undefined> {
      try {
        for await (const event of readSse(opened.body, stop.signal)) {
          yield parseFileEvent(event.data);
        }
      } catch (error) {
        if (closed && !caller?.aborted) return;
        throw transport.streamFailure(error, api.WATCH_FILES, caller ?? stop.signal);
      } finally {
        finish();
      }
    }
    const iterator = events();
    return {
      [Symbol.asyncIterator]: () => iterator,
      close: () => {
        if (closed) return;
        closed = true;
        stop.abort(new Error("the watch was closed"));
        finish();
      },
    };
  }

  /** A download stream that releases its request when read to the end or cancelled. */
  #releasing(opened: OpenedResponse, signal?: AbortSignal): ReadableStream<Uint8Array> {
    const reader = opened.body.getReader();
    const transport = this.#transport;
    signal?.addEventListener("abort", () => reader.cancel(signal.reason).catch(() => undefined), {
      once: true,
    });
    return new ReadableStream<Uint8Array>({
      async pull(controller) {
        try {
          const { done, value } = await reader.read();
          signal?.throwIfAborted();
          if (done) {
            controller.close();
            opened.release();
          } else {
            controller.enqueue(value);
          }
        } catch (error) {
          opened.release();
          controller.error(transport.streamFailure(error, api.READ_FILE, signal));
        }
      },
      async cancel(reason) {
        await reader.cancel(reason).catch(() => undefined);
        opened.release();
      },
    });
  }
}

async function asBlob(data: FileData): Promise<Blob> {
  if (data instanceof Blob) return data;
  if (typeof ReadableStream !== "undefined" && data instanceof ReadableStream) {
    return new Response(data).blob();
  }
  const body = await uploadBody(data);
  return new Blob([body as BlobPart]);
}

/** A body fetch can send: streams stay streams on Node, and become a Blob in a browser. */
async function uploadBody(data: FileData): Promise<BodyInit> {
  if (typeof data === "string") return new TextEncoder().encode(data);
  if (typeof ReadableStream !== "undefined" && data instanceof ReadableStream) {
    return isNode() ? data : await new Response(data).blob();
  }
  if (data instanceof Uint8Array || data instanceof ArrayBuffer || data instanceof Blob) {
    // fetch sends any Uint8Array; the DOM types only name ArrayBuffer-backed ones.
    return data as BodyInit;
  }
  throw new TypeError(
    "files.write takes a string, a Uint8Array, an ArrayBuffer, a Blob or a ReadableStream",
  );
}
