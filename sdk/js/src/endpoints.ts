/**
 * Every API operation this SDK calls, as (method, OpenAPI path template).
 *
 * The transport only accepts an {@link Endpoint}, so this table is the
 * complete list of what the SDK can call; a test checks each entry against
 * openapi/openapi.json so the SDK and the server cannot drift apart.
 */

import { NotFoundError } from "./errors.js";

export type HttpMethod = "GET" | "POST" | "PUT" | "DELETE";

const PLACEHOLDER = /\{([a-z_]+)\}/g;
// Values whose segment the WHATWG URL parser (and so fetch) would remove as
// "." or "..": it does so for "%2E" and "%2E%2E" too, the encoded forms.
const DOT_SEGMENT = /^\.{1,2}$/;

export class Endpoint {
  constructor(
    readonly method: HttpMethod,
    readonly template: string,
  ) {}

  /**
   * The template with each `{name}` replaced by its percent-encoded value.
   *
   * A value stays exactly one path segment, whatever it holds: `/` is encoded,
   * and so are dots. A value that is only dots ("." or "..") cannot be sent at
   * all, since URL parsing removes such a segment whatever its encoding and
   * the request would reach another route; no sandbox has such an id, so it
   * is a NotFoundError without a request.
   */
  path(params: Readonly<Record<string, string>> = {}): string {
    return this.template.replace(PLACEHOLDER, (_match, name: string) => {
      const value = params[name];
      if (value === undefined) {
        throw new TypeError(`${this.template} needs the path parameter ${name}`);
      }
      if (value === "" || DOT_SEGMENT.test(value)) {
        throw new NotFoundError(`no resource can have the ${name} ${JSON.stringify(value)}`);
      }
      return encodeSegment(value);
    });
  }
}

function encodeSegment(value: string): string {
  // encodeURIComponent leaves !'()* and . as they are: encode them too, as
  // the other SDKs do, so every client sends the same bytes.
  return encodeURIComponent(value).replace(
    /[!'()*.]/g,
    (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`,
  );
}

export const CREATE_SANDBOX = new Endpoint("POST", "/api/v1/sandboxes");
export const LIST_SANDBOXES = new Endpoint("GET", "/api/v1/sandboxes");
export const GET_SANDBOX = new Endpoint("GET", "/api/v1/sandboxes/{id}");
export const DELETE_SANDBOX = new Endpoint("DELETE", "/api/v1/sandboxes/{id}");
export const SET_SANDBOX_TIMEOUT = new Endpoint("POST", "/api/v1/sandboxes/{id}/timeout");
export const RUN_COMMAND = new Endpoint("POST", "/api/v1/sandboxes/{id}/commands");
export const LIST_RUNTIMES = new Endpoint("GET", "/api/v1/runtimes");
export const SANDBOX_METRICS = new Endpoint("GET", "/api/v1/sandboxes/{id}/metrics");

export const EXECUTE = new Endpoint("POST", "/api/v1/sandboxes/{id}/execute");
export const CREATE_CONTEXT = new Endpoint("POST", "/api/v1/sandboxes/{id}/contexts");
export const LIST_CONTEXTS = new Endpoint("GET", "/api/v1/sandboxes/{id}/contexts");
export const DELETE_CONTEXT = new Endpoint("DELETE", "/api/v1/sandboxes/{id}/contexts/{cid}");
export const RESTART_CONTEXT = new Endpoint(
  "POST",
  "/api/v1/sandboxes/{id}/contexts/{cid}/restart",
);
export const INTERRUPT_CONTEXT = new Endpoint(
  "POST",
  "/api/v1/sandboxes/{id}/contexts/{cid}/interrupt",
);

export const READ_FILE = new Endpoint("GET", "/api/v1/sandboxes/{id}/files");
export const WRITE_FILE = new Endpoint("PUT", "/api/v1/sandboxes/{id}/files");
export const WRITE_FILES = new Endpoint("POST", "/api/v1/sandboxes/{id}/files");
export const DELETE_FILE = new Endpoint("DELETE", "/api/v1/sandboxes/{id}/files");
export const LIST_FILES = new Endpoint("GET", "/api/v1/sandboxes/{id}/files/list");
export const STAT_FILE = new Endpoint("GET", "/api/v1/sandboxes/{id}/files/stat");
export const MAKE_DIR = new Endpoint("POST", "/api/v1/sandboxes/{id}/files/mkdir");
export const MOVE_FILE = new Endpoint("POST", "/api/v1/sandboxes/{id}/files/move");
export const WATCH_FILES = new Endpoint("GET", "/api/v1/sandboxes/{id}/files/watch");

export const START_PROCESS = new Endpoint("POST", "/api/v1/sandboxes/{id}/processes");
export const LIST_PROCESSES = new Endpoint("GET", "/api/v1/sandboxes/{id}/processes");
export const PROCESS_STREAM = new Endpoint("GET", "/api/v1/sandboxes/{id}/processes/{pid}/stream");
export const PROCESS_STDIN = new Endpoint("POST", "/api/v1/sandboxes/{id}/processes/{pid}/stdin");
export const PROCESS_CLOSE_STDIN = new Endpoint(
  "POST",
  "/api/v1/sandboxes/{id}/processes/{pid}/close-stdin",
);
export const PROCESS_SIGNAL = new Endpoint("POST", "/api/v1/sandboxes/{id}/processes/{pid}/signal");
export const PTY = new Endpoint("GET", "/api/v1/sandboxes/{id}/pty");

export const ALL: readonly Endpoint[] = Object.freeze([
  CREATE_SANDBOX,
  LIST_SANDBOXES,
  GET_SANDBOX,
  DELETE_SANDBOX,
  SET_SANDBOX_TIMEOUT,
  RUN_COMMAND,
  LIST_RUNTIMES,
  SANDBOX_METRICS,
  EXECUTE,
  CREATE_CONTEXT,
  LIST_CONTEXTS,
  DELETE_CONTEXT,
  RESTART_CONTEXT,
  INTERRUPT_CONTEXT,
  READ_FILE,
  WRITE_FILE,
  WRITE_FILES,
  DELETE_FILE,
  LIST_FILES,
  STAT_FILE,
  MAKE_DIR,
  MOVE_FILE,
  WATCH_FILES,
  START_PROCESS,
  LIST_PROCESSES,
  PROCESS_STREAM,
  PROCESS_STDIN,
  PROCESS_CLOSE_STDIN,
  PROCESS_SIGNAL,
  PTY,
]);
